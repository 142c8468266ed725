package policies

import "strings"

// Getter reads a named value (a header or a JWT claim) without forcing the
// caller to build a map. Header names are asked for lower-cased.
type Getter interface {
	Get(name string) (string, bool)
}

// Map is a Getter over a plain map (keys must be lower-case for headers).
type Map map[string]string

// Get implements Getter.
func (m Map) Get(name string) (string, bool) { v, ok := m[name]; return v, ok }

// Request is the input of a decision. Strings are borrowed, never retained.
type Request struct {
	// SPIFFEID is the caller, the identity access rules match: the JWT-SVID
	// subject when a token was accepted, else the mTLS peer.
	SPIFFEID string
	// PeerID is the mTLS peer's SPIFFE ID as presented (also when it equals
	// SPIFFEID). With SPIFFEID empty the peer is the caller.
	PeerID string
	// Forwarded says the peer is a trusted forwarder (e.g. an ingress
	// gateway) relaying the caller's JWT-SVID, so a SPIFFEID different from
	// PeerID is not an identity conflict.
	Forwarded   bool
	TrustDomain string // used only when the request carries no SPIFFE ID (matches trustDomains rules)
	JTI         string // JWT-SVID jti
	Claims      Getter // JWT-SVID claims (may be nil)

	// The device the request's device token attests.
	DeviceID       string // e.g. IEEE 2030.5 LFDI
	DeviceClass    string
	DeviceVendor   string
	DeviceModel    string
	DeviceFirmware string

	// TargetDeviceID is the device the request acts on, when the caller
	// determined it itself. Decide also derives the target from the
	// DevicePolicy target declarations; every source must name the same
	// device.
	TargetDeviceID string

	PeerVersion string // Istio peer metadata `version` label

	// User is the verified end-user access token (nil: none), which
	// rules' issuers, scopes and claims conditions read.
	User *User

	Method  string
	Path    string // canonical path (see CanonicalPath); a query string is ignored
	Headers Getter // may be nil

	// Now is the instant of the decision in Unix nanoseconds, which version
	// sunsets are compared with; 0 means the current time.
	Now int64
}

// MaxRules is how many deciding rule ids a Decision records.
const MaxRules = 4

// Decision is the outcome of Engine.Decide. Callers own it and may reuse it.
type Decision struct {
	Allow  bool
	Reason string
	// Rules are the ids of the deciding rules (first NumRules entries).
	RuleIDs  [MaxRules]string
	NumRules int
	// Audit is set when the request must be audited (writes always are).
	Audit bool
	// DryRun is set when a dry-run rule matched and would have decided
	// differently; DryRunRule names it.
	DryRun     bool
	DryRunRule string
	// Write reports that the request is a device write (set on every
	// decision); an allowed write carries the bucket to charge in RateLimit
	// (HasRateLimit false = unlimited).
	Write        bool
	HasRateLimit bool
	RateLimitKey string // the device token's id (or class when it has no id)
	RateLimit    RateLimit
	// TargetDevice is the device the request names (path, header or
	// Request.TargetDeviceID), "" when it names none.
	TargetDevice string
	// CallerLimit is the deciding allow rule's rate limit, to charge and
	// enforce (429); DryRunCallerLimit that of the earliest matching
	// dry-run allow rule with one, to charge and record only. Both are set
	// on allowed decisions only.
	CallerLimit          CallerLimit
	HasCallerLimit       bool
	DryRunCallerLimit    CallerLimit
	HasDryRunCallerLimit bool
	// Version is the version the request presented to the deciding
	// version rule, or to the first version rule checked when none
	// denied ("" when no version rule applied); a view of the request's
	// strings.
	Version string
	// UserRequired is set on a default deny when an enforced allow rule
	// would have matched but for the missing end-user token (the guard
	// answers 401); Scope, when an enforced allow rule matched in all but
	// its scopes, holds the earliest such rule's scopes space-separated
	// (the guard answers 403 insufficient_scope).
	UserRequired bool
	Scope        string
	// DefaultDeny is set on a plain default deny: no rule matched and
	// neither end-user refinement applies (Reason is ReasonDefaultDeny).
	DefaultDeny bool
}

// CallerLimit is a per-caller token bucket a decision asks the guard to
// charge: one bucket per (Rule, Per, Key).
type CallerLimit struct {
	Rule string // the id of the rule whose rateLimit it is
	Per  string // PerWorkload, PerDevice or PerUser
	// Key is the caller's identity for Per: its SPIFFE ID, the device
	// token's id as the token spells it (compared by the device-id case
	// rule), or the end-user token's subject; "" when the request has none
	// (they share one bucket).
	Key string
	// Issuer is the end-user token's iss (PerUser only): one bucket per
	// issuer and subject.
	Issuer    string
	PerSecond float64
	Burst     uint32
}

// Rules returns the deciding rule ids (a view into d, no allocation).
func (d *Decision) Rules() []string { return d.RuleIDs[:d.NumRules] }

// Rule returns the first deciding rule id or "".
func (d *Decision) Rule() string {
	if d.NumRules == 0 {
		return ""
	}
	return d.RuleIDs[0]
}

func (d *Decision) addRule(id string) {
	if d.NumRules < MaxRules {
		d.RuleIDs[d.NumRules] = id
		d.NumRules++
	}
}

// Input is the JSON/YAML form of a Request used by `policy eval` and test files.
type Input struct {
	SPIFFEID    string            `json:"spiffeID,omitempty"`
	PeerID      string            `json:"peerID,omitempty"`
	Forwarded   bool              `json:"forwarded,omitempty"`
	TrustDomain string            `json:"trustDomain,omitempty"`
	JTI         string            `json:"jti,omitempty"`
	Claims      map[string]string `json:"claims,omitempty"`
	Device      *InputDevice      `json:"device,omitempty"`
	Target      string            `json:"targetDevice,omitempty"`
	PeerVersion string            `json:"peerVersion,omitempty"`
	Method      string            `json:"method"`
	Path        string            `json:"path"`
	Headers     map[string]string `json:"headers,omitempty"`
	// User is the verified end-user access token's claims (its JSON
	// payload: iss, sub, scope or scp, any other claim); nil: no token.
	User map[string]any `json:"user,omitempty"`
	// Now is the decision's instant (RFC 3339 with an explicit offset, see
	// ParseInstant); "" is the current time.
	Now string `json:"now,omitempty"`
}

// InputDevice is the device part of an Input.
type InputDevice struct {
	ID       string `json:"id,omitempty"`
	Class    string `json:"class,omitempty"`
	Vendor   string `json:"vendor,omitempty"`
	Model    string `json:"model,omitempty"`
	Firmware string `json:"firmware,omitempty"`
}

// Request converts the input (header names are lower-cased).
func (in *Input) Request() *Request {
	r := &Request{SPIFFEID: in.SPIFFEID, PeerID: in.PeerID, Forwarded: in.Forwarded, TrustDomain: in.TrustDomain,
		JTI: in.JTI, TargetDeviceID: in.Target, PeerVersion: in.PeerVersion, Method: in.Method, Path: in.Path}
	if in.Claims != nil {
		r.Claims = Map(in.Claims)
	}
	if len(in.Headers) > 0 {
		h := make(Map, len(in.Headers))
		for k, v := range in.Headers {
			h[strings.ToLower(k)] = v
		}
		r.Headers = h
	}
	if in.Now != "" {
		// ParseInput and the PolicyTest parser refuse an invalid now; an
		// Input built otherwise with one decides at the current time.
		if t, err := ParseInstant(in.Now); err == nil {
			r.Now = t.UnixNano()
		}
	}
	if in.User != nil {
		r.User = NewUser(in.User)
	}
	if d := in.Device; d != nil {
		r.DeviceID, r.DeviceClass, r.DeviceVendor, r.DeviceModel, r.DeviceFirmware = d.ID, d.Class, d.Vendor, d.Model, d.Firmware
	}
	return r
}

// DecisionJSON is the JSON form of a Decision.
type DecisionJSON struct {
	Allow      bool           `json:"allow"`
	Rules      []string       `json:"rules"`
	Reason     string         `json:"reason"`
	Audit      bool           `json:"audit"`
	DryRun     bool           `json:"dryRun"`
	DryRunRule string         `json:"dryRunRule,omitempty"`
	Write      bool           `json:"write"`
	RateLimit  *RateLimitJSON `json:"rateLimit,omitempty"`
	Target     string         `json:"targetDevice,omitempty"`
	// CallerLimit and DryRunCallerLimit are the caller limits to charge.
	CallerLimit       *CallerLimitJSON `json:"callerLimit,omitempty"`
	DryRunCallerLimit *CallerLimitJSON `json:"dryRunCallerLimit,omitempty"`
	// Scope and UserRequired are the end-user refinements of a default
	// deny (see Decision).
	Scope        string `json:"scope,omitempty"`
	UserRequired bool   `json:"userRequired,omitempty"`
}

// CallerLimitJSON is the JSON form of a decision's caller limit.
type CallerLimitJSON struct {
	Rule      string  `json:"rule"`
	Per       string  `json:"per"`
	Key       string  `json:"key"`
	Issuer    string  `json:"issuer,omitempty"`
	PerSecond float64 `json:"perSecond"`
	Burst     uint32  `json:"burst"`
}

// RateLimitJSON is the JSON form of a decision's rate limit.
type RateLimitJSON struct {
	Key       string  `json:"key"`
	PerSecond float64 `json:"perSecond"`
	Burst     uint32  `json:"burst"`
}

// JSON converts d to its JSON form.
func (d *Decision) JSON() DecisionJSON {
	j := DecisionJSON{Allow: d.Allow, Rules: append([]string{}, d.Rules()...), Reason: d.Reason,
		Audit: d.Audit, DryRun: d.DryRun, DryRunRule: d.DryRunRule, Write: d.Write, Target: d.TargetDevice,
		Scope: d.Scope, UserRequired: d.UserRequired}
	if d.HasRateLimit {
		j.RateLimit = &RateLimitJSON{Key: d.RateLimitKey, PerSecond: d.RateLimit.PerSecond, Burst: d.RateLimit.Burst}
	}
	if d.HasCallerLimit {
		l := d.CallerLimit
		j.CallerLimit = &CallerLimitJSON{Rule: l.Rule, Per: l.Per, Key: l.Key, Issuer: l.Issuer, PerSecond: l.PerSecond, Burst: l.Burst}
	}
	if d.HasDryRunCallerLimit {
		l := d.DryRunCallerLimit
		j.DryRunCallerLimit = &CallerLimitJSON{Rule: l.Rule, Per: l.Per, Key: l.Key, Issuer: l.Issuer, PerSecond: l.PerSecond, Burst: l.Burst}
	}
	return j
}
