// Package policies implements the meshguard policy language: a versioned,
// multi-document YAML format parsed with file:line:col positions, a checker
// for semantic mistakes, and a compiler to an indexed Engine whose Decide
// method is allocation-free and safe for concurrent use, together with the
// canonical request-path procedure (CanonicalPath) every decision relies
// on. policies/README.md specifies the language and the decision. The same package
// builds for GOOS=wasip1 GOARCH=wasm and runs inside the guard filter, which
// loads engine images (UnmarshalEngine) only: the language front end (Parse,
// Check, Load, RunTests and their YAML and semver dependencies) is not built
// for wasip1, so it never weighs on the module.
package policies

import (
	"fmt"
	"time"
)

// APIVersion is the only apiVersion accepted by this engine.
const APIVersion = "meshguard.io/v1"

// Document kinds.
const (
	KindWorkloadPolicy = "WorkloadPolicy"
	KindVersionPolicy  = "VersionPolicy"
	KindDevicePolicy   = "DevicePolicy"
	KindRevocations    = "Revocations"
	KindTrustDomain    = "TrustDomain"
	KindPolicyTest     = "PolicyTest"
)

// (KindIssuer is declared with the end-user types in user.go.)

// Pos is a position in a policy file (1-based line and column).
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Effect is what a rule does when it matches.
type Effect uint8

// Rule effects.
const (
	Allow Effect = iota + 1
	Deny
)

func (e Effect) String() string {
	switch e {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "unknown"
}

// Set is a parsed policy set: every document of every file, in file-name
// then document order.
type Set struct {
	Workloads    []*WorkloadPolicy
	Versions     []*VersionPolicy
	Devices      []*DevicePolicy
	Revocations  []*Revocations
	TrustDomains []*TrustDomain
	Issuers      []*Issuer
	Tests        []*PolicyTest
	Upstreams    []*UpstreamVersionPolicy // the caller's side (upstream.go)
	Registries   []*DeviceRegistry
}

// Meta is the metadata shared by every document.
type Meta struct {
	Name   string
	DryRun bool
	Pos    Pos
}

// HeaderMatch is one header condition: the header must be present, or equal
// a value (names are case-insensitive, compared lower-cased).
type HeaderMatch struct {
	Name    string
	Equals  string
	Present bool // only presence is required (Equals empty)
	Pos     Pos
}

// Pattern is a SPIFFE ID or path pattern with its source position.
type Pattern struct {
	Text string
	Pos  Pos
}

// AccessRule is an allow or deny rule of a WorkloadPolicy or DevicePolicy.
type AccessRule struct {
	ID           string // <policy>/<rule> unless set explicitly
	Name         string
	Effect       Effect
	DryRun       bool
	Audit        bool
	Subjects     []Pattern // SPIFFE ID patterns; empty with no TrustDomains = any subject
	TrustDomains []Pattern // any workload of these trust domains
	Paths        []Pattern // empty = any path
	Methods      []string  // upper-case; empty = any method
	Headers      []HeaderMatch
	// End-user conditions (see policies/README.md): with any of them the
	// rule matches only a request with a verified end-user token whose
	// iss is one of Issuers (when given), whose claims satisfy every
	// condition of Claims and that grants every scope of Scopes.
	Issuers   []Pattern
	Scopes    []string
	Claims    []ClaimCondition
	Access    Access           // device rules only
	RateLimit *CallerRateLimit // allow rules only; nil: none
	Pos       Pos
}

// Caller rate limit keys (CallerRateLimit.Per).
const (
	PerWorkload = "workload" // the caller's SPIFFE ID
	PerDevice   = "device"   // the device token's id
	PerUser     = "user"     // the end-user token's issuer and subject
)

// CallerRateLimit is an allow rule's per-caller token bucket: Requests per
// Period, at most Burst at once, one bucket per rule and caller identity.
type CallerRateLimit struct {
	Per      string // PerWorkload, PerDevice or PerUser
	Requests uint32
	Period   time.Duration
	Burst    uint32 // Requests unless given
	Pos      Pos
}

// PerSecond is the bucket's refill rate.
func (l *CallerRateLimit) PerSecond() float64 { return float64(l.Requests) / l.Period.Seconds() }

// WorkloadPolicy controls which workloads may call which destinations.
type WorkloadPolicy struct {
	Meta
	Rules []*AccessRule
}

// VersionSource names where the caller's software version comes from.
type VersionSource struct {
	JWTClaim       string // a JWT-SVID claim, e.g. swversion
	DeviceFirmware bool   // the device's reported firmware (e.g. IEEE 2030.5 swVer)
	PeerLabel      bool   // the Istio peer metadata `version` label
	Header         string // a request header
	Pos            Pos
}

// VersionRule constrains the versions a subject workload or device class may run.
type VersionRule struct {
	ID            string
	Name          string
	DryRun        bool
	Subjects      []Pattern
	TrustDomains  []Pattern
	DeviceClasses []string
	Source        VersionSource
	Allowed       []AllowedRange // empty = any version
	Denied        []Pattern      // exact versions; with +build only that build
	Pos           Pos
}

// AllowedRange is one entry of a version rule's allowed list: a semver
// range that approves versions, until Until when that is set (a sunset:
// at and after Until the entry approves nothing).
type AllowedRange struct {
	Range    string
	Until    time.Time // zero: no sunset
	Pos      Pos       // of the range
	UntilPos Pos
}

// Sunset reports whether the entry has an until instant.
func (a AllowedRange) Sunset() bool { return !a.Until.IsZero() }

// VersionPolicy holds version rules.
type VersionPolicy struct {
	Meta
	Rules []*VersionRule
}

// Access is the access class of a device rule.
type Access uint8

// Device access classes.
const (
	AccessAny Access = iota
	AccessRead
	AccessWrite
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	}
	return "any"
}

// DeviceSelector selects devices; every non-empty field must match.
type DeviceSelector struct {
	IDs      []string // device ids, e.g. IEEE 2030.5 LFDIs (40 hex chars), lower-cased
	Classes  []string
	Vendors  []string
	Models   []string
	Firmware string // semver range
	Pos      Pos
}

// RateLimit is a per-device token bucket for writes.
type RateLimit struct {
	PerSecond float64
	Burst     uint32
}

// DeviceTarget says where a request names the device it acts on, so a
// device token can be bound to that device.
type DeviceTarget struct {
	Paths  []Pattern // path templates with exactly one {param} segment: the device id
	Header string    // a request header carrying the device id (lower-cased)
	Pos    Pos
}

// DevicePolicy controls reads and writes to IoT devices.
type DevicePolicy struct {
	Meta
	Devices      DeviceSelector
	Target       *DeviceTarget // nil: the policy names no target
	ControlPaths []Pattern     // paths that count as writes whatever the method
	WriteLimit   *RateLimit
	Rules        []*AccessRule
}

// Revocations lists revoked identities; they are checked before any allow.
type Revocations struct {
	Meta
	SPIFFEIDs []Pattern
	DeviceIDs []Pattern
	JTIs      []Pattern
}

// TrustDomain declares a known trust domain and its JWT bundle (JWKS JSON).
type TrustDomain struct {
	Meta
	JWKS []byte
}

// PolicyTest holds test cases: inputs and their expected decisions.
type PolicyTest struct {
	Meta
	Cases []*TestCase
}

// TestCase is one input and its expected decision.
type TestCase struct {
	Name   string
	Input  Input
	Expect Expect
	Pos    Pos
}

// Expect is the expected part of a decision; nil fields are not compared.
type Expect struct {
	Allow      *bool
	Rule       *string
	Reason     *string
	Audit      *bool
	DryRun     *bool
	DryRunRule *string
	Write      *bool
	RateLimit  *RateLimit
	// CallerLimit and DryRunCallerLimit are the rule ids of the decision's
	// caller limits ("" for none).
	CallerLimit       *string
	DryRunCallerLimit *string
}
