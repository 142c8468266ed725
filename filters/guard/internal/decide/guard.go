// Package decide is the guard filter's decision core, free of the
// Proxy-Wasm SDK: it refuses (400) or normalises a non-canonical path,
// refuses (401) credentials that could be read two ways, resolves who is
// calling (mTLS peer SPIFFE ID, JWT-SVID, device token, Istio peer
// version; one caller per request unless the peer is a trusted
// forwarder), removes the verified credentials, decides with the installed
// policy bundle, enforces the outcome (allow, deny, dry-run, rules' caller
// rate limits, per-device write rate limits, fail closed) and writes the
// audit record. It reaches the host only through small ports: the Request (headers and
// properties), shared data, telemetry, the log, the audit recorder and the
// clock. The filter's adapter implements them over the SDK; tests
// implement them natively.
//
// A decision allocates nothing unless it is recorded, refused or charged
// to a rate limit (the bucket's shared-data key and value): the
// per-request state lives in an Exchange the adapter reuses.
package decide

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/distribution"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/filters/guard/internal/ratelimit"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// Shared-data key prefixes of the core (+ device key, + slot).
const (
	keyRate  = "meshguard/ratelimit/"
	keyCall  = "meshguard/callerlimit/"
	keyToken = "meshguard/token/"
)

// Options identify the worker VM.
type Options struct {
	// Proxy names the proxy in audit records (xds.node.id).
	Proxy string
	// Seed is random and unique per VM: it prefixes decision ids and
	// owns the poll lease.
	Seed uint64
}

// Guard is one worker VM's decision core. Not for concurrent use (a VM is
// single-threaded).
type Guard struct {
	ports Ports
	cfg   *config.Config
	err   error // the configuration is unusable: every request gets 503

	keys    *verify.KeySet
	keeper  *verify.Keeper
	pol     *verify.Policy // nil: no policy, polErr says why
	polErr  error
	channel *distribution.Channel
	// reg is the registry-derived bundle (nil without policy.registryKeys).
	reg *registryPart
	// peerVersion: some version rule reads the Istio peer version label.
	peerVersion bool
	// sunset is the nearest version sunset ahead (Unix ns; 0: none), as
	// last reported.
	sunset int64

	// pathOpts say what a non-canonical path gets (config paths).
	pathOpts policies.PathOptions

	// users verifies end-user tokens (nil unless identity.endUser); set
	// up for each enforced policy, whose Issuers it holds.
	users  *endUser
	svid   *identity.SVIDVerifier
	device *identity.DeviceVerifier
	limit  *ratelimit.Limiter
	// callers charges caller rate limits (rule, per, identity).
	callers *ratelimit.Limiter
	// seenSigs and seenShared are the verifiers' totals already reported.
	seenSigs, seenShared uint64

	proxy    string
	idPrefix string
	idSeq    uint64
}

// New configures a guard from the plugin configuration raw. A configuration
// the guard cannot use never fails the plugin (that would leave the outcome
// to the mesh's fail-open setting): every request then gets a 503 that
// says why, and Err reports it.
func New(raw []byte, ports Ports, opts Options) (g *Guard) {
	g = &Guard{ports: ports, proxy: opts.Proxy, idPrefix: strconv.FormatUint(opts.Seed, 36) + "-",
		polErr: errors.New("no policy bundle loaded yet")}
	defer func() {
		if r := recover(); r != nil {
			g.err = fmt.Errorf("internal error while configuring: %v", r)
		}
		if g.err != nil {
			g.cfg = nil
			ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: configuration rejected, failing closed: %v", g.err))
		}
	}()
	g.err = g.configure(raw, opts.Seed)
	return g
}

func (g *Guard) configure(raw []byte, seed uint64) error {
	cfg, err := config.Parse(raw)
	if err != nil {
		return err
	}
	g.cfg = cfg
	g.pathOpts = policies.PathOptions{Normalize: cfg.Paths != config.PathsRefuse, MergeSlashes: cfg.Paths == config.PathsMergeSlashes}
	if g.keys, err = verify.ParseKeySet(cfg.Policy.VerifyKeys); err != nil {
		return fmt.Errorf("policy.verifyKeys: %w", err)
	}
	g.keeper = verify.NewKeeper(cfg.Policy.MinRevision)
	if j := cfg.Identity.JWTSVID; j != nil {
		if g.svid, err = identity.NewSVIDVerifier(identity.RawJSON(j.TrustDomains), j.Audiences, j.LocalAudience, j.CacheSize); err != nil {
			return err
		}
		// Workers share verified tokens, with as many slots as the local
		// cache holds: N workers cost one signature check per token.
		g.svid.Share(identity.NewSharedCache(g.ports.Shared, keyToken+"svid/", j.CacheSize))
	}
	if d := cfg.Identity.Device; d != nil {
		n := d.Claims
		g.device, err = identity.NewDeviceVerifier(identity.RawJSON(d.Issuers), d.Audiences,
			identity.ClaimNames{ID: n.ID, Class: n.Class, Vendor: n.Vendor, Model: n.Model, Firmware: n.Firmware},
			config.DefaultTokenCacheSize)
		if err != nil {
			return err
		}
		g.device.Share(identity.NewSharedCache(g.ports.Shared, keyToken+"device/", config.DefaultTokenCacheSize))
	}
	g.limit = ratelimit.New(g.ports.Shared, keyRate)
	g.callers = ratelimit.New(g.ports.Shared, keyCall)
	if d := cfg.Policy.Distributor; d != nil {
		g.channel = distribution.New(g.ports.Shared, d, seed)
	}
	if err := g.configureRegistry(cfg, seed); err != nil {
		return err
	}
	if cfg.Policy.Inline != "" {
		data, err := base64.StdEncoding.DecodeString(cfg.Policy.Inline)
		if err != nil {
			return fmt.Errorf("policy.inline: %w", err)
		}
		err = g.Install(data, "inline configuration")
		// The bundle is installed or refused: its base64 text would only
		// hold memory from now on.
		cfg.Policy.Inline = ""
		if err != nil && cfg.Policy.Distributor == nil {
			// Fatal unless a distributor may still deliver a good bundle.
			return err
		}
	}
	return nil
}

// Enforcing reports whether a policy is enforced (else requests get 503).
func (g *Guard) Enforcing() bool { return g.pol != nil }

// Err returns why the configuration is unusable (nil when it is usable).
func (g *Guard) Err() error { return g.err }

// Fail makes the guard refuse every request with err: the adapter could
// not set up what the configuration needs.
func (g *Guard) Fail(err error) {
	g.err, g.cfg = err, nil
	g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: configuration rejected, failing closed: %v", err))
}

// Config returns the parsed configuration (nil when it is unusable).
func (g *Guard) Config() *config.Config { return g.cfg }

// Channel returns the distributor channel the guard polls (nil without).
func (g *Guard) Channel() *distribution.Channel { return g.channel }

// Proxy is the proxy's name (xds.node.id), "" when the host gives none.
func (g *Guard) Proxy() string { return g.proxy }

// DecisionHeader names the response header that carries decision ids.
func (g *Guard) DecisionHeader() string {
	if g.cfg == nil {
		return config.DefaultDecisionHeader
	}
	return g.cfg.DecisionHeader
}

// Sweep drops expired tokens from the verifiers' caches.
func (g *Guard) Sweep(now time.Time) {
	if g.svid != nil {
		g.svid.Cache().Sweep(now)
	}
	if g.device != nil {
		g.device.Cache().Sweep(now)
	}
	if g.users != nil && g.users.verify != nil {
		g.users.verify.Cache().Sweep(now)
		g.users.verify.NotOwned().Sweep(now)
	}
}

func (g *Guard) nextDecisionID() string {
	g.idSeq++
	return g.idPrefix + strconv.FormatUint(g.idSeq, 36)
}
