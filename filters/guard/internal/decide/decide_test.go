// The core runs natively in its tests; the fixture packs bundles with the
// policy front end, which is not built for wasip1.
//go:build !wasip1

package decide

import (
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/policies"
)

const (
	reader     = guardtest.Reader
	controller = guardtest.Controller
	invoicer   = guardtest.Invoicer
)

// want is the outcome a case expects: the status of a local reply (0:
// forwarded), the decision, the first deciding rule and words of the
// reason, and whether it is recorded.
type want struct {
	status   uint32
	decision string
	rule     string
	reason   string
	recorded bool
	subject  string
}

func authz(tok string) [2]string { return [2]string{"authorization", "Bearer " + tok} }

func reply(t *testing.T, out Outcome) contract.Reply {
	t.Helper()
	var r contract.Reply
	require.NoError(t, json.Unmarshal(out.Body, &r), "%s", out.Body)
	return r
}

// TestDecisions decides requests with the grid bundle through the core
// alone: identity sources, allow and deny, revocation, dry-run, device
// writes and what each records.
func TestDecisions(t *testing.T) {
	f := guardtest.New(t, epoch)
	tok := func(sub string, mutate func(map[string]any)) string { return f.SVID(t, sub, mutate) }
	partnerKeys := func(m map[string]any) {
		m["identity"].(map[string]any)["jwtSvid"].(map[string]any)["trustDomains"].(map[string]any)["partner.example"] = f.GridJWKS
	}
	trial := f.WithPolicy("trial.yaml", []byte(`apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: trial}
spec:
  rules:
    - name: no-readings
      effect: deny
      dryRun: true
      subjects: [`+reader+`]
      paths: [/v1/meters/**]
`))
	cases := []struct {
		name   string
		config func(m map[string]any)
		req    *request
		want   want
	}{
		// Identity sources.
		{"mTLS peer allowed", nil, get("/v1/meters/42/readings?from=1").from(reader),
			want{decision: "allow", rule: "meter-api/readers-read"}},
		{"no identity: default deny", nil, get("/v1/meters/42/readings"),
			want{status: 403, decision: "deny", reason: policies.ReasonDefaultDeny, recorded: true}},
		{"peer SAN that is not a SPIFFE ID is no identity", nil, get("/v1/meters/42/readings").from("https://grid.example/reader"),
			want{status: 403, decision: "deny", reason: policies.ReasonDefaultDeny, recorded: true}},
		{"JWT-SVID as Bearer", nil, get("/v1/billing/2026-11", authz(tok(invoicer, nil))),
			want{decision: "allow", rule: "meter-api/billing-read"}},
		{"JWT-SVID in x-jwt-svid", nil, get("/v1/billing/2026-11", [2]string{"x-jwt-svid", tok(invoicer, nil)}),
			want{decision: "allow", rule: "meter-api/billing-read"}},
		{"authorization without the Bearer scheme is no token", nil, get("/v1/billing/2026-11", [2]string{"authorization", "Token " + tok(invoicer, nil)}),
			want{status: 403, decision: "deny", reason: policies.ReasonDefaultDeny, recorded: true}},
		{"peer and JWT-SVID subject differ: two callers, refused", nil, get("/v1/billing/2026-11", authz(tok(invoicer, nil))).from(reader),
			want{status: 403, decision: "deny", reason: "two callers: the mTLS peer " + reader + " presents a JWT-SVID of " + invoicer, recorded: true}},
		{"peer and JWT-SVID of one identity", nil, get("/v1/billing/2026-11", authz(tok(invoicer, nil))).from(invoicer),
			want{decision: "allow", rule: "meter-api/billing-read"}},
		{"expired JWT-SVID: deny, never the peer", nil, get("/v1/meters/42/readings", authz(tok(reader, func(c map[string]any) { c["exp"] = epoch.Add(-time.Hour).Unix() }))).from(reader),
			want{status: 403, decision: "deny", reason: "JWT-SVID rejected: token expired", recorded: true, subject: reader}},
		{"JWT-SVID for another audience", nil, get("/v1/billing/2026-11", authz(tok(invoicer, func(c map[string]any) { c["aud"] = "other" }))),
			want{status: 403, decision: "deny", reason: "JWT-SVID rejected", recorded: true}},
		{"JWT-SVID of a trust domain without keys", nil, get("/v1/billing/2026-11", authz(tok("spiffe://partner.example/ns/a/sa/b", nil))),
			want{status: 403, decision: "deny", reason: "JWT-SVID rejected", recorded: true}},
		{"forged device token", nil, get("/v1/inverters/inv-7/status", [2]string{"x-device-token", "a.b.c"}).from(reader),
			want{status: 403, decision: "deny", reason: "device token rejected", recorded: true, subject: reader}},
		// Policy outcomes.
		{"explicit deny rule on a header", nil, get("/v1/meters/42/readings", [2]string{"x-grid-maintenance", "on"}).from(reader),
			want{status: 403, decision: "deny", rule: "meter-api/maintenance-header", recorded: true}},
		{"revoked SPIFFE ID", nil, get("/v1/meters/42/readings").from(guardtest.OldReader),
			want{status: 403, decision: "deny", reason: policies.ReasonRevokedID, recorded: true}},
		{"revoked jti", nil, get("/v1/meters/42/readings", authz(tok(reader, func(c map[string]any) { c["jti"] = "7c1d0d6e-leaked-token" }))),
			want{status: 403, decision: "deny", reason: policies.ReasonRevokedJTI, recorded: true}},
		{"version rule on a JWT claim", nil, req("POST", "/v1/inverters/inv-9/setpoint", authz(tok(controller, func(c map[string]any) { c["swversion"] = "2.4.1" })),
			[2]string{"x-device-token", f.DeviceToken(t, "inv-9", "inverter", "voltwerk")}),
			want{status: 403, decision: "deny", reason: policies.ReasonVersionDenied, recorded: true, subject: controller}},
		{"device write allowed and audited", nil, req("POST", "/v1/inverters/inv-9/setpoint", authz(f.ControllerToken(t)),
			[2]string{"x-device-token", f.DeviceToken(t, "inv-9", "inverter", "voltwerk")}),
			want{decision: "allow", rule: "inverters/controller-write", recorded: true, subject: controller}},
		// Dry-run.
		{"dry-run mode: a deny is recorded and forwarded", func(m map[string]any) { m["mode"] = "dry-run" }, req("DELETE", "/v1/meters/42/readings").from(reader),
			want{decision: "dry-run-deny", reason: policies.ReasonDefaultDeny, recorded: true}},
		{"dry-run rule: the trialled deny is recorded, the request forwarded", guardtest.Inline(f.Bundle(t, 1, trial)), get("/v1/meters/42/readings").from(reader),
			want{decision: "dry-run-deny", rule: "trial/no-readings", recorded: true}},
		{"a trusted partner domain denied admin paths", partnerKeys, get("/v1/admin/users", authz(tok("spiffe://partner.example/ns/ops/sa/tool", nil))),
			want{status: 403, decision: "deny", rule: "meter-api/no-admin-from-partners", recorded: true}},
		{"logAllows records an allow", func(m map[string]any) { m["audit"] = map[string]any{"logAllows": true} }, get("/v1/meters/42/readings").from(reader),
			want{decision: "allow", rule: "meter-api/readers-read", recorded: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy()
			w := p.worker(t, f.Config(t, tc.config))
			require.NoError(t, w.Err())
			var x Exchange
			out := w.Decide(&x, tc.req)
			assert.Equal(t, tc.want.status, out.Status, "%s", out.Body)
			assert.Equal(t, 1, w.tel.decided[tc.want.decision], "counted as %s: %v", tc.want.decision, w.tel.decided)
			if tc.want.status != 0 {
				r := reply(t, out)
				assert.Equal(t, tc.want.decision, r.Decision)
				assert.Contains(t, r.Reason, tc.want.reason)
				if tc.want.rule != "" {
					assert.Equal(t, tc.want.rule, r.Rule)
				}
				assert.Equal(t, [2]string{"x-meshguard-decision", r.DecisionID}, out.Headers[1])
				assert.Empty(t, x.DecisionID(), "a deny names its record in the reply")
			}
			if !tc.want.recorded {
				assert.Empty(t, w.recs.list)
				assert.Empty(t, x.DecisionID())
				return
			}
			require.Len(t, w.recs.list, 1)
			rec := w.recs.last(t)
			assert.Equal(t, tc.want.decision, rec.Decision)
			assert.Contains(t, rec.Reason, tc.want.reason)
			if tc.want.rule != "" {
				assert.Equal(t, []string{tc.want.rule}, rec.RuleIDs)
			}
			if tc.want.subject != "" {
				assert.Equal(t, tc.want.subject, rec.Subject)
			}
			if tc.want.status == 0 {
				assert.Equal(t, rec.DecisionID, x.DecisionID(), "a recorded allow names its record for the response")
			} else {
				assert.Equal(t, rec.DecisionID, reply(t, out).DecisionID)
			}
		})
	}
}

// TestAuditRecord: every field of a record, from the request, the caller,
// the bundle and the proxy.
func TestAuditRecord(t *testing.T) {
	f := guardtest.New(t, epoch)
	p := newProxy()
	w := p.worker(t, f.Config(t, nil))
	r := req("POST", "/v1/inverters/inv-7/setpoint?dry=1", authz(f.SVID(t, reader, nil)),
		[2]string{"x-device-token", f.DeviceToken(t, "inv-7", "inverter", "voltwerk")})
	r.version = "1.4.2"
	var x Exchange
	out := w.Decide(&x, r)
	require.Equal(t, uint32(403), out.Status)
	rec := w.recs.last(t)
	assert.Equal(t, epoch, rec.Time)
	assert.Equal(t, reply(t, out).DecisionID, rec.DecisionID)
	assert.True(t, strings.HasPrefix(rec.DecisionID, w.idPrefix))
	assert.Equal(t, contract.DecisionDeny, rec.Decision)
	assert.Equal(t, policies.ReasonDefaultDeny, rec.Reason)
	assert.Equal(t, uint64(1), rec.BundleRevision)
	assert.Equal(t, reader, rec.Subject)
	assert.Equal(t, "inv-7", rec.DeviceID)
	assert.Equal(t, "inverter", rec.DeviceClass)
	assert.Equal(t, "3.2.0", rec.Version, "the firmware the inverter version rule read")
	assert.Equal(t, "3.2.0", rec.Firmware)
	assert.Equal(t, "POST", rec.Method)
	assert.Equal(t, "/v1/inverters/inv-7/setpoint", rec.Path, "no query string")
	assert.Equal(t, "meter-api", rec.Authority)
	assert.Equal(t, "sidecar~10.0.0.7~meter-api", rec.Proxy)
	assert.Equal(t, "10.0.0.9:41234", rec.Source)

	// A rejected credential: the stage is the reason when nothing else is.
	var y Exchange
	w.Decide(&y, get("/v1/meters/1/readings?x=1", [2]string{"x-device-token", "junk"}))
	rec = w.recs.last(t)
	assert.Contains(t, rec.Reason, "device token rejected")
	assert.Equal(t, "/v1/meters/1/readings?x=1", rec.Path, "the raw path when the request was never decided")
}

// TestStripHeaders: configured headers never reach the policy or the
// upstream; absent ones cost no hostcall.
func TestStripHeaders(t *testing.T) {
	f := guardtest.New(t, epoch)
	w := newProxy().worker(t, f.Config(t, nil))
	r := get("/v1/meters/42/readings", [2]string{"x-meshguard-subject", "spiffe://grid.example/ns/admin"}, [2]string{"x-meshguard-subject", "again"}).from(reader)
	var x Exchange
	out := w.Decide(&x, r)
	assert.True(t, out.Forward())
	assert.Equal(t, []string{"x-meshguard-subject"}, r.removed)
	r = get("/v1/meters/42/readings").from(reader)
	w.Decide(&x, r)
	assert.Empty(t, r.removed)
}

// TestRateLimitSharedAcrossWorkers: the per-device write budget is one
// bucket in shared data for every worker; writes past it get 429.
func TestRateLimitSharedAcrossWorkers(t *testing.T) {
	f := guardtest.New(t, epoch)
	p := newProxy()
	cfg := f.Config(t, nil)
	workers := []*worker{p.worker(t, cfg), p.worker(t, cfg), p.worker(t, cfg)}
	dev := f.DeviceToken(t, "inv-8", "inverter", "sunbridge")
	ctl := f.ControllerToken(t)
	var statuses []uint32
	for i := range 8 {
		var x Exchange
		out := workers[i%3].Decide(&x, req("POST", "/v1/inverters/inv-8/control/mode", authz(ctl), [2]string{"x-device-token", dev}).from(controller))
		statuses = append(statuses, out.Status)
	}
	assert.Equal(t, []uint32{0, 0, 0, 0, 0, 429, 429, 429}, statuses, "burst 5 shared by all workers")
	limited := 0
	for _, w := range workers {
		limited += w.tel.limited
	}
	assert.Equal(t, 3, limited)
	rec := workers[2].recs.last(t)
	assert.Equal(t, "write rate limit exceeded for device inv-8", rec.Reason)

	// The bucket refills at 2/s.
	p.now = p.now.Add(time.Second)
	var x Exchange
	out := workers[0].Decide(&x, req("POST", "/v1/inverters/inv-8/setpoint", authz(ctl), [2]string{"x-device-token", dev}).from(controller))
	assert.True(t, out.Forward())
}

// failingStore is shared data that refuses every write: the rate limit
// cannot be charged, so the write fails closed.
type failingStore struct{ *proxy }

func (s failingStore) Get(key string) ([]byte, uint32, error) { return s.store.Get(key) }
func (failingStore) Set(string, []byte, uint32) error         { return fmt.Errorf("shared data full") }

func TestFailClosed(t *testing.T) {
	f := guardtest.New(t, epoch)
	noImage := maps.Clone(f.Files)
	cases := []struct {
		name   string
		config []byte
		want   string
	}{
		{"no configuration", nil, "empty configuration"},
		{"not JSON", []byte("{"), "guard config"},
		{"unsigned bundle", f.Config(t, guardtest.Inline([]byte("not a bundle"))), "malformed bundle"},
		{"bundle signed by another key", f.Config(t, guardtest.Inline(guardtest.New(t, epoch).Bundle(t, 1, nil))), "unknown signing key"},
		{"rolled back revision", f.Config(t, func(m map[string]any) { m["policy"].(map[string]any)["minRevision"] = 1 }), "rollback"},
		{"sources only, no engine image", f.Config(t, guardtest.Inline(f.Signed(t, 1, noImage))), "has no compiled/engine.bin"},
		{"damaged engine image", f.Config(t, guardtest.Inline(f.Signed(t, 1, map[string][]byte{"compiled/engine.bin": []byte(policies.ImageMagic + "\x01junk")}))), "invalid engine image"},
		{"distributor only, nothing delivered yet", f.Config(t, func(m map[string]any) {
			p := m["policy"].(map[string]any)
			delete(p, "inline")
			p["distributor"] = map[string]any{"cluster": "distributor", "channel": "grid"}
		}), "no policy bundle loaded yet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newProxy().worker(t, tc.config)
			var x Exchange
			out := w.Decide(&x, get("/v1/meters/1/readings").from(reader))
			require.Equal(t, uint32(503), out.Status)
			r := reply(t, out)
			assert.Equal(t, contract.DecisionUnavailable, r.Decision)
			assert.Contains(t, r.Reason, tc.want)
			assert.Equal(t, 1, w.tel.failed[contract.DecisionUnavailable])
			if w.Config() == nil {
				// A refused configuration names no audit sink to trust: the
				// refusal is in the proxy log only.
				assert.Empty(t, w.recs.list)
				return
			}
			require.Len(t, w.recs.list, 1, "an unavailable policy is recorded (the recorder aggregates)")
			rec := w.recs.list[0]
			assert.Equal(t, contract.DecisionUnavailable, rec.Decision)
			assert.Contains(t, rec.Reason, tc.want)
			var named string
			for _, h := range out.Headers {
				if h[0] == contract.DecisionHeader {
					named = h[1]
				}
			}
			assert.Equal(t, rec.DecisionID, named, "the reply names the record")
		})
	}

	t.Run("rate limit store unavailable", func(t *testing.T) {
		p := newProxy()
		w := &worker{tel: newTelemetry(), log: &logs{}, recs: &records{}}
		w.Guard = New(f.Config(t, nil), Ports{Shared: failingStore{p}, Telemetry: w.tel, Log: w.log, Audit: w.recs, Clock: p.clock}, Options{})
		var x Exchange
		out := w.Decide(&x, req("POST", "/v1/inverters/inv-8/setpoint", authz(f.ControllerToken(t)),
			[2]string{"x-device-token", f.DeviceToken(t, "inv-8", "inverter", "sunbridge")}).from(controller))
		require.Equal(t, uint32(503), out.Status)
		assert.Equal(t, contract.DecisionError, reply(t, out).Decision)
		assert.Equal(t, contract.DecisionError, w.recs.last(t).Decision)
		assert.Contains(t, w.recs.last(t).Reason, "rate limit store unavailable")
	})
	t.Run("internal error: 500 and an error record", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, nil))
		r := get("/v1/meters/1/readings")
		r.panics = true
		var x Exchange
		out := w.Decide(&x, r)
		require.Equal(t, uint32(500), out.Status)
		assert.Contains(t, reply(t, out).Reason, "host went away")
		assert.Equal(t, contract.DecisionError, w.recs.last(t).Decision)
		assert.True(t, w.log.has("internal error deciding request"))
		// The next request is decided normally.
		out = w.Decide(&x, get("/v1/meters/1/readings").from(reader))
		assert.True(t, out.Forward())
	})
	t.Run("Fail refuses every request", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, nil))
		w.Fail(fmt.Errorf("setting tick period: no"))
		var x Exchange
		out := w.Decide(&x, get("/v1/meters/1/readings").from(reader))
		assert.Equal(t, uint32(503), out.Status)
		assert.Contains(t, reply(t, out).Reason, "setting tick period")
	})
}

// TestExpiry: at expiry the guard fails closed, within a configured grace
// it keeps the last good bundle (saying so once), and a dropped bundle's
// revision still refuses older bundles.
func TestExpiry(t *testing.T) {
	f := guardtest.New(t, epoch)
	for _, tc := range []struct {
		name  string
		grace string
		after time.Duration
		want  uint32
	}{
		{"valid", "", guardtest.Validity - time.Minute, 0},
		{"expired, no grace", "", guardtest.Validity + time.Minute, 503},
		{"expired, within grace", "48h", guardtest.Validity + 47*time.Hour, 0},
		{"expired, past grace", "48h", guardtest.Validity + 49*time.Hour, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy()
			w := p.worker(t, f.Config(t, func(m map[string]any) {
				if tc.grace != "" {
					m["policy"].(map[string]any)["expiryGrace"] = tc.grace
				}
			}))
			p.now = p.now.Add(tc.after)
			var x Exchange
			for range 2 {
				out := w.Decide(&x, get("/v1/meters/42/readings").from(reader))
				assert.Equal(t, tc.want, out.Status)
				if tc.want != 0 {
					assert.Contains(t, reply(t, out).Reason, "expired")
				}
			}
			graceLogs := 0
			for _, l := range w.log.lines {
				if strings.Contains(l, "within policy.expiryGrace") {
					graceLogs++
				}
			}
			assert.Equal(t, tc.grace != "" && tc.after > guardtest.Validity, graceLogs == 1, "said once: %v", w.log.lines)
		})
	}

	t.Run("a restart within the grace loads the expired bundle", func(t *testing.T) {
		p := newProxy()
		p.now = p.now.Add(guardtest.Validity + time.Hour)
		for grace, ok := range map[string]bool{"2h": true, "30m": false, "": false} {
			w := p.worker(t, f.Config(t, func(m map[string]any) {
				if grace != "" {
					m["policy"].(map[string]any)["expiryGrace"] = grace
				}
			}))
			var x Exchange
			out := w.Decide(&x, get("/v1/meters/42/readings").from(reader))
			assert.Equal(t, ok, out.Forward(), "grace %q", grace)
		}
	})

	t.Run("after an expiry no older revision comes back", func(t *testing.T) {
		p := newProxy()
		old := guardtest.New(t, epoch)
		old.BundleKey, old.BundlePub = f.BundleKey, f.BundlePub
		old.Now = epoch.Add(guardtest.Validity) // revision 1 outlives revision 2
		w := p.worker(t, f.Config(t, guardtest.Inline(f.Bundle(t, 2, nil))))
		p.now = p.now.Add(guardtest.Validity + time.Minute)
		var x Exchange
		require.Equal(t, uint32(503), w.Decide(&x, get("/v1/meters/42/readings").from(reader)).Status)
		err := w.Install(old.Bundle(t, 1, nil), "test")
		require.ErrorContains(t, err, "rollback")
		assert.Equal(t, uint64(2), w.Revision())
		require.NoError(t, w.Install(old.Bundle(t, 3, nil), "test"))
		assert.True(t, w.Decide(&x, get("/v1/meters/42/readings").from(reader)).Forward())
	})
}

// TestInstall: a newer bundle replaces the policy at once; a tampered one,
// a rollback or the same bytes leave it; every outcome is reported.
func TestInstall(t *testing.T) {
	f := guardtest.New(t, epoch)
	w := newProxy().worker(t, f.Config(t, nil))
	assert.Equal(t, []uint64{1}, w.tel.loaded)
	assert.Equal(t, epoch.Add(guardtest.Validity), w.tel.expires)
	assert.True(t, w.log.has("installed policy bundle revision 1"))

	revoke := f.WithPolicy("revocations.yaml", []byte(strings.Replace(string(f.Files["policies/revocations.yaml"]), guardtest.OldReader, reader, 1)))
	bad := f.Bundle(t, 2, revoke)
	bad[len(bad)/2] ^= 0xff
	require.Error(t, w.Install(bad, "test"))
	require.ErrorContains(t, w.Install(f.Bundle(t, 1, revoke), "test"), "rollback")
	assert.Equal(t, 2, w.tel.rejected)
	assert.True(t, w.log.has("rejected policy bundle from test (keeping revision 1)"))
	var x Exchange
	assert.True(t, w.Decide(&x, get("/v1/meters/42/readings").from(reader)).Forward())

	good := f.Bundle(t, 2, revoke)
	require.NoError(t, w.Install(good, "test"))
	require.NoError(t, w.Install(good, "test"), "the same bytes again change nothing")
	assert.Equal(t, []uint64{1, 2}, w.tel.loaded)
	out := w.Decide(&x, get("/v1/meters/42/readings").from(reader))
	assert.Equal(t, uint32(403), out.Status)
	assert.Equal(t, uint64(2), w.recs.last(t).BundleRevision)
}

// TestWorkersShareBundles: the worker that fetched a bundle hands it over
// in shared data; every other worker installs it before its next decision.
func TestWorkersShareBundles(t *testing.T) {
	f := guardtest.New(t, epoch)
	p := newProxy()
	cfg := f.Config(t, func(m map[string]any) {
		pol := m["policy"].(map[string]any)
		delete(pol, "inline")
		pol["distributor"] = map[string]any{"cluster": "distributor", "channel": "grid", "pollInterval": "5s"}
	})
	a, b := p.worker(t, cfg), p.worker(t, cfg)
	var x Exchange
	require.Equal(t, uint32(503), b.Decide(&x, get("/v1/meters/42/readings").from(reader)).Status)

	data := f.Bundle(t, 1, nil)
	require.NoError(t, a.Install(data, "distributor"))
	require.NoError(t, a.Channel().Installed(a.Revision(), data, `"e1"`))
	assert.True(t, b.Decide(&x, get("/v1/meters/42/readings").from(reader)).Forward())
	assert.True(t, b.log.has("revision 1 (sha256:"))
	assert.True(t, b.log.has("from shared data"))

	// Only one worker polls; the poll carries the shared ETag.
	dueA, err := a.Channel().Due(p.now)
	require.NoError(t, err)
	dueB, err := b.Channel().Due(p.now)
	require.NoError(t, err)
	assert.NotEqual(t, dueA, dueB, "one lease holder")
	hdrs := b.Channel().Request(b.Enforcing())
	assert.Contains(t, hdrs, [2]string{":path", "/v1/bundles/grid"})
	assert.Contains(t, hdrs, [2]string{"if-none-match", `"e1"`})
	assert.Contains(t, hdrs, [2]string{"accept", "application/vnd.meshguard.bundle.v1+tar+gzip"})
}

// TestDecisionAllocatesNothing: allowed decisions that are not recorded
// (an mTLS peer, a cached JWT-SVID, a device read) allocate nothing.
func TestDecisionAllocatesNothing(t *testing.T) {
	f := guardtest.New(t, epoch)
	w := newProxy().worker(t, f.Config(t, nil))
	for name, r := range map[string]*request{
		"mTLS peer":       get("/v1/meters/42/readings?from=1").from(reader),
		"cached JWT-SVID": get("/v1/billing/2026-11", authz(f.SVID(t, invoicer, nil))),
		"device read":     get("/v1/inverters/inv-7/status", [2]string{"x-device-token", f.DeviceToken(t, "inv-7", "inverter", "voltwerk")}).from(reader),
	} {
		var x Exchange
		require.True(t, w.Decide(&x, r).Forward(), name)
		allocs := testing.AllocsPerRun(200, func() { w.Decide(&x, r) })
		assert.Zero(t, allocs, name)
	}
}

// BenchmarkDecide is one decision natively with a 10k-rule bundle:
// go test ./filters/guard/internal/decide -run '^$' -bench Decide -benchmem
func BenchmarkDecide(b *testing.B) {
	f := guardtest.New(b, epoch)
	cfg := f.Config(b, guardtest.Inline(f.Bundle(b, 1, f.Big(10000))))
	// The same with a caller limit on the deciding rule (sorted before
	// bulk.yaml, so it decides; never reached).
	limited := f.Big(10000)
	limited["policies/a-limited.yaml"] = []byte(`apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: a-limited}
spec:
  rules:
    - {name: w9999, effect: allow, subjects: [spiffe://grid.example/ns/bulk/sa/w9999], paths: ["/v1/bulk/9999/**"], methods: [GET], rateLimit: {per: workload, requests: 1000000000, period: 1s}}
`)
	limitedCfg := f.Config(b, guardtest.Inline(f.Bundle(b, 1, limited)))
	for _, tc := range []struct {
		name string
		r    *request
		cfg  []byte
	}{
		{"mtls-peer", get("/v1/bulk/9999/x").from("spiffe://grid.example/ns/bulk/sa/w9999"), cfg},
		{"jwt-cache-hit", get("/v1/bulk/9999/x", authz(f.SVID(b, "spiffe://grid.example/ns/bulk/sa/w9999", nil))), cfg},
		{"mtls-peer-caller-limit", get("/v1/bulk/9999/x").from("spiffe://grid.example/ns/bulk/sa/w9999"), limitedCfg},
	} {
		b.Run(tc.name, func(b *testing.B) {
			w := newProxy().worker(b, tc.cfg)
			var x Exchange
			b.ReportAllocs()
			for b.Loop() {
				if !w.Decide(&x, tc.r).Forward() {
					b.Fatal("denied")
				}
			}
		})
	}
}

// TestSDKFree: the core links no Proxy-Wasm SDK, so it runs natively.
func TestSDKFree(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "proxy-wasm-go-sdk")
	assert.NotContains(t, string(out), "filters/abi")
}
