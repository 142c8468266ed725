// The guard's tests run the real module in the host natively; the policy
// language front end they build bundles with is not built for wasip1.
//go:build !wasip1

package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

var epoch = hosttest.Epoch

func guardWasm(t testing.TB) string {
	t.Helper()
	return wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/guard")
}

// newFixture is the shared fixture at the host's clock.
func newFixture(t testing.TB) *guardtest.Fixture { return guardtest.New(t, epoch) }

func peer(id string) *host.Props {
	return host.NewProps().SetString("connection.uri_san_peer_certificate", id).SetBool("connection.mtls", true)
}

const (
	reader     = guardtest.Reader
	controller = guardtest.Controller
)

func decisionBody(t *testing.T, lr *host.LocalReply) map[string]string {
	var m map[string]string
	require.NoError(t, json.Unmarshal(lr.Body, &m), "%s", lr.Body)
	return m
}

func TestFailClosed(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	cases := []struct {
		name, config, want string
	}{
		{"no configuration", "", "empty configuration"},
		{"not JSON", "{", "guard config"},
		{"unsigned bundle", string(f.Config(t, func(m map[string]any) {
			m["policy"].(map[string]any)["inline"] = base64.StdEncoding.EncodeToString([]byte("not a bundle"))
		})), "malformed bundle"},
		{"bundle signed by another key", string(f.Config(t, func(m map[string]any) {
			other := newFixture(t)
			m["policy"].(map[string]any)["inline"] = base64.StdEncoding.EncodeToString(other.Bundle(t, 1, nil))
		})), "unknown signing key"},
		{"rolled back revision", string(f.Config(t, func(m map[string]any) {
			m["policy"].(map[string]any)["minRevision"] = 5
		})), "rollback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := hosttest.New(t, wasm, hosttest.PluginConfig([]byte(tc.config)))
			s := h.NewStream(peer(reader))
			s.Request("GET", "/v1/meters/1/readings")
			lr := s.ExpectLocalReply(503)
			body := decisionBody(t, lr)
			assert.Equal(t, "unavailable", body["decision"])
			assert.Contains(t, body["reason"], tc.want)
		})
	}
}

func TestDecisions(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	h := hosttest.New(t, wasm, hosttest.PluginConfig(f.Config(t, nil)))
	h.ExpectLog("installed policy bundle revision 1")

	t.Run("mTLS peer allowed", func(t *testing.T) {
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings?from=1", [2]string{"x-meshguard-subject", "spiffe://grid.example/ns/admin"})
		s.ExpectNoLocalReply()
		_, spoofed := s.RequestHeader("x-meshguard-subject")
		assert.False(t, spoofed, "identity header from outside is stripped")
	})
	t.Run("default deny with JSON body and decision id", func(t *testing.T) {
		s := h.NewStream(peer(reader))
		s.Request("DELETE", "/v1/meters/42/readings")
		lr := s.ExpectLocalReply(403)
		body := decisionBody(t, lr)
		assert.Equal(t, "deny", body["decision"])
		id, ok := lr.Headers.Get("x-meshguard-decision")
		require.True(t, ok)
		assert.Equal(t, id, body["decision_id"])
		h.ExpectLog(`"decision_id":"` + id + `"`)
	})
	t.Run("explicit deny rule with header match", func(t *testing.T) {
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings", [2]string{"x-grid-maintenance", "on"})
		lr := s.ExpectLocalReply(403)
		assert.Equal(t, "meter-api/maintenance-header", decisionBody(t, lr)["rule"])
	})
	t.Run("revoked identity", func(t *testing.T) {
		s := h.NewStream(peer("spiffe://grid.example/ns/metering/sa/old-reader"))
		s.Request("GET", "/v1/meters/42/readings")
		lr := s.ExpectLocalReply(403)
		assert.Contains(t, strings.ToLower(string(lr.Body)), "revoked")
	})
	t.Run("no identity", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/v1/meters/42/readings")
		s.ExpectLocalReply(403)
	})
	t.Run("JWT-SVID allowed and cached", func(t *testing.T) {
		tok := f.SVID(t, "spiffe://grid.example/ns/billing/sa/invoicer", nil)
		hits0 := h.Counter("wasmcustom.meshguard_token_cache_hits_total")
		misses0 := h.Counter("wasmcustom.meshguard_token_cache_misses_total")
		for i := range 3 {
			s := h.NewStream(nil)
			s.Request("GET", "/v1/billing/2026-11", [2]string{"authorization", "Bearer " + tok})
			s.ExpectNoLocalReply()
			// Requests in between reuse the scratch arena the token was
			// read into; the cache must have kept its own copy.
			other := h.NewStream(peer(reader))
			other.Request("GET", "/v1/meters/42/readings", [2]string{"x-filler", strings.Repeat(fmt.Sprint(i), len(tok)+64)})
			other.ExpectNoLocalReply()
		}
		assert.Equal(t, hits0+2, h.Counter("wasmcustom.meshguard_token_cache_hits_total"))
		assert.Equal(t, misses0+1, h.Counter("wasmcustom.meshguard_token_cache_misses_total"))
	})
	badTokens := map[string]string{
		"expired":         f.SVID(t, "spiffe://grid.example/ns/billing/sa/x", func(c map[string]any) { c["exp"] = epoch.Add(-time.Hour).Unix() }),
		"not yet valid":   f.SVID(t, "spiffe://grid.example/ns/billing/sa/x", func(c map[string]any) { c["nbf"] = epoch.Add(time.Hour).Unix() }),
		"wrong aud":       f.SVID(t, "spiffe://grid.example/ns/billing/sa/x", func(c map[string]any) { c["aud"] = "other" }),
		"empty aud":       f.SVID(t, "spiffe://grid.example/ns/billing/sa/x", func(c map[string]any) { c["aud"] = "" }),
		"no exp":          f.SVID(t, "spiffe://grid.example/ns/billing/sa/x", func(c map[string]any) { delete(c, "exp") }),
		"foreign domain":  f.SVID(t, "spiffe://evil.example/ns/billing/sa/x", nil),
		"partner no keys": f.SVID(t, "spiffe://partner.example/ns/billing/sa/x", nil),
		"alg none": base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"grid-1"}`)) + "." +
			base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://grid.example/ns/billing/sa/x","aud":"grid-apis","exp":4102444800}`)) + ".",
		"HS256 public key as secret": func() string {
			b, _ := jws.Sign([]byte(`{"sub":"spiffe://grid.example/ns/billing/sa/x","aud":"grid-apis","exp":4102444800}`), jws.WithKey(jwa.HS256, []byte(f.GridJWKS)))
			return string(b)
		}(),
		"unknown kid": guardtest.Sign(t, f.Grid, "grid-9", jwa.ES256, map[string]any{"sub": "spiffe://grid.example/ns/billing/sa/x", "aud": "grid-apis", "exp": epoch.Add(time.Hour).Unix()}),
	}
	for name, tok := range badTokens {
		t.Run("JWT-SVID "+name, func(t *testing.T) {
			// Even with an allowed mTLS peer, a bad token is a deny.
			s := h.NewStream(peer(reader))
			s.Request("GET", "/v1/billing/2026-11", [2]string{"x-jwt-svid", tok})
			lr := s.ExpectLocalReply(403)
			assert.Contains(t, decisionBody(t, lr)["reason"], "JWT-SVID rejected")
		})
	}
	t.Run("device write allowed then rate limited", func(t *testing.T) {
		dev := f.DeviceToken(t, "inv-7", "inverter", "voltwerk")
		ctl := f.ControllerToken(t)
		statuses := []uint32{}
		for range 7 {
			s := h.NewStream(peer(controller))
			s.Request("POST", "/v1/inverters/inv-7/setpoint", [2]string{"x-device-token", dev}, [2]string{"authorization", "Bearer " + ctl})
			if lr := s.LocalReply(); lr != nil {
				statuses = append(statuses, lr.Status)
			} else {
				statuses = append(statuses, 200)
			}
		}
		assert.Equal(t, []uint32{200, 200, 200, 200, 200, 429, 429}, statuses)
	})
	assert.Positive(t, h.Counter("wasmcustom.meshguard_decisions_total.result=deny"))
	assert.Positive(t, h.Counter("wasmcustom.meshguard_decisions_total.result=allow"))
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_bundle_revision"))
	assert.Equal(t, epoch.Add(30*24*time.Hour).Unix(), h.Counter("wasmcustom.meshguard_bundle_expiry_timestamp_seconds"))
}

func TestRateLimitSharedAcrossWorkers(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, nil)), hosttest.Workers(3))
	dev := f.DeviceToken(t, "inv-8", "inverter", "sunbridge")
	ctl := f.ControllerToken(t)
	allowed := 0
	for i := range 12 {
		s := h.NewStreamOn(i%3, peer(controller))
		s.Request("POST", "/v1/inverters/inv-8/control/mode", [2]string{"x-device-token", dev}, [2]string{"authorization", "Bearer " + ctl})
		if s.LocalReply() == nil {
			allowed++
		} else {
			assert.Equal(t, uint32(429), s.LocalReply().Status)
			ra, ok := s.LocalReply().Headers.Get("retry-after")
			assert.True(t, ok && ra != "", "a 429 says when to retry")
		}
	}
	assert.Equal(t, 5, allowed, "burst 5 shared by all workers")
}

func TestDryRun(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, func(m map[string]any) { m["mode"] = "dry-run" })))
	s := h.NewStream(peer(reader))
	s.Request("DELETE", "/v1/meters/42/readings")
	s.ExpectNoLocalReply()
	h.ExpectLog(`"decision":"dry-run-deny"`)
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_decisions_total.result=dry-run-deny"))

	// The allowed response names its audit record, as a deny does.
	s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	id, ok := s.ResponseHeader("x-meshguard-decision")
	require.True(t, ok, "a recorded dry-run carries its decision id")
	h.ExpectLog(`"decision_id":"` + id + `"`)
}

func distributorConfig(inline bool) func(m map[string]any) {
	return func(m map[string]any) {
		p := m["policy"].(map[string]any)
		if !inline {
			delete(p, "inline")
		}
		p["distributor"] = map[string]any{"cluster": "distributor", "channel": "grid", "pollInterval": "5s"}
		m["audit"] = map[string]any{"sink": map[string]any{"cluster": "distributor", "batchSize": 2, "flushInterval": "1s"}}
	}
}

func TestDistributorPollingAndRotation(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, distributorConfig(false))),
		hosttest.Cluster("distributor"), hosttest.Workers(2),
		hosttest.Properties(host.NewProps().SetString("xds.node.id", "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local")))
	s := h.NewStreamOn(0, peer(reader))
	s.Request("GET", "/v1/meters/42/readings")
	s.ExpectLocalReply(503) // nothing delivered yet: fail closed

	h.Advance(time.Second)
	polls := bundlePolls(h)
	require.Len(t, polls, 1, "only the lease holder polls")
	assert.Equal(t, "/v1/bundles/grid", polls[0].Header(":path"))
	assert.Empty(t, polls[0].Header("if-none-match"))
	// The poll names the proxy and what it enforces, for the distributor's status.
	assert.Equal(t, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local", polls[0].Header(contract.ProxyHeader))
	assert.Equal(t, "0", polls[0].Header(contract.EnforcingHeader))
	polls[0].Respond("200", host.Headers{{"etag", `"e1"`}}, f.Bundle(t, 1, nil))
	// The other worker picks the bundle up from shared data on its next
	// request, without waiting for a tick.

	for w := range 2 {
		s := h.NewStreamOn(w, peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		s.ExpectNoLocalReply()
	}

	// Next poll carries the ETag; 304 keeps the bundle.
	h.Advance(5 * time.Second)
	polls = bundlePolls(h)
	require.Len(t, polls, 1)
	assert.Equal(t, `"e1"`, polls[0].Header("if-none-match"))
	assert.Equal(t, "1", polls[0].Header(contract.EnforcingHeader))
	polls[0].Respond("304", nil, nil)

	// A tampered bundle is rejected and the last good one stays.
	h.Advance(5 * time.Second)
	polls = bundlePolls(h)
	require.Len(t, polls, 1)
	bad := f.Bundle(t, 2, nil)
	bad[len(bad)/2] ^= 0xff
	polls[0].Respond("200", nil, bad)
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_bundle_verification_failures_total"))
	s = h.NewStreamOn(0, peer(reader))
	s.Request("GET", "/v1/meters/42/readings")
	s.ExpectNoLocalReply()

	// Distributor down: keep serving.
	h.Advance(5 * time.Second)
	polls = bundlePolls(h)
	require.Len(t, polls, 1)
	polls[0].Fail()
	h.ExpectLog("bundle poll failed")

	// Rotation: revision 2 revokes the reader; every worker enforces it at once.
	files := map[string][]byte{}
	for k, v := range f.Files {
		files[k] = v
	}
	files["policies/revocations.yaml"] = []byte(strings.Replace(string(f.Files["policies/revocations.yaml"]),
		"spiffe://grid.example/ns/metering/sa/old-reader", reader, 1))
	h.Advance(5 * time.Second)
	polls = bundlePolls(h)
	require.Len(t, polls, 1)
	polls[0].Respond("200", host.Headers{{"etag", `"e2"`}}, f.Bundle(t, 2, files))
	for w := range 2 {
		s := h.NewStreamOn(w, peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		s.ExpectLocalReply(403)
	}
	assert.Equal(t, int64(2), h.Counter("wasmcustom.meshguard_bundle_revision"))

	// Rollback to revision 1 is refused.
	h.Advance(5 * time.Second)
	polls = bundlePolls(h)
	require.Len(t, polls, 1)
	polls[0].Respond("200", nil, f.Bundle(t, 1, nil))
	h.ExpectLog("rollback")

	// Denies were batched to the decision log.
	h.Advance(2 * time.Second)
	var posted []map[string]any
	for _, c := range h.Callouts() {
		if c.Header(":method") == "POST" {
			assert.Equal(t, "/v1/decisions", c.Header(":path"))
			var batch []map[string]any
			require.NoError(t, json.Unmarshal(c.Request.Body, &batch))
			posted = append(posted, batch...)
			c.Respond("202", nil, nil)
		}
	}
	require.NotEmpty(t, posted)
	// Uploads nobody answered earlier were retried with the same records
	// (the distributor drops repeats by decision id).
	byDecision, seen := map[string][]map[string]any{}, map[any]bool{}
	for _, r := range posted {
		if !seen[r["decision_id"]] {
			seen[r["decision_id"]] = true
			byDecision[r["decision"].(string)] = append(byDecision[r["decision"].(string)], r)
		}
	}
	assert.Positive(t, h.Counter("wasmcustom.meshguard_audit_upload_retries_total"))
	require.NotEmpty(t, byDecision["deny"], "%v", posted)
	assert.Equal(t, reader, byDecision["deny"][0]["subject"])
	assert.Equal(t, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local", byDecision["deny"][0]["proxy"])
	// The 503 before the first bundle is recorded, aggregated.
	require.Len(t, byDecision["unavailable"], 1, "%v", posted)
	u := byDecision["unavailable"][0]
	assert.Equal(t, 1.0, u["count"])
	assert.Contains(t, u["reason"], "no policy bundle loaded yet")
	assert.Equal(t, u["first_time"], u["last_time"])
}

func bundlePolls(h *hosttest.Harness) []*hosttest.Callout {
	var out []*hosttest.Callout
	for _, c := range h.Callouts() {
		if c.Header(":method") == "GET" {
			out = append(out, c)
		}
	}
	return out
}

// FuzzRequestPath drives arbitrary request headers and identities through
// the real .wasm: the filter must always answer (never trap).
func FuzzRequestPath(f *testing.F) {
	fx := newFixture(f)
	h := hosttest.New(f, guardWasm(f), hosttest.PluginConfig(fx.Config(f, nil)))
	f.Add("GET", "/v1/meters/1/readings", reader, "Bearer x.y.z", "")
	f.Add("POST", "/v1/inverters/../setpoint", "spiffe://grid.example/%00", "", "a.b.c")
	f.Add("\x00", "", "", "Bearer ", "\xff")
	f.Fuzz(func(t *testing.T, method, path, peerID, authz, dev string) {
		s := h.NewStream(peer(peerID))
		var hdrs [][2]string
		for _, kv := range [][2]string{{"authorization", authz}, {"x-device-token", dev}} {
			if kv[1] != "" {
				hdrs = append(hdrs, kv)
			}
		}
		s.Request(method, path, hdrs...)
		if lr := s.LocalReply(); lr != nil {
			assert.Contains(t, []uint32{400, 401, 403, 429, 503}, lr.Status, "%s", lr.Body)
		}
	})
}

func TestBundleForms(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	inline := guardtest.Inline
	t.Run("sources only: refused, the engine image is the only form loaded", func(t *testing.T) {
		h := hosttest.New(t, wasm, hosttest.PluginConfig(f.Config(t, inline(f.Signed(t, 1, f.Files)))))
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		lr := s.ExpectLocalReply(503)
		assert.Contains(t, string(lr.Body), "has no compiled/engine.bin")
		assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_bundle_verification_failures_total"))
	})
	t.Run("damaged image: fail closed", func(t *testing.T) {
		files := maps.Clone(f.Files)
		files[bundle.ImageFile] = []byte(policies.ImageMagic + "\x01garbage")
		h := hosttest.New(t, wasm, hosttest.PluginConfig(f.Config(t, inline(f.Signed(t, 1, files)))))
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		lr := s.ExpectLocalReply(503)
		assert.Contains(t, string(lr.Body), "invalid engine image")
		assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_bundle_verification_failures_total"))
	})
}

func TestIstioPeerVersion(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	caller := "spiffe://grid.example/ns/billing/sa/invoicer"
	withPeer := func(version string) *host.Props {
		return peer(caller).SetPeer("downstream_peer", map[string]string{"workload": "invoicer", "namespace": "billing", "version": version}, nil)
	}
	t.Run("version rule on the peer label", func(t *testing.T) {
		files := maps.Clone(f.Files)
		files["policies/peer-versions.yaml"] = []byte(`apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata:
  name: billing-versions
spec:
  rules:
    - name: invoicer-releases
      subjects: [` + caller + `]
      source:
        peerLabel: version
      allowed: ">=1.4.0"
`)
		cfg := f.Config(t, func(m map[string]any) {
			m["policy"].(map[string]any)["inline"] = base64.StdEncoding.EncodeToString(f.Bundle(t, 1, files))
		})
		h := hosttest.New(t, wasm, hosttest.PluginConfig(cfg))
		s := h.NewStream(withPeer("1.5.2"))
		s.Request("GET", "/v1/billing/2026-11")
		s.ExpectNoLocalReply()
		s = h.NewStream(withPeer("1.3.9"))
		s.Request("GET", "/v1/billing/2026-11")
		lr := s.ExpectLocalReply(403)
		assert.Equal(t, "billing-versions/invoicer-releases", decisionBody(t, lr)["rule"])
		h.ExpectLog(`"version":"1.3.9"`)
	})
	t.Run("no version rule reads it: fetched only for the audit record", func(t *testing.T) {
		h := hosttest.New(t, wasm, hosttest.PluginConfig(f.Config(t, nil)))
		s := h.NewStream(withPeer("0.0.1"))
		s.Request("GET", "/v1/billing/2026-11")
		s.ExpectNoLocalReply()
		s = h.NewStream(withPeer("0.0.2"))
		s.Request("DELETE", "/v1/billing/2026-11")
		s.ExpectLocalReply(403)
		h.ExpectLog(`"version":"0.0.2"`)
	})
}

// TestRecordedVersionIsTheRulesSource: a version denial records the
// version the rule read, from a header or a JWT-SVID claim, not the
// Istio peer label.
func TestRecordedVersionIsTheRulesSource(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	caller := "spiffe://grid.example/ns/billing/sa/invoicer"
	for _, tc := range []struct {
		name, source string
		request      func(h *hosttest.Harness) *hosttest.Stream
	}{
		{"header", "header: x-client-version", func(h *hosttest.Harness) *hosttest.Stream {
			s := h.NewStream(peer(caller).SetPeer("downstream_peer", map[string]string{"version": "9.9.9"}, nil))
			s.Request("GET", "/v1/billing/2026-11", [2]string{"x-client-version", "1.3.9"})
			return s
		}},
		{"jwt claim", "jwtClaim: sw", func(h *hosttest.Harness) *hosttest.Stream {
			s := h.NewStream(host.NewProps())
			s.Request("GET", "/v1/billing/2026-11", [2]string{"authorization", "Bearer " + f.SVID(t, caller, func(c map[string]any) { c["sw"] = "1.3.9" })})
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := maps.Clone(f.Files)
			files["policies/versions.yaml"] = []byte(`apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata:
  name: billing-versions
spec:
  rules:
    - name: invoicer-releases
      subjects: [` + caller + `]
      source:
        ` + tc.source + `
      allowed: ">=1.4.0"
`)
			cfg := f.Config(t, func(m map[string]any) {
				m["policy"].(map[string]any)["inline"] = base64.StdEncoding.EncodeToString(f.Bundle(t, 1, files))
			})
			h := hosttest.New(t, wasm, hosttest.PluginConfig(cfg))
			lr := tc.request(h).ExpectLocalReply(403)
			assert.Equal(t, "billing-versions/invoicer-releases", decisionBody(t, lr)["rule"])
			h.ExpectLog(`"version":"1.3.9"`)
		})
	}
}

// TestExpiryGrace: at expiry the guard fails closed, unless
// policy.expiryGrace keeps the last good bundle for a bounded time.
func TestExpiryGrace(t *testing.T) {
	wasm := guardWasm(t)
	f := newFixture(t)
	const validity = guardtest.Validity
	cases := []struct {
		name  string
		grace string
		after time.Duration
		want  uint32 // 0: allowed
	}{
		{"valid", "", validity - time.Minute, 0},
		{"expired, no grace: fail closed", "", validity + time.Minute, 503},
		{"expired, within grace", "48h", validity + 47*time.Hour, 0},
		{"expired, past grace", "48h", validity + 49*time.Hour, 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.Config(t, func(m map[string]any) {
				if tc.grace != "" {
					m["policy"].(map[string]any)["expiryGrace"] = tc.grace
				}
			})
			h := hosttest.New(t, wasm, hosttest.PluginConfig(cfg))
			h.Advance(tc.after)
			s := h.NewStream(peer(reader))
			s.Request("GET", "/v1/meters/42/readings")
			if tc.want == 0 {
				s.ExpectNoLocalReply()
				if tc.grace != "" {
					h.ExpectLog("enforcing it within policy.expiryGrace until")
				}
			} else {
				lr := s.ExpectLocalReply(tc.want)
				assert.Contains(t, decisionBody(t, lr)["reason"], "expired")
			}
			assert.Equal(t, epoch.Add(validity).Unix(), h.Counter("wasmcustom.meshguard_bundle_expiry_timestamp_seconds"))
		})
	}

	// A proxy (re)started within the grace installs the expired bundle,
	// saying so; past the grace or without one it refuses it.
	h := hosttest.New(t, wasm, hosttest.PluginConfig(f.Config(t, nil)))
	h.Advance(validity + time.Hour)
	for grace, want := range map[string]bool{"2h": true, "30m": false, "": false} {
		cfg := f.Config(t, func(m map[string]any) {
			if grace != "" {
				m["policy"].(map[string]any)["expiryGrace"] = grace
			}
		})
		p := h.AddPlugin(hosttest.PluginConfig(cfg), hosttest.VMID("restart-"+grace))
		s := h.StreamOf(p, peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		if want {
			s.ExpectNoLocalReply()
		} else {
			s.ExpectLocalReply(503)
		}
	}
	h.ExpectLog("enforcing it within policy.expiryGrace until")
}
