//go:build !wasip1

package policies

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func upstreamEngine(t testing.TB) *Engine {
	t.Helper()
	b, err := os.ReadFile("testdata/upstream/upstream.yaml")
	require.NoError(t, err)
	e, err := CompileFiles(map[string][]byte{"upstream.yaml": b})
	require.NoError(t, err)
	return e
}

func hostMeta(kv ...string) func(string, string) (string, bool) {
	return func(f, k string) (string, bool) {
		for i := 0; i+2 < len(kv); i += 3 {
			if kv[i] == f && kv[i+1] == k {
				return kv[i+2], true
			}
		}
		return "", false
	}
}

var before = time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC).UnixNano()
var after = time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC).UnixNano()

// TestDecideUpstream: every step of an upstream decision.
func TestDecideUpstream(t *testing.T) {
	const gw = "spiffe://grid.example/ns/der/sa/inverter-gw"
	set := func(p string) UpstreamRequest { return UpstreamRequest{Method: "PUT", Path: p, Now: before} }
	known := func(r UpstreamRequest, up, ver string) UpstreamRequest {
		r.UpstreamKnown, r.Upstream, r.PeerVersion = true, up, ver
		return r
	}
	withNow := func(r UpstreamRequest, now int64) UpstreamRequest { r.Now = now; return r }
	cases := []struct {
		name    string
		req     UpstreamRequest
		allow   bool
		pending bool
		rule    string
		reason  string
		version string
		dryRun  string
	}{
		{name: "approved firmware, upstream rules pending", req: set("/v1/inverters/inv-0042/setpoint"), allow: true, pending: true},
		{name: "registry id in another case", req: set("/v1/inverters/INV-0042/setpoint"), allow: true, pending: true},
		{name: "firmware outside the range", req: set("/v1/inverters/inv-0043/setpoint"), rule: "der-upstreams/inverter-firmware", reason: ReasonVersionRange, version: "2.9.1"},
		{name: "pre-release not admitted", req: set("/v1/inverters/inv-0044/setpoint"), rule: "der-upstreams/inverter-firmware", reason: ReasonVersionRange, version: "3.0.0-rc.1"},
		{name: "deny-listed firmware", req: set("/v1/inverters/inv-0045/setpoint"), rule: "der-upstreams/inverter-firmware", reason: ReasonVersionDenied, version: "3.3.0"},
		{name: "unregistered target", req: set("/v1/inverters/inv-9999/setpoint"), reason: ReasonTargetUnregistered},
		{name: "revoked target", req: set("/v1/inverters/inv-0666/setpoint"), rule: "incident", reason: ReasonTargetRevoked},
		{name: "two namings disagree", req: func() UpstreamRequest {
			r := set("/v1/inverters/inv-0042/setpoint")
			r.Headers = Map{"x-device-id": "inv-0043"}
			return r
		}(), reason: ReasonTargetConflict},
		{name: "empty target header", req: func() UpstreamRequest { r := set("/v1/x"); r.Headers = Map{"x-device-id": ""}; return r }(), reason: ReasonTargetEmpty},
		{name: "non-canonical path", req: set("/v1/inverters/inv-0043/../inv-0042/setpoint"), reason: "dot segment"},
		{name: "no target, no upstream: pending", req: set("/v1/status"), allow: true, pending: true},
		{name: "gateway at an approved version", req: known(set("/v1/status"), gw, "1.4.2"), allow: true},
		{name: "gateway at an unapproved version", req: known(set("/v1/status"), gw, "2.0.0"), rule: "der-upstreams/gateway-releases", reason: ReasonVersionRange, version: "2.0.0"},
		{name: "gateway without peer metadata", req: known(set("/v1/status"), gw, ""), rule: "der-upstreams/gateway-releases", reason: ReasonVersionMissing},
		{name: "device checked with the upstream known", req: known(set("/v1/inverters/inv-0043/setpoint"), gw, "1.5.0"), rule: "der-upstreams/inverter-firmware", reason: ReasonVersionRange, version: "2.9.1"},
		{name: "other upstream: no rule applies", req: known(set("/v1/status"), "spiffe://grid.example/ns/metering/sa/meter-api", ""), allow: true},
		{name: "anonymous upstream: no rule applies", req: known(set("/v1/status"), "", ""), allow: true},
		{name: "revoked upstream", req: known(set("/v1/status"), "spiffe://grid.example/ns/der/sa/rogue-gw", "1.4.0"), rule: "incident", reason: ReasonUpstreamRevoked},
		{name: "Kuma host metadata approved", req: func() UpstreamRequest {
			r := known(set("/v1/status"), "spiffe://kuma.example/controller", "")
			r.HostMetadata = hostMeta("envoy.lb", "version", "5.1.0")
			return r
		}(), allow: true},
		{name: "Kuma host metadata too old", req: func() UpstreamRequest {
			r := known(set("/v1/status"), "spiffe://kuma.example/controller", "")
			r.HostMetadata = hostMeta("envoy.lb", "version", "4.9.0", "envoy.lb", "other", "6.0.0")
			return r
		}(), rule: "der-upstreams/kuma-controllers", reason: ReasonVersionRange, version: "4.9.0"},
		{name: "Kuma host metadata absent", req: known(set("/v1/status"), "spiffe://kuma.example/controller", "9.0.0"), rule: "der-upstreams/kuma-controllers", reason: ReasonVersionMissing},
		{name: "dry-run rule flags", req: known(set("/v1/status"), "spiffe://grid.example/ns/scada/hmi", "9.1.0"), allow: true, dryRun: "der-upstreams/scada-canary", version: "9.1.0"},
		{name: "transition window open", req: known(withNow(set("/v1/inverters/inv-0042/setpoint"), before), gw, "1.4.0"), allow: true},
	}
	e := upstreamEngine(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d UpstreamDecision
			e.DecideUpstream(&c.req, &d)
			assert.Equal(t, c.allow, d.Allow, d.String())
			assert.Equal(t, c.pending, d.Pending, d.String())
			assert.Equal(t, c.rule, d.Rule, d.String())
			if c.reason != "" {
				assert.Contains(t, d.Reason, c.reason)
			}
			assert.Equal(t, !c.allow || c.dryRun != "", d.Audit)
			assert.Equal(t, c.version, d.Version)
			assert.Equal(t, c.dryRun, d.DryRunRule)
			assert.Equal(t, c.dryRun != "", d.DryRun)
		})
	}
}

// TestUpstreamSunset: an entry with until approves the outgoing firmware
// until that instant and names the sunset from then on.
func TestUpstreamSunset(t *testing.T) {
	e := mustEngine(t, docHdr+`kind: DeviceRegistry
metadata: {name: r}
spec:
  devices: [{id: inv-1, class: inverter, firmware: 3.0.5}]
---
apiVersion: meshguard.io/v1
kind: UpstreamVersionPolicy
metadata: {name: u}
spec:
  rules:
    - name: fw
      deviceClasses: [inverter]
      source: {deviceFirmware: true}
      allowed: [">=3.1.0", {range: ">=3.0.0, <3.1.0", until: "2027-01-31T00:00:00Z"}]
`)
	r := UpstreamRequest{Method: "PUT", Path: "/x", TargetDeviceID: "inv-1", Now: before}
	var d UpstreamDecision
	e.DecideUpstream(&r, &d)
	assert.True(t, d.Allow, d.String())
	assert.False(t, d.Pending)
	r.Now = after
	e.DecideUpstream(&r, &d)
	assert.False(t, d.Allow)
	assert.Equal(t, `software version approved by ">=3.0.0, <3.1.0" until 2027-01-31T00:00:00Z: sunset passed`, d.Reason)
}

// TestUpstreamImage: a decoded image decides as the compiled engine, and
// refuses tampered caller's-side tables.
func TestUpstreamImage(t *testing.T) {
	e := upstreamEngine(t)
	img, err := MarshalEngine(e)
	require.NoError(t, err)
	e2, err := UnmarshalEngine(img)
	require.NoError(t, err)
	img2, err := MarshalEngine(e2)
	require.NoError(t, err)
	assert.Equal(t, img, img2, "the image is deterministic and round-trips")
	reqs := []UpstreamRequest{
		{Path: "/v1/inverters/inv-0043/setpoint", Now: before},
		{Path: "/v1/inverters/inv-0042/setpoint", Now: before},
		{Path: "/v1/status", UpstreamKnown: true, Upstream: "spiffe://grid.example/ns/der/sa/inverter-gw", PeerVersion: "2.1.0"},
		{Path: "/v1/status", UpstreamKnown: true, Upstream: "spiffe://kuma.example/c", HostMetadata: hostMeta("envoy.lb", "version", "5.0.0")},
		{Path: "/v1/status", UpstreamKnown: true, Upstream: "spiffe://grid.example/ns/scada/x", PeerVersion: "10.0.0"},
	}
	for _, r := range reqs {
		var a, b UpstreamDecision
		e.DecideUpstream(&r, &a)
		e2.DecideUpstream(&r, &b)
		assert.Equal(t, a, b, r.Path)
	}
	assert.Equal(t, [][2]string{{"envoy.lb", "version"}}, e2.UpstreamMetadataKeys())
	assert.True(t, e2.UsesUpstream())
	// Every truncation of the image is refused.
	for n := len(img) - 1; n > len(img)-200 && n > 0; n-- {
		_, err := UnmarshalEngine(img[:n])
		require.Error(t, err, "truncated at %d", n)
	}
}

func TestMatchSegs(t *testing.T) {
	cases := []struct {
		pat, id string
		want    bool
	}{
		{"td/ns/a", "spiffe://td/ns/a", true},
		{"td/ns/a", "spiffe://td/ns/b", false},
		{"td/ns/a", "spiffe://td/ns/a/b", false},
		{"td/ns/a", "spiffe://td/ns", false},
		{"td/ns/**", "spiffe://td/ns", true},
		{"td/ns/**", "spiffe://td/ns/a/b", true},
		{"td/ns/**", "spiffe://td/nsx", false},
		{"td/ns/**", "spiffe://td", false},
		{"td/**", "spiffe://td", true},
		{"td/*/a", "spiffe://td/x/a", true},
		{"td/{p}/a", "spiffe://td//a", false},
		{"td/*", "spiffe://td/", false},
		{"td/ns/a", "spiffe://td/ns/a/", false},
		{"td/ns/a", "spiffe:/td/ns/a", false},
		{"td", "spiffe://", false},
	}
	for _, c := range cases {
		segs, err := segments(c.pat)
		require.NoError(t, err, c.pat)
		assert.Equal(t, c.want, matchSegs(segs, c.id), "%s vs %s", c.pat, c.id)
	}
}

func TestDecideUpstreamAllocs(t *testing.T) {
	e := upstreamEngine(t)
	r := UpstreamRequest{Method: "PUT", Path: "/v1/inverters/inv-0042/setpoint", UpstreamKnown: true,
		Upstream: "spiffe://grid.example/ns/der/sa/inverter-gw", PeerVersion: "1.4.0", Now: before}
	var d UpstreamDecision
	assert.Zero(t, testing.AllocsPerRun(100, func() { e.DecideUpstream(&r, &d) }))
	require.True(t, d.Allow, d.String())
}

func BenchmarkDecideUpstream(b *testing.B) {
	e := upstreamEngine(b)
	r := UpstreamRequest{Method: "PUT", Path: "/v1/inverters/inv-0042/setpoint", UpstreamKnown: true,
		Upstream: "spiffe://grid.example/ns/der/sa/inverter-gw", PeerVersion: "1.4.0", Now: before}
	var d UpstreamDecision
	b.ReportAllocs()
	for b.Loop() {
		e.DecideUpstream(&r, &d)
	}
}

// upstreamReqs are decided by every fuzzed engine image.
var upstreamReqs = []UpstreamRequest{
	{Path: "/v1/inverters/inv-0042/setpoint", Headers: Map{"x-device-id": "inv-0042"}},
	{Path: "/v1/status", UpstreamKnown: true, Upstream: "spiffe://grid.example/ns/der/sa/inverter-gw", PeerVersion: "1.4.0",
		HostMetadata: hostMeta("envoy.lb", "version", "5.0.0")},
	{Path: "/", TargetDeviceID: "INV-0043", UpstreamKnown: true, Upstream: "spiffe://kuma.example"},
}

// FuzzDecideUpstream: any upstream request gets a deterministic answer,
// the reference's (refDecideUpstream); a
// refusal is never pending, a pending answer becomes final once the
// upstream is known, and knowing the upstream never turns a refusal into
// an approval (the reason may change: an upstream revocation comes first).
func FuzzDecideUpstream(f *testing.F) {
	e := upstreamEngine(f)
	b, err := os.ReadFile("testdata/upstream/upstream.yaml")
	require.NoError(f, err)
	set, err := Load(map[string][]byte{"upstream.yaml": b})
	require.NoError(f, err)
	f.Add("/v1/inverters/inv-0042/setpoint", "", "spiffe://grid.example/ns/der/sa/inverter-gw", "1.4.0", "5.0.0", before)
	f.Add("/v1/inverters/INV-0043/setpoint", "inv-0043", "spiffe://kuma.example/x", "", "4.0.0", after)
	f.Add("/v1/status", "", "spiffe://grid.example/ns/scada/hmi", "9.0.0", "", int64(0))
	f.Add("/v1/inverters/inv-0044/../x", "", "", "", "", before)
	f.Fuzz(func(t *testing.T, path, header, upstream, peerVersion, metaVersion string, now int64) {
		r := UpstreamRequest{Method: "PUT", Path: path, Now: now}
		if header != "" {
			r.Headers = Map{"x-device-id": header}
		}
		var first, again, known UpstreamDecision
		e.DecideUpstream(&r, &first)
		e.DecideUpstream(&r, &again)
		if first != again {
			t.Fatalf("nondeterministic: %s vs %s", first.String(), again.String())
		}
		if want := refDecideUpstream(set, &r); first != want {
			t.Fatalf("engine %s, reference %s", first.String(), want.String())
		}
		if !first.Allow && first.Pending {
			t.Fatal("a refusal is pending")
		}
		r.UpstreamKnown, r.Upstream, r.PeerVersion = true, upstream, peerVersion
		r.HostMetadata = hostMeta("envoy.lb", "version", metaVersion)
		e.DecideUpstream(&r, &known)
		if want := refDecideUpstream(set, &r); known != want {
			t.Fatalf("engine %s, reference %s (upstream known)", known.String(), want.String())
		}
		if known.Pending {
			t.Fatalf("pending with the upstream known: %s", known.String())
		}
		if !first.Allow && known.Allow {
			t.Fatalf("a request-time refusal changed once the upstream was known: %s vs %s", first.String(), known.String())
		}
	})
}
