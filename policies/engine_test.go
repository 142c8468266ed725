package policies

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadGrid(t testing.TB) (*Set, *Engine) {
	t.Helper()
	files, err := ReadPaths("testdata/grid")
	require.NoError(t, err)
	s, err := Load(files)
	require.NoError(t, err)
	e, err := Compile(s)
	require.NoError(t, err)
	return s, e
}

func TestGridPolicyTests(t *testing.T) {
	s, e := loadGrid(t)
	results := RunTests(s, e)
	require.GreaterOrEqual(t, len(results), 20)
	for _, r := range results {
		assert.True(t, r.Passed, "%s: %v", r.Test, r.Failures)
	}
	// The runner must be able to fail: flip one expectation.
	c := s.Tests[0].Cases[0]
	flipped := !*c.Expect.Allow
	c.Expect.Allow = &flipped
	results = RunTests(s, e)
	require.False(t, results[0].Passed)
	require.Contains(t, results[0].Failures[0], "allow: want false, got true")
}

func TestGridJWKS(t *testing.T) {
	_, e := loadGrid(t)
	j, ok := e.JWKS("grid.example")
	require.True(t, ok)
	require.Contains(t, string(j), `"kid":"grid-2026-1"`)
	_, ok = e.JWKS("partner.example")
	require.False(t, ok, "declared without a bundle")
	require.ElementsMatch(t, []string{"grid.example", "partner.example"}, e.TrustDomains())
}

func mustEngine(t *testing.T, yaml string) *Engine {
	t.Helper()
	e, err := CompileFiles(map[string][]byte{"p.yaml": []byte(yaml)})
	require.NoError(t, err)
	return e
}

const docHdr = "apiVersion: meshguard.io/v1\n"

func TestWorkloadRules(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - name: exact
      effect: allow
      subjects: [spiffe://a.example/ns/x/sa/reader]
      paths: ["/v1/meters/{id}/readings", /v1/exact]
      methods: [GET]
    - name: glob
      effect: allow
      subjects: ["spiffe://a.example/ns/*/sa/billing"]
      paths: ["/v1/bills/**"]
    - name: td
      effect: allow
      trustDomains: [b.example]
      paths: [/public]
    - name: hdr
      effect: allow
      subjects: [spiffe://a.example/ns/x/sa/ops]
      headers:
        - {name: X-Role, equals: admin}
        - {name: x-ticket, present: true}
    - name: deny-debug
      effect: deny
      paths: ["/v1/bills/debug/**"]
      id: explicit-id
`)
	cases := []struct {
		name, id, method, path string
		hdrs                   Map
		allow                  bool
		rule                   string
	}{
		{"exact template", "spiffe://a.example/ns/x/sa/reader", "GET", "/v1/meters/m1/readings", nil, true, "w/exact"},
		{"query ignored", "spiffe://a.example/ns/x/sa/reader", "GET", "/v1/meters/m1/readings?from=1", nil, true, "w/exact"},
		{"template needs a segment", "spiffe://a.example/ns/x/sa/reader", "GET", "/v1/meters/readings", nil, false, ""},
		{"template depth", "spiffe://a.example/ns/x/sa/reader", "GET", "/v1/meters/m1/x/readings", nil, false, ""},
		{"exact path", "spiffe://a.example/ns/x/sa/reader", "GET", "/v1/exact", nil, true, "w/exact"},
		{"method mismatch", "spiffe://a.example/ns/x/sa/reader", "POST", "/v1/exact", nil, false, ""},
		{"other subject", "spiffe://a.example/ns/x/sa/readerx", "GET", "/v1/exact", nil, false, ""},
		{"glob subject prefix path", "spiffe://a.example/ns/finance/sa/billing", "DELETE", "/v1/bills/2026/11", nil, true, "w/glob"},
		{"prefix includes root", "spiffe://a.example/ns/finance/sa/billing", "GET", "/v1/bills", nil, true, "w/glob"},
		{"deny precedence", "spiffe://a.example/ns/finance/sa/billing", "GET", "/v1/bills/debug/x", nil, false, "explicit-id"},
		{"trust domain", "spiffe://b.example/anything/at/all", "GET", "/public", nil, true, "w/td"},
		{"trust domain other", "spiffe://c.example/anything", "GET", "/public", nil, false, ""},
		{"headers", "spiffe://a.example/ns/x/sa/ops", "GET", "/x", Map{"x-role": "admin", "x-ticket": ""}, true, "w/hdr"},
		{"header value", "spiffe://a.example/ns/x/sa/ops", "GET", "/x", Map{"x-role": "viewer", "x-ticket": "1"}, false, ""},
		{"header missing", "spiffe://a.example/ns/x/sa/ops", "GET", "/x", Map{"x-role": "admin"}, false, ""},
		{"no headers", "spiffe://a.example/ns/x/sa/ops", "GET", "/x", nil, false, ""},
		{"anonymous", "", "GET", "/public", nil, false, ""},
		{"custom method", "spiffe://a.example/ns/finance/sa/billing", "PURGE", "/v1/bills/1", nil, true, "w/glob"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d Decision
			req := &Request{SPIFFEID: c.id, Method: c.method, Path: c.path}
			if c.hdrs != nil {
				req.Headers = c.hdrs
			}
			e.Decide(req, &d)
			assert.Equal(t, c.allow, d.Allow, d.Reason)
			assert.Equal(t, c.rule, d.Rule())
			if !c.allow && c.rule == "" {
				assert.Equal(t, ReasonDefaultDeny, d.Reason)
			}
		})
	}
}

func TestDryRun(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: allow, effect: allow, paths: [/a/**]}
    - {name: trial-deny, effect: deny, dryRun: true, paths: [/a/secret]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: trial, dryRun: true}
spec:
  rules:
    - {name: open-b, effect: allow, paths: [/b]}
`)
	var d Decision
	e.Decide(&Request{Method: "GET", Path: "/a/secret"}, &d)
	assert.True(t, d.Allow)
	assert.True(t, d.DryRun)
	assert.Equal(t, "w/trial-deny", d.DryRunRule)
	assert.True(t, d.Audit)
	e.Decide(&Request{Method: "GET", Path: "/b"}, &d)
	assert.False(t, d.Allow)
	assert.True(t, d.DryRun)
	assert.Equal(t, "trial/open-b", d.DryRunRule)
	e.Decide(&Request{Method: "GET", Path: "/a/open"}, &d)
	assert.True(t, d.Allow)
	assert.False(t, d.DryRun)
	assert.False(t, d.Audit)
}

func TestVersionRules(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: all, effect: allow}
---
apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: v}
spec:
  rules:
    - name: peer
      subjects: [spiffe://a.example/ns/x/sa/ctl]
      source: {peerLabel: version}
      allowed: "^2.3.0 || ~1.9.2 || >=2.5.0-0 <2.6.0"
      denied: [2.4.1, 2.3.5+b731, 2.5.0-rc.1]
    - name: hdr
      trustDomains: [h.example]
      source: {header: x-sw-version}
      allowed: ">=1.0.0, !=1.2.0"
    - name: dry
      subjects: [spiffe://d.example/x]
      dryRun: true
      source: {jwtClaim: swversion}
      allowed: "<1.0.0"
`)
	cases := []struct {
		id, peer, header string
		allow            bool
		reason           string
	}{
		{"spiffe://a.example/ns/x/sa/ctl", "2.3.1", "", true, ReasonAllowRule},
		{"spiffe://a.example/ns/x/sa/ctl", "2.9.0", "", true, ReasonAllowRule},
		{"spiffe://a.example/ns/x/sa/ctl", "v2.9.0", "", false, ReasonVersionMissing},
		{"spiffe://a.example/ns/x/sa/ctl", "02.9.0", "", false, ReasonVersionMissing},
		{"spiffe://a.example/ns/x/sa/ctl", "2.9.0-rc.1", "", false, ReasonVersionRange},
		{"spiffe://a.example/ns/x/sa/ctl", "3.0.0", "", false, ReasonVersionRange},
		{"spiffe://a.example/ns/x/sa/ctl", "1.9.3", "", true, ReasonAllowRule},
		{"spiffe://a.example/ns/x/sa/ctl", "1.10.0", "", false, ReasonVersionRange},
		{"spiffe://a.example/ns/x/sa/ctl", "2.4.1", "", false, ReasonVersionDenied},
		{"spiffe://a.example/ns/x/sa/ctl", "2.4.1+b9", "", false, ReasonVersionDenied},
		{"spiffe://a.example/ns/x/sa/ctl", "2.3.5+b731", "", false, ReasonVersionDenied},
		{"spiffe://a.example/ns/x/sa/ctl", "2.3.5+b732", "", true, ReasonAllowRule},
		{"spiffe://a.example/ns/x/sa/ctl", "2.5.0-rc.1", "", false, ReasonVersionDenied},
		{"spiffe://a.example/ns/x/sa/ctl", "2.5.0-rc.2", "", true, ReasonAllowRule},
		{"spiffe://a.example/ns/x/sa/ctl", "", "", false, ReasonVersionMissing},
		{"spiffe://a.example/ns/x/sa/ctl", "latest", "", false, ReasonVersionMissing},
		{"spiffe://a.example/ns/x/sa/other", "", "", true, ReasonAllowRule},
		{"spiffe://h.example/x", "", "1.2.0", false, ReasonVersionRange},
		{"spiffe://h.example/x", "", "1.2.1", true, ReasonAllowRule},
		{"spiffe://d.example/x", "", "", true, ReasonAllowRule},
	}
	for _, c := range cases {
		var d Decision
		e.Decide(&Request{SPIFFEID: c.id, PeerVersion: c.peer, Headers: Map{"x-sw-version": c.header}, Method: "GET", Path: "/"}, &d)
		assert.Equal(t, c.allow, d.Allow, "%s %s %s", c.id, c.peer, c.header)
		assert.Equal(t, c.reason, d.Reason, "%s %s %s", c.id, c.peer, c.header)
	}
	var d Decision
	e.Decide(&Request{SPIFFEID: "spiffe://d.example/x", Method: "GET", Path: "/"}, &d)
	assert.True(t, d.DryRun)
	assert.Equal(t, "v/dry", d.DryRunRule)
}

func TestRevocationsBeforeAllow(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: all, effect: allow}
---
apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: rev}
spec:
  spiffeIDs: [spiffe://a.example/bad]
  deviceIDs: [ABCDEF0123456789ABCDEF0123456789ABCDEF01]
  jtis: [j-1]
`)
	for _, c := range []struct {
		req    Request
		reason string
	}{
		{Request{SPIFFEID: "spiffe://a.example/bad"}, ReasonRevokedID},
		{Request{DeviceID: "abcdef0123456789abcdef0123456789abcdef01"}, ReasonRevokedDevice},
		{Request{DeviceID: "ABCDEF0123456789ABCDEF0123456789ABCDEF01"}, ReasonRevokedDevice},
		{Request{SPIFFEID: "spiffe://a.example/good", JTI: "j-1"}, ReasonRevokedJTI},
	} {
		var d Decision
		c.req.Method, c.req.Path = "GET", "/"
		e.Decide(&c.req, &d)
		assert.False(t, d.Allow)
		assert.Equal(t, c.reason, d.Reason)
		assert.Equal(t, "rev", d.Rule())
		assert.True(t, d.Audit)
	}
	var d Decision
	e.Decide(&Request{SPIFFEID: "spiffe://a.example/good", JTI: "j-2", Method: "GET", Path: "/"}, &d)
	assert.True(t, d.Allow)
}

func TestDeviceRules(t *testing.T) {
	_, e := loadGrid(t)
	ctl := "spiffe://grid.example/ns/der/sa/controller"
	claims := Map{"swversion": "2.3.1"}
	for _, c := range []struct {
		name          string
		req           Request
		allow, write  bool
		limitKey      string
		rule, comment string
	}{
		{"write by method", Request{SPIFFEID: ctl, Claims: claims, DeviceID: "inv-1", DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: "3.1.0", Method: "POST", Path: "/v1/inverters/inv-1/mode"}, true, true, "inv-1", "inverters/controller-write", ""},
		{"vendor not selected", Request{SPIFFEID: ctl, Claims: claims, DeviceID: "inv-1", DeviceClass: "inverter", DeviceVendor: "other", DeviceFirmware: "3.1.0", Method: "POST", Path: "/v1/inverters/inv-1/mode"}, false, true, "", "", ""},
		{"read rule does not grant write", Request{SPIFFEID: "spiffe://grid.example/ns/metering/sa/meter-reader", DeviceID: "inv-1", DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: "3.1.0", Method: "PUT", Path: "/v1/inverters/inv-1/status"}, false, true, "", "", ""},
		{"write rule does not grant read", Request{SPIFFEID: "spiffe://grid.example/ns/billing/sa/billing", DeviceID: "3e4f45ab31edfe5b67e343e5e4562e31984e23e5", DeviceClass: "meter", Method: "GET", Path: "/v1/meters/x/disconnect"}, false, false, "", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d Decision
			e.Decide(&c.req, &d)
			assert.Equal(t, c.allow, d.Allow, d.Reason)
			assert.Equal(t, c.write, d.Write)
			assert.Equal(t, c.rule, d.Rule())
			assert.Equal(t, c.limitKey != "", d.HasRateLimit)
			assert.Equal(t, c.limitKey, d.RateLimitKey)
			if c.write {
				assert.True(t, d.Audit, "writes are always audited")
			}
		})
	}
}

// TestDecideAllocs pins the allocation-free request path (a count, not a timing).
func TestDecideAllocs(t *testing.T) {
	s, e := loadGrid(t)
	var reqs []*Request
	for _, tc := range s.Tests[0].Cases {
		reqs = append(reqs, tc.Input.Request())
	}
	var d Decision
	for _, r := range reqs {
		allocs := testing.AllocsPerRun(200, func() { e.Decide(r, &d) })
		assert.Zero(t, allocs, "%+v", r)
	}
}

func TestConcurrentDecide(t *testing.T) {
	s, e := loadGrid(t)
	want := RunTests(s, e)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				for k, tc := range s.Tests[0].Cases {
					var d Decision
					e.Decide(tc.Input.Request(), &d)
					if d.Allow != want[k].Decision.Allow || d.Rule() != want[k].Decision.Rule() {
						t.Errorf("%s: concurrent decision differs", tc.Name)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestBuildsForWasip1 builds the package for proxies: the engine (image
// loading and decisions) without the policy language front end, whose YAML
// parser and checker are not built for wasip1.
func TestBuildsForWasip1(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with the go tool")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, args := range [][]string{{"build", "-o", os.DevNull, "."}, {"list", "-deps", "."}} {
		cmd := exec.Command(gobin, args...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "GOOS=wasip1 GOARCH=wasm go %v:\n%s", args, out)
		if args[0] == "list" {
			for _, forbidden := range []string{"go.yaml.in/yaml/v3", "github.com/Masterminds/semver/v3", "regexp", "net"} {
				assert.NotContains(t, strings.Fields(string(out)), forbidden)
			}
		}
	}
}

func TestTrustDomainOnlyRequest(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: td, effect: allow, trustDomains: [b.example], paths: [/public]}
    - {name: exact, effect: allow, subjects: [spiffe://b.example/x], paths: [/private]}
`)
	var d Decision
	e.Decide(&Request{TrustDomain: "b.example", Method: "GET", Path: "/public"}, &d)
	assert.True(t, d.Allow)
	e.Decide(&Request{TrustDomain: "b.example", Method: "GET", Path: "/private"}, &d)
	assert.False(t, d.Allow)
	e.Decide(&Request{TrustDomain: "c.example", Method: "GET", Path: "/public"}, &d)
	assert.False(t, d.Allow)
}
