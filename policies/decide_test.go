package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func filesEngine(t *testing.T, files map[string]string) *Engine {
	t.Helper()
	m := map[string][]byte{}
	for k, v := range files {
		m[k] = []byte(v)
	}
	e, err := CompileFiles(m)
	require.NoError(t, err)
	return e
}

// decideCase is one request and the parts of its decision a test pins.
type decideCase struct {
	name   string
	req    Request
	allow  bool
	rule   string // "" = no deciding rule
	reason string // "" = not compared
	audit  *bool
	write  *bool
	dryRun string // the dry-run rule, "" = none
	key    string // rate-limit key, "" = no rate limit
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func runCases(t *testing.T, e *Engine, cases []decideCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d Decision
			e.Decide(&c.req, &d)
			assert.Equal(t, c.allow, d.Allow, "reason: %s", d.Reason)
			assert.Equal(t, c.rule, d.Rule(), "reason: %s", d.Reason)
			if c.reason != "" {
				assert.Equal(t, c.reason, d.Reason)
			}
			if c.audit != nil {
				assert.Equal(t, *c.audit, d.Audit, "audit")
			}
			if c.write != nil {
				assert.Equal(t, *c.write, d.Write, "write")
			}
			assert.Equal(t, c.dryRun != "", d.DryRun, "dryRun (rule %q)", d.DryRunRule)
			assert.Equal(t, c.dryRun, d.DryRunRule)
			assert.Equal(t, c.key != "", d.HasRateLimit, "rate limit")
			assert.Equal(t, c.key, d.RateLimitKey)
			// Explain decides the same way.
			var x Decision
			e.Explain(&c.req, &x)
			assert.Equal(t, d, x, "Explain and Decide differ")
		})
	}
}

const ctl = "spiffe://grid.example/ns/der/sa/controller"

// TestRuleOrderAcrossKinds: the earliest matching rule in file, then
// document order is reported whatever its kind, with its audit flag.
func TestRuleOrderAcrossKinds(t *testing.T) {
	e := filesEngine(t, map[string]string{
		"a-devices.yaml": docHdr + `kind: DevicePolicy
metadata: {name: inverters}
spec:
  devices: {classes: [inverter]}
  rules:
    - {name: status, effect: allow, access: read, audit: true, subjects: ["` + ctl + `"], paths: ["/v1/inverters/{id}/status"]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: same-file}
spec:
  rules:
    - {name: status-too, effect: allow, subjects: ["` + ctl + `"], paths: ["/v1/inverters/{id}/status"]}
`,
		"b-workloads.yaml": docHdr + `kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: any-inverter, effect: allow, subjects: ["` + ctl + `"], paths: ["/v1/inverters/**"]}
    - {name: plain, effect: allow, subjects: ["` + ctl + `"], paths: ["/v1/other"]}
    - {name: later-audited, effect: allow, audit: true, subjects: ["` + ctl + `"], paths: ["/v1/other/**"]}
`,
		"c-devices.yaml": docHdr + `kind: DevicePolicy
metadata: {name: late}
spec:
  devices: {classes: [inverter]}
  rules:
    - {name: info, effect: allow, access: read, subjects: ["` + ctl + `"], paths: ["/v1/inverters/{id}/info"]}
`,
	})
	dev := Request{SPIFFEID: ctl, DeviceID: "inv-1", DeviceClass: "inverter", Method: "GET"}
	with := func(p string) Request { r := dev; r.Path = p; return r }
	runCases(t, e, []decideCase{
		{name: "device rule in an earlier file wins and keeps audit", req: with("/v1/inverters/inv-1/status"), allow: true, rule: "inverters/status", audit: yes()},
		{name: "workload rule in an earlier file than the device rule", req: with("/v1/inverters/inv-1/info"), allow: true, rule: "w/any-inverter", audit: no()},
		{name: "a later matching rule's audit is kept", req: Request{SPIFFEID: ctl, Method: "GET", Path: "/v1/other"}, allow: true, rule: "w/plain", audit: yes()},
	})
}

// TestDryRunSemantics: dry-run rules and dry-run Revocations never change a
// decision; dryRun is set exactly when enforcing them would flip it.
func TestDryRunSemantics(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: open, effect: allow, paths: [/open/**]}
    - {name: trial-allow, effect: allow, dryRun: true, paths: [/closed/**]}
    - {name: trial-deny, effect: deny, dryRun: true, paths: [/closed/both]}
---
apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: trial-revocations, dryRun: true}
spec:
  spiffeIDs: [spiffe://a.example/suspect]
  deviceIDs: [DEV-1]
  jtis: [j-7]
`)
	runCases(t, e, []decideCase{
		{name: "dry-run revoked caller is allowed, flagged", req: Request{SPIFFEID: "spiffe://a.example/suspect", Method: "GET", Path: "/open/x"},
			allow: true, rule: "w/open", dryRun: "trial-revocations", audit: yes()},
		{name: "dry-run revoked jti", req: Request{JTI: "j-7", Method: "GET", Path: "/open/x"}, allow: true, rule: "w/open", dryRun: "trial-revocations"},
		{name: "dry-run revoked device (any case)", req: Request{DeviceID: "dev-1", Method: "GET", Path: "/open/x"}, allow: true, rule: "w/open", dryRun: "trial-revocations"},
		{name: "dry-run allow would allow", req: Request{Method: "GET", Path: "/closed/x"}, allow: false, reason: ReasonDefaultDeny, dryRun: "w/trial-allow", audit: yes()},
		{name: "dry-run allow and dry-run deny: no change", req: Request{Method: "GET", Path: "/closed/both"}, allow: false, reason: ReasonDefaultDeny, audit: no()},
		{name: "dry-run allow but dry-run revoked: no change", req: Request{SPIFFEID: "spiffe://a.example/suspect", Method: "GET", Path: "/closed/x"}, allow: false, audit: no()},
		{name: "nothing dry-run", req: Request{Method: "GET", Path: "/open/y"}, allow: true, rule: "w/open", audit: no()},
	})
}

const devicePolicies = docHdr + `kind: DevicePolicy
metadata: {name: inverters}
spec:
  devices: {classes: [inverter]}
  target: {paths: ["/v1/inverters/{id}/**"], header: x-device-id}
  controlPaths: ["/v1/inverters/{id}/control/**"]
  rules:
    - {name: read, effect: allow, access: read, subjects: ["` + ctl + `"], paths: ["/v1/inverters/{id}/**"]}
    - {name: write, effect: allow, access: write, subjects: ["` + ctl + `"], paths: ["/v1/inverters/{id}/setpoint", "/v1/inverters/{id}/control/**"]}
---
apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: voltwerk-limit}
spec:
  devices: {vendors: [voltwerk]}
  writeRateLimit: {perSecond: 1, burst: 3}
  rules: []
---
apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: meters}
spec:
  devices: {ids: [3E4F45AB31EDFE5B67E343E5E4562E31984E23E5]}
  writeRateLimit: {perSecond: 0.5, burst: 1}
  rules:
    - {name: disconnect, effect: allow, access: write, paths: ["/v1/meters/{id}/disconnect"]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: ops-anything, effect: allow, subjects: [spiffe://grid.example/ns/ops/sa/admin]}
    - {name: no-debug, effect: deny, paths: ["/v1/inverters/{id}/setpoint/debug"]}
---
apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: rev}
spec:
  spiffeIDs: [spiffe://grid.example/ns/scada/sa/legacy]
  deviceIDs: [INV-666]
  jtis: [leaked]
`

// TestDeviceBinding: a device token attests one device, bound to the device
// the request names; the target keys revocation, selection and the limit.
func TestDeviceBinding(t *testing.T) {
	e := mustEngine(t, devicePolicies)
	tok := func(id, method, path string) Request {
		return Request{SPIFFEID: ctl, DeviceID: id, DeviceClass: "inverter", DeviceVendor: "voltwerk", Method: method, Path: path}
	}
	hdr := tok("inv-1", "POST", "/v1/inverters/inv-1/setpoint")
	hdr.Headers = Map{"x-device-id": "INV-1"}
	hdrOther := hdr
	hdrOther.Headers = Map{"x-device-id": "inv-2"}
	hdrEmpty := hdr
	hdrEmpty.Headers = Map{"x-device-id": ""}
	explicit := tok("inv-1", "POST", "/v1/inverters/inv-1/setpoint")
	explicit.TargetDeviceID = "inv-9"
	noToken := Request{SPIFFEID: ctl, Method: "POST", Path: "/v1/inverters/inv-1/setpoint"}
	classOnly := Request{SPIFFEID: ctl, DeviceClass: "inverter", Method: "GET", Path: "/v1/inverters/inv-1/status"}
	runCases(t, e, []decideCase{
		{name: "own device", req: tok("inv-1", "POST", "/v1/inverters/inv-1/setpoint"), allow: true, rule: "inverters/write", write: yes(), audit: yes(), key: "inv-1"},
		{name: "token id case differs from the path", req: tok("INV-1", "POST", "/v1/inverters/inv-1/setpoint"), allow: true, rule: "inverters/write", key: "INV-1"},
		{name: "another device's token", req: tok("inv-1", "POST", "/v1/inverters/inv-2/setpoint"), reason: ReasonTargetMismatch, write: yes(), audit: yes()},
		{name: "target without a device token", req: noToken, reason: ReasonTargetNoToken, write: yes(), audit: yes()},
		{name: "class-only token cannot attest a target", req: classOnly, reason: ReasonTargetNoToken, write: no()},
		{name: "header agrees (any case)", req: hdr, allow: true, rule: "inverters/write", key: "inv-1"},
		{name: "header names another device", req: hdrOther, reason: ReasonTargetConflict},
		{name: "empty header target", req: hdrEmpty, reason: ReasonTargetEmpty},
		{name: "explicit target disagrees", req: explicit, reason: ReasonTargetConflict},
		{name: "revoked target device, token in another case", req: tok("inv-666", "GET", "/v1/inverters/INV-666/status"), rule: "rev", reason: ReasonRevokedDevice, write: no(), audit: yes()},
		{name: "revoked device write reports write", req: tok("inv-666", "POST", "/v1/inverters/inv-666/setpoint"), rule: "rev", write: yes()},
		{name: "too long device id", req: tok(string(make([]byte, 129)), "GET", "/v1/x"), reason: ReasonDeviceIDTooLong},
		{name: "control path is a write even with GET", req: tok("inv-1", "GET", "/v1/inverters/inv-1/control/trip"), allow: true, rule: "inverters/write", write: yes(), key: "inv-1"},
		{name: "workload deny still denies a device write", req: tok("inv-1", "POST", "/v1/inverters/inv-1/setpoint/debug"), rule: "w/no-debug", write: yes(), audit: yes()},
		{name: "meter by LFDI in any case, limit of its own policy", req: Request{DeviceID: "3e4f45ab31edfe5b67e343e5e4562e31984e23e5", Method: "POST", Path: "/v1/meters/x/disconnect"},
			allow: true, rule: "meters/disconnect", key: "3e4f45ab31edfe5b67e343e5e4562e31984e23e5"},
	})
}

// TestDeviceWritesLeastPrivilege: a workload allow never allows a device
// write, with or without a device token.
func TestDeviceWritesLeastPrivilege(t *testing.T) {
	e := mustEngine(t, devicePolicies)
	admin := "spiffe://grid.example/ns/ops/sa/admin"
	runCases(t, e, []decideCase{
		{name: "workload allow-all cannot write a device", req: Request{SPIFFEID: admin, DeviceID: "inv-1", DeviceClass: "inverter", Method: "POST", Path: "/v1/inverters/inv-1/setpoint"},
			reason: ReasonDefaultDeny, write: yes(), audit: yes()},
		{name: "nor a control path without a token or target", req: Request{SPIFFEID: admin, Method: "GET", Path: "/v1/inverters/inv-1/control/trip"},
			reason: ReasonTargetNoToken, write: yes()},
		{name: "workload allow still allows a device read", req: Request{SPIFFEID: admin, DeviceID: "inv-1", DeviceClass: "inverter", Method: "GET", Path: "/v1/inverters/inv-1/status"},
			allow: true, rule: "w/ops-anything", write: no(), audit: no()},
		{name: "and non-device writes", req: Request{SPIFFEID: admin, Method: "POST", Path: "/v1/reports"}, allow: true, rule: "w/ops-anything", write: no()},
		{name: "a device token makes any unsafe method a device write", req: Request{SPIFFEID: admin, DeviceID: "inv-1", DeviceClass: "inverter", Method: "POST", Path: "/v1/reports"},
			reason: ReasonDefaultDeny, write: yes()},
		{name: "lower-case method is not GET: a write", req: Request{SPIFFEID: ctl, DeviceID: "inv-1", DeviceClass: "inverter", Method: "get", Path: "/v1/inverters/inv-1/status"},
			reason: ReasonDefaultDeny, write: yes()},
	})
}

// TestIdentities: revocations and version rules look at every identity;
// two identities are one caller only through a trusted forwarder.
func TestIdentities(t *testing.T) {
	e := mustEngine(t, devicePolicies+`---
apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: v}
spec:
  rules:
    - {name: gateway, subjects: [spiffe://grid.example/ns/edge/sa/gateway], source: {peerLabel: version}, allowed: ">=1.20.0"}
`)
	admin := "spiffe://grid.example/ns/ops/sa/admin"
	gw := "spiffe://grid.example/ns/edge/sa/gateway"
	runCases(t, e, []decideCase{
		{name: "revoked peer with another's token", req: Request{SPIFFEID: admin, PeerID: "spiffe://grid.example/ns/scada/sa/legacy", Method: "GET", Path: "/x"},
			rule: "rev", reason: ReasonRevokedPeer, audit: yes()},
		{name: "revoked peer even through a forwarder flag", req: Request{SPIFFEID: admin, PeerID: "spiffe://grid.example/ns/scada/sa/legacy", Forwarded: true, Method: "GET", Path: "/x"},
			rule: "rev", reason: ReasonRevokedPeer},
		{name: "revoked caller", req: Request{SPIFFEID: "spiffe://grid.example/ns/scada/sa/legacy", Method: "GET", Path: "/x"}, rule: "rev", reason: ReasonRevokedID},
		{name: "revoked jti", req: Request{SPIFFEID: admin, JTI: "leaked", Method: "GET", Path: "/x"}, rule: "rev", reason: ReasonRevokedJTI},
		{name: "peer and token differ", req: Request{SPIFFEID: admin, PeerID: "spiffe://grid.example/ns/billing/sa/billing", Method: "GET", Path: "/x"},
			reason: ReasonIdentityConflict, audit: yes()},
		{name: "peer equals token", req: Request{SPIFFEID: admin, PeerID: admin, Method: "GET", Path: "/x"}, allow: true, rule: "w/ops-anything"},
		{name: "peer only is the caller", req: Request{PeerID: admin, Method: "GET", Path: "/x"}, allow: true, rule: "w/ops-anything"},
		{name: "forwarder's version rule applies", req: Request{SPIFFEID: admin, PeerID: gw, Forwarded: true, PeerVersion: "1.19.0", Method: "GET", Path: "/x"},
			rule: "v/gateway", reason: ReasonVersionRange, audit: yes()},
		{name: "forwarder at an approved version", req: Request{SPIFFEID: admin, PeerID: gw, Forwarded: true, PeerVersion: "1.21.0", Method: "GET", Path: "/x"},
			allow: true, rule: "w/ops-anything"},
	})
}

// TestDecidePaths: Decide refuses a path that is not canonical.
func TestDecidePaths(t *testing.T) {
	e := mustEngine(t, devicePolicies)
	admin := "spiffe://grid.example/ns/ops/sa/admin"
	for path, reason := range map[string]string{
		"/v1/./admin": ErrPathDotSegment.Error(), "/v1//admin": ErrPathEmptySegment.Error(), "/v1/%61dmin": ErrPathEncodedChar.Error(),
		"/v1%2Fadmin": ErrPathEncodedSlash.Error(), "v1/admin": ErrPathNotAbsolute.Error(), "": ErrPathEmpty.Error(),
	} {
		var d Decision
		e.Decide(&Request{SPIFFEID: admin, Method: "GET", Path: path}, &d)
		assert.False(t, d.Allow, path)
		assert.Equal(t, reason, d.Reason, path)
		assert.True(t, d.Audit, path)
	}
	var d Decision
	e.Decide(&Request{SPIFFEID: admin, Method: "GET", Path: "/v1/admin?x=/../%zz"}, &d)
	assert.True(t, d.Allow, "the query is not part of the path")
}

// TestExplain says why rules, device policies and version rules did not
// apply.
func TestExplain(t *testing.T) {
	_, e := loadGrid(t)
	var d Decision
	x := e.Explain(&Request{SPIFFEID: ctl, Claims: Map{"swversion": "2.4.1"}, DeviceID: "inv-0042", DeviceClass: "inverter",
		DeviceVendor: "other", DeviceFirmware: "3.2.0", Method: "PUT", Path: "/v1/inverters/inv-0042/setpoint"}, &d)
	assert.False(t, d.Allow)
	require.NotEmpty(t, x.DevicePolicies)
	assert.Equal(t, DeviceExplanation{Policy: "inverters", Why: `device vendor "other" is not in ["voltwerk" "sunbridge"]`}, x.DevicePolicies[0])
	assert.Contains(t, x.VersionRules, VersionCheck{Rule: "der-controller-versions/controller-releases", Version: "2.4.1", Result: ReasonVersionDenied})
	assert.Contains(t, x.VersionRules, VersionCheck{Rule: "der-controller-versions/inverter-firmware", Version: "3.2.0", Result: "ok"})
	assert.True(t, x.Write)
	assert.Equal(t, "inv-0042", x.TargetDevice)

	x = e.Explain(&Request{SPIFFEID: "spiffe://grid.example/ns/metering/sa/meter-reader", Method: "POST", Path: "/v1/meters/m-1/readings"}, &d)
	assert.Contains(t, x.Rules, RuleCheck{Rule: "meter-api/readers-read", Effect: "allow", Why: `method "POST" is not one the rule names`})
	assert.Contains(t, x.Rules, RuleCheck{Rule: "meter-api/maintenance-header", Effect: "deny", Why: "a header condition does not hold"})
}

// TestDryRunDevicePolicy: a dry-run DevicePolicy changes no decision: its
// rules are dry-run and its target, control paths and rate limit do not
// apply.
func TestDryRunDevicePolicy(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: DevicePolicy
metadata: {name: trial, dryRun: true}
spec:
  devices: {classes: [inverter]}
  target: {paths: ["/v1/inverters/{id}/**"]}
  controlPaths: ["/v1/inverters/{id}/trip"]
  writeRateLimit: {perSecond: 1, burst: 1}
  rules:
    - {name: w, effect: allow, access: write, paths: ["/v1/inverters/{id}/**"]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: reads, effect: allow, methods: [GET]}
`)
	runCases(t, e, []decideCase{
		{name: "no binding from a dry-run target", req: Request{Method: "GET", Path: "/v1/inverters/inv-1/status"}, allow: true, rule: "w/reads", write: no()},
		{name: "no write from a dry-run control path", req: Request{Method: "GET", Path: "/v1/inverters/inv-1/trip"}, allow: true, rule: "w/reads", write: no()},
		{name: "its write rule is dry-run", req: Request{DeviceID: "inv-1", DeviceClass: "inverter", Method: "POST", Path: "/v1/inverters/inv-1/x"},
			reason: ReasonDefaultDeny, write: yes(), dryRun: "trial/w", audit: yes()},
	})
}

// TestPathPatternEdges: trailing slashes, the root and anonymous callers
// as the README states them.
func TestPathPatternEdges(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: tree, effect: allow, subjects: [spiffe://a.example/x], paths: ["/a/**"]}
    - {name: one, effect: allow, subjects: [spiffe://a.example/y], paths: ["/a/{id}"]}
    - {name: slash, effect: allow, subjects: [spiffe://a.example/y], paths: ["/b/"]}
    - {name: root, effect: allow, subjects: [spiffe://a.example/y], paths: ["/"]}
    - {name: td, effect: allow, trustDomains: [t.example], paths: ["/t"]}
    - {name: prefix, effect: allow, subjects: [spiffe://a.example/ns/**], paths: ["/p"]}
`)
	x, y := "spiffe://a.example/x", "spiffe://a.example/y"
	runCases(t, e, []decideCase{
		{name: "** covers the trailing slash", req: Request{SPIFFEID: x, Method: "GET", Path: "/a/"}, allow: true, rule: "w/tree"},
		{name: "** covers the prefix itself", req: Request{SPIFFEID: x, Method: "GET", Path: "/a"}, allow: true, rule: "w/tree"},
		{name: "{id} never matches an empty segment", req: Request{SPIFFEID: y, Method: "GET", Path: "/a/"}, reason: ReasonDefaultDeny},
		{name: "{id} matches one segment", req: Request{SPIFFEID: y, Method: "GET", Path: "/a/1"}, allow: true, rule: "w/one"},
		{name: "literal trailing slash", req: Request{SPIFFEID: y, Method: "GET", Path: "/b/"}, allow: true, rule: "w/slash"},
		{name: "without it", req: Request{SPIFFEID: y, Method: "GET", Path: "/b"}, reason: ReasonDefaultDeny},
		{name: "root", req: Request{SPIFFEID: y, Method: "GET", Path: "/?q=1"}, allow: true, rule: "w/root"},
		{name: "trust domain only", req: Request{TrustDomain: "t.example", Method: "GET", Path: "/t"}, allow: true, rule: "w/td"},
		{name: "the trust domain ID itself", req: Request{SPIFFEID: "spiffe://t.example", Method: "GET", Path: "/t"}, allow: true, rule: "w/td"},
		{name: "not a SPIFFE ID is anonymous", req: Request{SPIFFEID: "t.example", Method: "GET", Path: "/t"}, reason: ReasonDefaultDeny},
		{name: "/** prefix includes itself", req: Request{SPIFFEID: "spiffe://a.example/ns", Method: "GET", Path: "/p"}, allow: true, rule: "w/prefix"},
	})
}
