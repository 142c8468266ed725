// Package config is the guard filter's plugin configuration: the JSON document
// that Istio's WasmPlugin pluginConfig, Kuma's MeshProxyPatch and `meshguard run`
// hand to proxy_on_configure. It is pure Go so the renderers, the CLI and the
// filter (wasip1) share one definition and one validation.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/internal/jsonx"
)

// Defaults applied by Parse when a field is left empty.
const (
	DefaultJWTHeader         = "authorization"
	DefaultJWTSVIDHeader     = "x-jwt-svid"
	DefaultDeviceHeader      = "x-device-token"
	DefaultBundlePath        = contract.BundlesPath + "/"
	DefaultDecisionPath      = contract.DecisionsPath
	DefaultPollInterval      = 10 * time.Second
	DefaultCalloutTimeout    = 5 * time.Second
	DefaultTokenCacheSize    = 4096
	DefaultAuditBatchSize    = 100
	DefaultAuditBufferSize   = 10000
	DefaultAuditBufferBytes  = 4 << 20
	DefaultAuditMaxBackoff   = 30 * time.Second
	MinAuditBufferBytes      = 16 << 10
	MaxAuditBufferBytes      = 1 << 30
	DefaultAuditFlushPeriod  = 2 * time.Second
	DefaultDecisionHeader    = contract.DecisionHeader
	MaxExpiryGrace           = 7 * 24 * time.Hour
	MaxJWTHeaders            = 16
	ModeEnforce              = "enforce"
	ModeDryRun               = "dry-run"
	maxConfigBytes           = 64 << 20
	defaultVersionClaimEAT   = "swversion"
	defaultDeviceIDClaim     = "ueid"
	defaultDeviceClassClaim  = "hwmodel"
	defaultDeviceVendorClaim = "oemid"
)

// Config is the whole plugin configuration.
type Config struct {
	// Mode is "enforce" (default) or "dry-run" (every deny is logged, none enforced).
	Mode string `json:"mode,omitempty"`
	// Policy says where the signed policy bundle comes from and how it is verified.
	Policy PolicySource `json:"policy"`
	// Identity selects the identity sources evaluated per request.
	Identity Identity `json:"identity"`
	// Audit configures decision records.
	Audit Audit `json:"audit,omitempty"`
	// DecisionHeader names the response header that carries the decision id.
	DecisionHeader string `json:"decisionHeader,omitempty"`
	// Paths says what the guard does with a request path that is not
	// canonical (policies/README.md, "Request paths"): PathsRefuse (the
	// default) answers 400, PathsNormalize rewrites it (RFC 3986 §6.2.2)
	// before deciding and forwards the rewritten path, PathsMergeSlashes
	// also merges runs of "/".
	Paths string `json:"paths,omitempty"`
	// Direction is where the guard runs: DirectionInbound (the default,
	// the receiving side: it decides on its callers) or DirectionOutbound
	// (a sidecar's outbound listener or an egress gateway: it decides on
	// the upstream's and the target device's versions,
	// policies/README.md "Upstream versions"). An outbound guard has no
	// callers to identify, so identity must be empty. Empty means inbound
	// (and keeps inbound configurations as they were).
	Direction string `json:"direction,omitempty"`
}

// Values of Config.Direction.
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
)

// Outbound reports whether the guard runs on the caller's side.
func (c *Config) Outbound() bool { return c.Direction == DirectionOutbound }

// Values of Config.Paths (the CLI's --paths values).
const (
	PathsRefuse       = "refuse"
	PathsNormalize    = "normalize"
	PathsMergeSlashes = "merge-slashes"
)

// PolicySource is an inline bundle, a distributor to poll, or both (the inline
// bundle serves until the distributor delivers a higher revision).
type PolicySource struct {
	// Inline is a signed bundle, base64 (std encoding) of the bundle file.
	Inline string `json:"inline,omitempty"`
	// Distributor polls the distributor's bundle registry by http callout.
	Distributor *Distributor `json:"distributor,omitempty"`
	// VerifyKeys is the JWK Set (public keys) that bundles must be signed with.
	VerifyKeys json.RawMessage `json:"verifyKeys"`
	// RegistryKeys is the JWK Set of the distributor's registry signing
	// key. When set, the guard also polls the registry channel
	// (Distributor.Channel + ".registry") and decides with both bundles
	// (policies/README.md, "Registry-derived content"); a registry bundle
	// must carry the scope Scope + ".registry" when Scope is set, and until
	// one is verified every request gets 503.
	RegistryKeys json.RawMessage `json:"registryKeys,omitempty"`
	// Scope, when set, must be listed in the bundle manifest's scope.
	Scope string `json:"scope,omitempty"`
	// MinRevision rejects any bundle whose revision is not above it.
	MinRevision uint64 `json:"minRevision,omitempty"`
	// ExpiryGrace keeps enforcing the last good bundle this long past its
	// expiry (logged as critical, visible in the bundle expiry metric)
	// instead of failing closed at once; 0, the default, fails closed at
	// expiry. At most MaxExpiryGrace.
	ExpiryGrace Duration `json:"expiryGrace,omitzero"`
}

// Distributor is a callout target: an Envoy cluster and the HTTP details.
type Distributor struct {
	// Cluster is the Envoy cluster name used with proxy_http_call.
	Cluster string `json:"cluster"`
	// Authority is the :authority of callouts (defaults to Cluster).
	Authority string `json:"authority,omitempty"`
	// Channel is the bundle channel: GET {BundlePath}{Channel}.
	Channel string `json:"channel"`
	// BundlePath is the path prefix of the bundle registry.
	BundlePath string `json:"bundlePath,omitempty"`
	// PollInterval between polls (Go duration string, e.g. "10s").
	PollInterval Duration `json:"pollInterval,omitempty"`
	// Timeout of one callout.
	Timeout Duration `json:"timeout,omitempty"`
	// Token, when set, is sent as "authorization: Bearer <token>".
	Token string `json:"token,omitempty"`
}

// Identity lists the identity sources.
type Identity struct {
	// PeerCertificate uses connection.uri_san_peer_certificate (mTLS peer SPIFFE ID).
	PeerCertificate bool `json:"peerCertificate,omitempty"`
	// JWTSVID verifies JWT-SVIDs from request headers.
	JWTSVID *JWTSVID `json:"jwtSvid,omitempty"`
	// Device reads device claims from a signed device token.
	Device *Device `json:"device,omitempty"`
	// IstioPeerMetadata reads filter_state.downstream_peer.* (Istio >= 1.24).
	IstioPeerMetadata bool `json:"istioPeerMetadata,omitempty"`
	// StripHeaders are removed from every request before it goes upstream, so
	// callers cannot spoof identity headers set by meshguard.
	StripHeaders []string `json:"stripHeaders,omitempty"`
	// TrustedForwarders are the mTLS peers (SPIFFE IDs, e.g. the ingress
	// gateway's) that may relay a caller's JWT-SVID: from them a token
	// whose subject differs from the peer is the caller and the peer is
	// recorded as the forwarder. From any other peer such a request is
	// refused (403): one request has one caller.
	TrustedForwarders []string `json:"trustedForwarders,omitempty"`
	// KeepCredentialHeaders names credential headers (jwtSvid.headers,
	// device.header) that still go upstream after the guard verified the
	// token in them. By default every verified credential header is
	// removed, so the application cannot replay it elsewhere.
	KeepCredentialHeaders []string `json:"keepCredentialHeaders,omitempty"`
	// EndUser accepts end-user access tokens (at ingress and egress
	// gateways, or any sidecar that asks), which rules' issuers, scopes
	// and claims conditions read.
	EndUser *EndUser `json:"endUser,omitempty"`
}

// EndUser configures end-user access tokens. By default the guard
// verifies them itself with the Issuers of the policy bundle; with
// JWTAuthn it takes the claims Envoy's jwt_authn filter (Istio's
// RequestAuthentication) verified from that filter's dynamic metadata
// instead, and never reads a token.
type EndUser struct {
	// JWTAuthn reads verified payloads from the property
	// metadata.filter_metadata["envoy.filters.http.jwt_authn"][key] for
	// each of these keys (the providers' payload_in_metadata; Istio uses
	// the issuer URL). At most one may be present on a request.
	JWTAuthn []string `json:"jwtAuthn,omitempty"`
	// PseudonymKey (standard base64, at least 32 bytes) replaces the
	// user's subject in audit records by "hmac-sha256:" +
	// base64url(HMAC-SHA256(key, iss NUL sub)).
	PseudonymKey string `json:"pseudonymKey,omitempty"`
	// CacheSize bounds the verified-token cache (default
	// DefaultTokenCacheSize).
	CacheSize int `json:"cacheSize,omitempty"`
}

// MinPseudonymKeyBytes is the shortest accepted endUser.pseudonymKey.
const MinPseudonymKeyBytes = 32

// PseudonymKeyBytes decodes endUser.pseudonymKey (nil when unset).
func (e *EndUser) PseudonymKeyBytes() ([]byte, error) {
	if e == nil || e.PseudonymKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(e.PseudonymKey)
	if err != nil {
		return nil, fmt.Errorf("identity.endUser.pseudonymKey: not standard base64: %w", err)
	}
	if len(k) < MinPseudonymKeyBytes {
		return nil, fmt.Errorf("identity.endUser.pseudonymKey: %d bytes, at least %d", len(k), MinPseudonymKeyBytes)
	}
	return k, nil
}

// JWTSVID configures JWT-SVID verification.
type JWTSVID struct {
	// Headers to read, in order. "authorization" expects "Bearer <token>".
	Headers []string `json:"headers,omitempty"`
	// Audiences accepted; at least one is required unless LocalAudience is
	// set (an empty audience never disables the check).
	Audiences []string `json:"audiences,omitempty"`
	// LocalAudience also accepts tokens whose aud names this proxy's own
	// SPIFFE ID (the first URI SAN of the local certificate of the
	// downstream mTLS connection, connection.uri_san_local_certificate):
	// a per-service audience, so a token captured at one service fails at
	// every other. `meshguard render` sets it unless audiences are given.
	LocalAudience bool `json:"localAudience,omitempty"`
	// TrustDomains maps a trust domain name to its JWT bundle (a JWK Set). When a
	// trust domain's set is empty, keys come from the policy bundle's data.
	TrustDomains map[string]json.RawMessage `json:"trustDomains"`
	// CacheSize bounds the verified-token cache.
	CacheSize int `json:"cacheSize,omitempty"`
}

// Device configures device claims.
type Device struct {
	// Header carrying the device JWT.
	Header string `json:"header,omitempty"`
	// Issuers maps an issuer (iss) to its JWK Set.
	Issuers map[string]json.RawMessage `json:"issuers"`
	// Claims names the claims to read; defaults follow IETF EAT (RFC 9711).
	Claims DeviceClaims `json:"claims,omitempty"`
	// Audiences accepted for device tokens (required).
	Audiences []string `json:"audiences"`
}

// DeviceClaims names device claims.
type DeviceClaims struct {
	ID       string `json:"id,omitempty"`
	Class    string `json:"class,omitempty"`
	Vendor   string `json:"vendor,omitempty"`
	Model    string `json:"model,omitempty"`
	Firmware string `json:"firmware,omitempty"`
}

// Audit configures decision records.
type Audit struct {
	// LogAllows records allows too (denies are always recorded).
	LogAllows bool `json:"logAllows,omitempty"`
	// Sink posts batches to the distributor's decision-log endpoint; nil logs only.
	Sink *AuditSink `json:"sink,omitempty"`
}

// AuditSink is where decision batches go.
type AuditSink struct {
	Cluster   string `json:"cluster"`
	Authority string `json:"authority,omitempty"`
	Path      string `json:"path,omitempty"`
	Token     string `json:"token,omitempty"`
	BatchSize int    `json:"batchSize,omitempty"`
	// BufferSize bounds the records a worker holds for upload,
	// BufferBytes their encoded size: past either, the oldest are dropped
	// and the next upload carries a gap record counting them.
	BufferSize    int      `json:"bufferSize,omitempty"`
	BufferBytes   int      `json:"bufferBytes,omitempty"`
	FlushInterval Duration `json:"flushInterval,omitempty"`
	Timeout       Duration `json:"timeout,omitempty"`
	// MaxBackoff caps the exponential wait between retries of a failed
	// upload (a Retry-After of the distributor is honoured up to 10m).
	MaxBackoff Duration `json:"maxBackoff,omitempty"`
}

// Duration is a time.Duration that reads and writes Go duration strings ("10s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
// (Duration strings hold only ASCII letters, digits, '.', '-' and "µ", so Go
// quoting is JSON quoting; encoding/json would link its encoder into the guard.)
func (d Duration) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, d.String()), nil }

// UnmarshalJSON reads "10s"-style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := jsonx.Parse(b)
	if err != nil || v.Kind != jsonx.String {
		return fmt.Errorf("duration must be a string such as \"10s\": %s", b)
	}
	return d.set(v.Str)
}

// Parse decodes and validates a configuration, rejecting unknown fields, and
// fills in defaults. An empty input is an error: the filter fails closed.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("guard config: empty configuration")
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("guard config: %d bytes exceeds the %d byte limit", len(data), maxConfigBytes)
	}
	c, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("guard config: %w", err)
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = ModeEnforce
	}
	if c.DecisionHeader == "" {
		c.DecisionHeader = DefaultDecisionHeader
	}
	if c.Paths == "" {
		c.Paths = PathsRefuse
	}
	if d := c.Policy.Distributor; d != nil {
		if d.Authority == "" {
			d.Authority = d.Cluster
		}
		if d.BundlePath == "" {
			d.BundlePath = DefaultBundlePath
		}
		if d.PollInterval.Duration == 0 {
			d.PollInterval.Duration = DefaultPollInterval
		}
		if d.Timeout.Duration == 0 {
			d.Timeout.Duration = DefaultCalloutTimeout
		}
	}
	if j := c.Identity.JWTSVID; j != nil {
		if len(j.Headers) == 0 {
			j.Headers = []string{DefaultJWTHeader, DefaultJWTSVIDHeader}
		}
		if j.CacheSize == 0 {
			j.CacheSize = DefaultTokenCacheSize
		}
	}
	if e := c.Identity.EndUser; e != nil && e.CacheSize == 0 {
		e.CacheSize = DefaultTokenCacheSize
	}
	if d := c.Identity.Device; d != nil {
		if d.Header == "" {
			d.Header = DefaultDeviceHeader
		}
		cl := &d.Claims
		cl.ID = orDefault(cl.ID, defaultDeviceIDClaim)
		cl.Class = orDefault(cl.Class, defaultDeviceClassClaim)
		cl.Vendor = orDefault(cl.Vendor, defaultDeviceVendorClaim)
		cl.Model = orDefault(cl.Model, "hwversion")
		cl.Firmware = orDefault(cl.Firmware, defaultVersionClaimEAT)
	}
	if s := c.Audit.Sink; s != nil {
		if s.Authority == "" {
			s.Authority = s.Cluster
		}
		if s.Path == "" {
			s.Path = DefaultDecisionPath
		}
		if s.BatchSize == 0 {
			s.BatchSize = DefaultAuditBatchSize
		}
		if s.BufferSize == 0 {
			s.BufferSize = DefaultAuditBufferSize
		}
		if s.BufferBytes == 0 {
			s.BufferBytes = DefaultAuditBufferBytes
		}
		if s.MaxBackoff.Duration == 0 {
			s.MaxBackoff.Duration = DefaultAuditMaxBackoff
		}
		if s.FlushInterval.Duration == 0 {
			s.FlushInterval.Duration = DefaultAuditFlushPeriod
		}
		if s.Timeout.Duration == 0 {
			s.Timeout.Duration = DefaultCalloutTimeout
		}
	}
	// The filter matches header names against Envoy's lower-cased map.
	for i, h := range c.Identity.StripHeaders {
		c.Identity.StripHeaders[i] = strings.ToLower(h)
	}
	for i, h := range c.Identity.KeepCredentialHeaders {
		c.Identity.KeepCredentialHeaders[i] = strings.ToLower(h)
	}
	if j := c.Identity.JWTSVID; j != nil {
		for i, h := range j.Headers {
			j.Headers[i] = strings.ToLower(h)
		}
	}
	if d := c.Identity.Device; d != nil {
		d.Header = strings.ToLower(d.Header)
	}
}

// credentialHeader reports whether h carries a token the guard verifies.
func (id *Identity) credentialHeader(h string) bool {
	if j := id.JWTSVID; j != nil {
		for _, n := range j.Headers {
			if n == h {
				return true
			}
		}
	}
	if id.EndUser != nil && len(id.EndUser.JWTAuthn) == 0 {
		return true // end-user token headers come from the bundle's Issuers
	}
	return id.Device != nil && id.Device.Header == h
}

// KeepsCredential reports whether the verified credential header h goes
// upstream (KeepCredentialHeaders).
func (id *Identity) KeepsCredential(h string) bool {
	for _, k := range id.KeepCredentialHeaders {
		if k == h {
			return true
		}
	}
	return false
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// Validate reports every problem in the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Mode != ModeEnforce && c.Mode != ModeDryRun {
		add("mode: %q is not %q or %q", c.Mode, ModeEnforce, ModeDryRun)
	}
	if c.Paths != PathsRefuse && c.Paths != PathsNormalize && c.Paths != PathsMergeSlashes {
		add("paths: %q is not %q, %q or %q", c.Paths, PathsRefuse, PathsNormalize, PathsMergeSlashes)
	}
	p := c.Policy
	if p.Inline == "" && p.Distributor == nil {
		add("policy: set inline, distributor, or both")
	}
	if p.Inline != "" {
		if _, err := base64.StdEncoding.DecodeString(p.Inline); err != nil {
			add("policy.inline: not standard base64: %v", err)
		}
	}
	if len(bytes.TrimSpace(p.VerifyKeys)) == 0 || string(bytes.TrimSpace(p.VerifyKeys)) == "null" {
		add("policy.verifyKeys: a JWK Set is required (bundles are always verified)")
	} else if !jsonx.Valid(p.VerifyKeys) {
		add("policy.verifyKeys: not valid JSON")
	}
	if len(bytes.TrimSpace(p.RegistryKeys)) != 0 {
		switch {
		case !jsonx.Valid(p.RegistryKeys):
			add("policy.registryKeys: not valid JSON")
		case p.Distributor == nil:
			add("policy.registryKeys: registry bundles come from a distributor: set policy.distributor")
		}
	}
	if g := p.ExpiryGrace.Duration; g < 0 || g > MaxExpiryGrace {
		add("policy.expiryGrace: %s is outside 0..%s", g, MaxExpiryGrace)
	}
	if d := p.Distributor; d != nil {
		if d.Cluster == "" {
			add("policy.distributor.cluster: required")
		}
		if d.Channel == "" || strings.ContainsAny(d.Channel, "/?#% ") {
			add("policy.distributor.channel: %q must be a non-empty name without / ? # %% or spaces", d.Channel)
		}
		if !strings.HasPrefix(d.BundlePath, "/") {
			add("policy.distributor.bundlePath: %q must start with /", d.BundlePath)
		}
		if d.PollInterval.Duration < time.Second {
			add("policy.distributor.pollInterval: %s is below 1s", d.PollInterval.Duration)
		}
	}
	id := c.Identity
	switch {
	case c.Direction != "" && c.Direction != DirectionInbound && c.Direction != DirectionOutbound:
		add("direction: %q is not %q or %q", c.Direction, DirectionInbound, DirectionOutbound)
	case c.Outbound():
		// The downstream of an outbound listener is the local application:
		// there is no caller credential to verify, and a configured one would
		// read as protection that is not there.
		if id.PeerCertificate || id.JWTSVID != nil || id.Device != nil || id.IstioPeerMetadata || len(id.TrustedForwarders) > 0 ||
			len(id.KeepCredentialHeaders) > 0 || id.EndUser != nil {
			add("identity: direction outbound decides on the upstream, not on callers: leave identity empty (stripHeaders only)")
		}
	case !id.PeerCertificate && id.JWTSVID == nil && id.Device == nil && !id.IstioPeerMetadata && id.EndUser == nil:
		add("identity: enable at least one of peerCertificate, jwtSvid, device, istioPeerMetadata")
	}
	for i, f := range id.TrustedForwarders {
		if _, err := identity.TrustDomain(f); err != nil {
			add("identity.trustedForwarders[%d]: %w", i, err)
		}
	}
	if len(id.TrustedForwarders) > 0 && (!id.PeerCertificate || id.JWTSVID == nil) {
		add("identity.trustedForwarders: needs peerCertificate and jwtSvid (a forwarder relays JWT-SVIDs over mTLS)")
	}
	for i, h := range id.KeepCredentialHeaders {
		if !id.credentialHeader(h) {
			add("identity.keepCredentialHeaders[%d]: %q is not a credential header (jwtSvid.headers, device.header)", i, h)
		}
	}
	if j := id.JWTSVID; j != nil {
		if len(j.Headers) > MaxJWTHeaders {
			add("identity.jwtSvid.headers: %d headers, at most %d", len(j.Headers), MaxJWTHeaders)
		}
		if len(j.Audiences) == 0 && !j.LocalAudience {
			add("identity.jwtSvid.audiences: at least one audience is required (or localAudience)")
		}
		for i, a := range j.Audiences {
			if strings.TrimSpace(a) == "" {
				add("identity.jwtSvid.audiences[%d]: empty audience", i)
			}
		}
		if len(j.TrustDomains) == 0 {
			add("identity.jwtSvid.trustDomains: at least one trust domain is required")
		}
		for td, set := range j.TrustDomains {
			if td == "" || strings.ContainsAny(td, "/:") || td != strings.ToLower(td) {
				add("identity.jwtSvid.trustDomains: %q is not a trust domain name", td)
			}
			if len(set) > 0 && !jsonx.Valid(set) {
				add("identity.jwtSvid.trustDomains[%s]: not valid JSON", td)
			}
		}
		if j.CacheSize < 0 {
			add("identity.jwtSvid.cacheSize: negative")
		}
	}
	if d := id.Device; d != nil {
		if len(d.Issuers) == 0 {
			add("identity.device.issuers: at least one issuer is required")
		}
		if len(d.Audiences) == 0 {
			add("identity.device.audiences: at least one audience is required")
		}
	}
	if e := id.EndUser; e != nil {
		if _, err := e.PseudonymKeyBytes(); err != nil {
			add("%w", err)
		}
		if e.CacheSize < 0 {
			add("identity.endUser.cacheSize: negative")
		}
		for i, k := range e.JWTAuthn {
			if k == "" || strings.ContainsRune(k, 0) {
				add("identity.endUser.jwtAuthn[%d]: %q is not a payload_in_metadata key", i, k)
			}
		}
	}
	if s := c.Audit.Sink; s != nil {
		if s.Cluster == "" {
			add("audit.sink.cluster: required")
		}
		if !strings.HasPrefix(s.Path, "/") {
			add("audit.sink.path: %q must start with /", s.Path)
		}
		if s.BatchSize < 1 || s.BufferSize < s.BatchSize {
			add("audit.sink: batchSize %d must be >= 1 and <= bufferSize %d", s.BatchSize, s.BufferSize)
		}
		if s.BufferBytes < MinAuditBufferBytes || s.BufferBytes > MaxAuditBufferBytes {
			add("audit.sink.bufferBytes: %d must be between %d (16 KiB) and %d (1 GiB)", s.BufferBytes, MinAuditBufferBytes, MaxAuditBufferBytes)
		}
		if s.MaxBackoff.Duration < time.Second || s.MaxBackoff.Duration > time.Hour {
			add("audit.sink.maxBackoff: %s must be between 1s and 1h", s.MaxBackoff.Duration)
		}
		if s.FlushInterval.Duration < 0 || s.Timeout.Duration < 0 {
			add("audit.sink: flushInterval and timeout must not be negative")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("guard config: %w", errors.Join(errs...))
	}
	return nil
}
