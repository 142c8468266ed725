package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/filters/guard/internal/lease"
	"github.com/meshguard/meshguard/filters/guard/internal/ratelimit"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// Shared-data keys (per vm_id, i.e. per plugin in a proxy).
const (
	keyBundle = "meshguard/bundle/"    // + channel: the last verified bundle bytes
	keyRev    = "meshguard/revision/"  // + channel: its revision (8 bytes LE), read per request
	keyETag   = "meshguard/etag/"      // + channel: ETag of that bundle
	keyLease  = "meshguard/lease/"     // + channel: poll lease
	keyRate   = "meshguard/ratelimit/" // + device key: token bucket
)

// policyState is an installed, verified and compiled bundle.
type policyState struct {
	engine   *policies.Engine
	revision uint64
	digest   string
	// peerVersion: some version rule reads the Istio peer version label.
	peerVersion bool
}

type plugin struct {
	types.DefaultPluginContext
	id uint32

	cfg    *config.Config
	cfgErr error // non-nil: configuration unusable, every request gets 503

	keys    *verify.KeySet
	keeper  *verify.Keeper
	policy  *policyState
	expires time.Time
	polErr  error // last reason there is no policy

	svid   *identity.SVIDVerifier
	device *identity.DeviceVerifier
	limit  *ratelimit.Limiter

	// Distribution.
	lease        *lease.Lease
	pollEvery    time.Duration
	nextPoll     time.Time
	polling      bool
	etag         string
	sharedCAS    uint32 // cas of the shared bundle we last looked at
	audit        *audit.Buffer
	auditBuf     []byte
	flushEvery   time.Duration
	nextFlush    time.Time
	flushing     bool
	idPrefix     string
	idSeq        uint64
	proxyName    string
	m            metrics
	tokens       tokenWork
	ruleCounters map[ruleResult]proxywasm.MetricCounter
	freeStreams  []*stream
}

// ruleResult keys the per-rule counters (a struct, not a concatenated
// string, so the per-request lookup does not allocate).
type ruleResult struct{ rule, result string }

// maxFreeStreams bounds the recycled streams a worker keeps.
const maxFreeStreams = 1024

type metrics struct {
	allow, deny, dryRunDeny, errors, unavailable, rateLimited proxywasm.MetricCounter
	verifyFailures, bundleLoads, cacheHits, cacheMisses       proxywasm.MetricCounter
	auditDropped, auditSent, auditFailed                      proxywasm.MetricCounter
	revision, expiry                                          proxywasm.MetricGauge
}

func newPlugin(id uint32) *plugin {
	return &plugin{id: id, ruleCounters: map[ruleResult]proxywasm.MetricCounter{}}
}

func (p *plugin) defineMetrics() {
	p.m = metrics{
		allow:          proxywasm.DefineCounterMetric("meshguard_decisions_total.result=allow"),
		deny:           proxywasm.DefineCounterMetric("meshguard_decisions_total.result=deny"),
		dryRunDeny:     proxywasm.DefineCounterMetric("meshguard_decisions_total.result=dry-run-deny"),
		errors:         proxywasm.DefineCounterMetric("meshguard_decisions_total.result=error"),
		unavailable:    proxywasm.DefineCounterMetric("meshguard_decisions_total.result=unavailable"),
		rateLimited:    proxywasm.DefineCounterMetric("meshguard_rate_limited_total"),
		verifyFailures: proxywasm.DefineCounterMetric("meshguard_bundle_verification_failures_total"),
		bundleLoads:    proxywasm.DefineCounterMetric("meshguard_bundle_loads_total"),
		cacheHits:      proxywasm.DefineCounterMetric("meshguard_token_cache_hits_total"),
		cacheMisses:    proxywasm.DefineCounterMetric("meshguard_token_cache_misses_total"),
		auditDropped:   proxywasm.DefineCounterMetric("meshguard_audit_dropped_total"),
		auditSent:      proxywasm.DefineCounterMetric("meshguard_audit_sent_total"),
		auditFailed:    proxywasm.DefineCounterMetric("meshguard_audit_upload_failures_total"),
		revision:       proxywasm.DefineGaugeMetric("meshguard_bundle_revision"),
		expiry:         proxywasm.DefineGaugeMetric("meshguard_bundle_expiry_timestamp_seconds"),
	}
	p.tokens.define()
}

// ruleCounter counts decisions per rule and result (created on first use).
func (p *plugin) ruleCounter(rule, result string) proxywasm.MetricCounter {
	k := ruleResult{rule, result}
	c, ok := p.ruleCounters[k]
	if !ok {
		if len(p.ruleCounters) >= 4096 { // bound metric cardinality
			return 0
		}
		c = proxywasm.DefineCounterMetric("meshguard_rule_decisions_total.rule=" + rule + ".result=" + result)
		p.ruleCounters[k] = c
	}
	return c
}

// OnPluginStart implements types.PluginContext. Configuration problems do not
// fail the plugin (that would leave the outcome to the mesh's fail-open
// setting); they make every request fail closed with a clear 503.
func (p *plugin) OnPluginStart(size int) (status types.OnPluginStartStatus) {
	defer func() {
		if r := recover(); r != nil {
			p.cfgErr = fmt.Errorf("internal error while configuring: %v", r)
			proxywasm.LogCriticalf("meshguard: %v", p.cfgErr)
			status = types.OnPluginStartStatusOK
		}
	}()
	p.defineMetrics()
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	p.idPrefix = strconv.FormatUint(binary.LittleEndian.Uint64(seed[:]), 36) + "-"
	if b, err := proxywasm.GetProperty([]string{"xds", "node", "id"}); err == nil {
		p.proxyName = string(b)
	}
	if err := p.configure(); err != nil {
		p.cfgErr = err
		proxywasm.LogCriticalf("meshguard: configuration rejected, failing closed: %v", err)
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) configure() error {
	raw, err := proxywasm.GetPluginConfiguration()
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		return fmt.Errorf("reading plugin configuration: %w", err)
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		return err
	}
	p.cfg = cfg
	if p.keys, err = verify.ParseKeySet(cfg.Policy.VerifyKeys); err != nil {
		return fmt.Errorf("policy.verifyKeys: %w", err)
	}
	p.keeper = verify.NewKeeper(cfg.Policy.MinRevision)
	if j := cfg.Identity.JWTSVID; j != nil {
		if p.svid, err = identity.NewSVIDVerifier(identity.RawJSON(j.TrustDomains), j.Audiences, j.CacheSize); err != nil {
			return err
		}
	}
	if d := cfg.Identity.Device; d != nil {
		n := d.Claims
		p.device, err = identity.NewDeviceVerifier(identity.RawJSON(d.Issuers), d.Audiences,
			identity.ClaimNames{ID: n.ID, Class: n.Class, Vendor: n.Vendor, Model: n.Model, Firmware: n.Firmware},
			config.DefaultTokenCacheSize)
		if err != nil {
			return err
		}
	}
	p.shareTokens(cfg)
	p.limit = ratelimit.New(sharedStore{}, keyRate)
	p.polErr = errors.New("no policy bundle loaded yet")
	if cfg.Policy.Inline != "" {
		data, err := base64.StdEncoding.DecodeString(cfg.Policy.Inline)
		if err != nil {
			return fmt.Errorf("policy.inline: %w", err)
		}
		err = p.install(data, "inline configuration")
		// The bundle is installed or refused: its base64 text would only
		// hold memory from now on.
		cfg.Policy.Inline = ""
		if err != nil && cfg.Policy.Distributor == nil {
			// Fatal unless a distributor may still deliver a good bundle.
			return err
		}
	}
	tick := time.Duration(0)
	if d := cfg.Policy.Distributor; d != nil {
		p.lease = lease.New(sharedStore{}, keyLease+d.Channel, binary.LittleEndian.Uint64([]byte(p.idPrefix+"________")), 3*d.PollInterval.Duration)
		p.pollEvery = d.PollInterval.Duration
		tick = minTick(tick, time.Second)
	}
	if s := cfg.Audit.Sink; s != nil {
		p.audit = audit.NewBuffer(s.BufferSize)
		p.flushEvery = s.FlushInterval.Duration
		tick = minTick(tick, s.FlushInterval.Duration)
	}
	if tick > 0 {
		if err := proxywasm.SetTickPeriodMilliSeconds(uint32(tick / time.Millisecond)); err != nil {
			return fmt.Errorf("setting tick period: %w", err)
		}
	}
	return nil
}

func minTick(cur, d time.Duration) time.Duration {
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// OnTick polls the distributor (lease holder only), picks up bundles other
// workers fetched, flushes audit batches and sweeps token caches.
func (p *plugin) OnTick() {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error on tick: %v", r)
		}
	}()
	if p.cfg == nil {
		return
	}
	now := time.Now()
	if p.cfg.Policy.Distributor != nil {
		// The small revision key, not the whole shared bundle: idle workers
		// still install a newer bundle before their next request.
		p.checkShared()
		if !p.polling && !now.Before(p.nextPoll) {
			p.nextPoll = now.Add(p.pollEvery)
			if ok, err := p.lease.Acquire(now); err != nil {
				proxywasm.LogWarnf("meshguard: poll lease: %v", err)
			} else if ok {
				p.poll()
			}
		}
	}
	if p.audit != nil && !p.flushing && (p.audit.Len() >= p.cfg.Audit.Sink.BatchSize || !now.Before(p.nextFlush)) {
		p.nextFlush = now.Add(p.flushEvery)
		p.flush()
	}
	if p.svid != nil {
		p.svid.Cache().Sweep(now)
	}
	if p.device != nil {
		p.device.Cache().Sweep(now)
	}
}

// NewHttpContext implements types.PluginContext. Streams are recycled
// (see stream.OnHttpStreamDone): a fresh one per request would be the
// largest allocation of the request path.
func (p *plugin) NewHttpContext(id uint32) types.HttpContext {
	if n := len(p.freeStreams); n > 0 {
		s := p.freeStreams[n-1]
		p.freeStreams = p.freeStreams[:n-1]
		s.id = id
		return s
	}
	return &stream{p: p, id: id}
}

func (p *plugin) nextDecisionID() string {
	p.idSeq++
	return p.idPrefix + strconv.FormatUint(p.idSeq, 36)
}

// sharedStore adapts Proxy-Wasm shared data to shared.Store.
type sharedStore struct{}

func (sharedStore) Get(key string) ([]byte, uint32, error) {
	v, cas, err := proxywasm.GetSharedData(key)
	if errors.Is(err, types.ErrorStatusNotFound) {
		return nil, 0, shared.ErrNotFound
	}
	return v, cas, err
}

func (sharedStore) Set(key string, v []byte, cas uint32) error {
	err := proxywasm.SetSharedData(key, v, cas)
	if errors.Is(err, types.ErrorStatusCasMismatch) {
		return shared.ErrCASMismatch
	}
	return err
}
