package policies

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func roundTrip(t testing.TB, e *Engine) (*Engine, []byte) {
	t.Helper()
	img, err := MarshalEngine(e)
	require.NoError(t, err)
	d, err := UnmarshalEngine(img)
	require.NoError(t, err)
	again, err := MarshalEngine(d)
	require.NoError(t, err)
	require.Equal(t, img, again, "an image is stable under a round trip")
	return d, img
}

func TestImageGridPolicyTests(t *testing.T) {
	s, e := loadGrid(t)
	d, _ := roundTrip(t, e)
	assert.Equal(t, e.Counts(), d.Counts())
	assert.ElementsMatch(t, e.TrustDomains(), d.TrustDomains())
	for _, r := range RunTests(s, d) {
		assert.True(t, r.Passed, "%s: %v", r.Test, r.Failures)
	}
}

// TestImageDecisionsMatch compares every decision of the compiled and the
// loaded engine over a request corpus built from the grid tests, varied.
func TestImageDecisionsMatch(t *testing.T) {
	s, e := loadGrid(t)
	d, _ := roundTrip(t, e)
	n := 0
	for _, tc := range s.Tests {
		for _, c := range tc.Cases {
			for _, method := range []string{"", "GET", "POST", "DELETE", "BREW"} {
				for _, suffix := range []string{"", "/x", "/../y", "?q=1"} {
					req := c.Input.Request()
					if method != "" {
						req.Method = method
					}
					req.Path += suffix
					var a, b Decision
					e.Decide(req, &a)
					d.Decide(req, &b)
					require.Equal(t, a, b, "%s/%s %s %s", tc.Name, c.Name, req.Method, req.Path)
					n++
				}
			}
		}
	}
	assert.GreaterOrEqual(t, n, 400)
}

func TestImageLargeSet(t *testing.T) {
	e := compileBulk(t, 2000)
	d, img := roundTrip(t, e)
	req := &Request{SPIFFEID: "spiffe://grid.example/ns/bulk/sa/w1999", Method: "GET", Path: "/v1/bulk/1999/x"}
	var dec Decision
	d.Decide(req, &dec)
	assert.True(t, dec.Allow)
	assert.Equal(t, "bulk/r1999", dec.Rule())
	req.Path = "/v1/bulk/1998/x"
	d.Decide(req, &dec)
	assert.False(t, dec.Allow)
	t.Logf("2000 rules: %d bytes", len(img))
}

func compileBulk(t testing.TB, n int) *Engine {
	var sb strings.Builder
	sb.WriteString("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata:\n  name: bulk\nspec:\n  rules:\n")
	for i := range n {
		fmt.Fprintf(&sb, "    - name: r%d\n      effect: allow\n      subjects: [spiffe://grid.example/ns/bulk/sa/w%d]\n      paths: [/v1/bulk/%d/**]\n      methods: [GET]\n", i, i, i)
	}
	s, errs := Parse(map[string][]byte{"bulk.yaml": []byte(sb.String())})
	require.Empty(t, errs)
	e, err := Compile(s)
	require.NoError(t, err)
	return e
}

func TestImageRejectsDamage(t *testing.T) {
	_, e := loadGrid(t)
	img, err := MarshalEngine(e)
	require.NoError(t, err)
	// Every truncation is an error, never a panic.
	for i := range len(img) {
		_, err := UnmarshalEngine(img[:i])
		require.ErrorIs(t, err, ErrImage, "truncated at %d", i)
	}
	cases := map[string][]byte{
		"no magic":                          []byte("MGENGINX" + string(img[8:])),
		"future version":                    append([]byte(ImageMagic+"\x05"), img[9:]...),
		"v3 (no users, no upstream tables)": append([]byte(ImageMagic+"\x03"), img[9:]...),
		"old version":                       append([]byte(ImageMagic+"\x01"), img[9:]...),
		"v2 (no sunsets)":                   append([]byte(ImageMagic+"\x02"), img[9:]...),
		"trailing byte":                     append(append([]byte(nil), img...), 0),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := UnmarshalEngine(b)
			require.ErrorIs(t, err, ErrImage)
			if b[8] != img[8] {
				// Another format version says so and how to get a loadable one.
				require.ErrorContains(t, err, fmt.Sprintf("format version %d, this engine reads version 4 only: rebuild the bundle", b[8]))
			}
		})
	}
	// Flipping single bytes either fails cleanly or yields an engine that
	// still decides without panicking.
	req := &Request{SPIFFEID: "spiffe://grid.example/ns/metering/sa/meter-reader", Method: "GET", Path: "/v1/meters/1/readings",
		DeviceID: "inv-1", DeviceClass: "inverter", Headers: Map{}, Claims: Map{}}
	for i := len(ImageMagic) + 1; i < len(img); i++ {
		b := append([]byte(nil), img...)
		b[i] ^= 0x5a
		if d, err := UnmarshalEngine(b); err == nil {
			var dec Decision
			d.Decide(req, &dec)
		}
	}
}

func FuzzUnmarshalEngine(f *testing.F) {
	for _, dir := range []string{"testdata/grid", "testdata/sunsets", "testdata/callerlimits", "testdata/upstream", "testdata/users"} {
		files, err := ReadPaths(dir)
		require.NoError(f, err)
		s, err := Load(files)
		require.NoError(f, err)
		e, err := Compile(s)
		require.NoError(f, err)
		img, err := MarshalEngine(e)
		require.NoError(f, err)
		f.Add(img)
	}
	reqs := []*Request{
		{SPIFFEID: "spiffe://grid.example/ns/a/sa/b", Method: "GET", Path: "/v1/x/y", Headers: Map{}, Claims: Map{}},
		{DeviceID: "inv-1", DeviceClass: "inverter", DeviceFirmware: "1.2.3", Method: "POST", Path: "/", JTI: "j"},
		{TrustDomain: "grid.example", Method: "PUT", Path: "/v1/inverters/inv-7/setpoint"},
		{SPIFFEID: "spiffe://grid.example/ns/istio-system/sa/ingress-gateway", Method: "POST", Path: "/api/v1/meters/m1",
			User: NewUser(map[string]any{"iss": "https://idp.utility.example", "scope": "meter:write", "groups": []any{"operators"}, "tenant": "north"})},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := UnmarshalEngine(data)
		if err != nil {
			require.ErrorIs(t, err, ErrImage)
			return
		}
		for _, r := range reqs {
			var d Decision
			e.Decide(r, &d)
		}
		for _, r := range upstreamReqs {
			var d UpstreamDecision
			e.DecideUpstream(&r, &d)
		}
		img, err := MarshalEngine(e)
		require.NoError(t, err)
		_, err = UnmarshalEngine(img)
		require.NoError(t, err)
	})
}

// BenchmarkUnmarshalEngine loads a 10k-rule image:
// go test ./policies -run '^$' -bench UnmarshalEngine -benchmem
func BenchmarkUnmarshalEngine(b *testing.B) {
	e := compileBulk(b, 10000)
	img, err := MarshalEngine(e)
	require.NoError(b, err)
	b.ReportMetric(float64(len(img)), "image-bytes")
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		if _, err := UnmarshalEngine(img); err != nil {
			b.Fatal(err)
		}
	}
}

// TestImageBindingTables round-trips the tables device binding, control
// paths, dry-run revocations and wildcard ranges use, and compares
// decisions over requests that exercise them.
func TestImageBindingTables(t *testing.T) {
	e := mustEngine(t, devicePolicies+`---
apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: trial, dryRun: true}
spec:
  spiffeIDs: [spiffe://grid.example/ns/ops/sa/admin]
---
apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: v}
spec:
  rules:
    - {name: inv, deviceClasses: [inverter], source: {deviceFirmware: true}, allowed: "3.x || >=4.0.0-0 <5", denied: [3.1.4+b1, 3.2.0]}
`)
	d, _ := roundTrip(t, e)
	n := 0
	for _, id := range []string{"", "spiffe://grid.example/ns/ops/sa/admin", ctl} {
		for _, dev := range []string{"", "inv-1", "INV-666", "3E4F45AB31EDFE5B67E343E5E4562E31984E23E5"} {
			for _, fw := range []string{"3.1.4+b1", "3.1.4", "3.2.0", "4.1.0-rc.1", "2.0.0"} {
				for _, p := range []string{"/v1/inverters/inv-1/setpoint", "/v1/inverters/inv-1/control/x", "/v1/inverters/inv-2/status", "/v1/meters/m/disconnect", "/v1/x"} {
					for _, m := range []string{"GET", "POST"} {
						req := &Request{SPIFFEID: id, DeviceID: dev, DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: fw,
							Method: m, Path: p, Headers: Map{"x-device-id": dev}}
						var a, b Decision
						e.Decide(req, &a)
						d.Decide(req, &b)
						require.Equal(t, a, b, "%+v", req)
						n++
					}
				}
			}
		}
	}
	assert.Equal(t, 600, n)
}
