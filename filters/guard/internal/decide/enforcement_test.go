//go:build !wasip1

package decide

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/policies"
)

const (
	gateway = "spiffe://grid.example/ns/grid/sa/grid-gateway"
	billing = "spiffe://grid.example/ns/billing/sa/billing"
	// meterAPI is the guarded service's own SPIFFE ID (its local
	// certificate), the per-service JWT audience.
	meterAPI = "spiffe://grid.example/ns/metering/sa/meter-api"
)

// decideOnce decides r on a fresh worker of config mutate and returns the
// outcome and the worker.
func decideOnce(t *testing.T, f *guardtest.Fixture, mutate func(map[string]any), r *request) (Outcome, *worker) {
	t.Helper()
	w := newProxy().worker(t, f.Config(t, mutate))
	require.NoError(t, w.Err())
	var x Exchange
	return w.Decide(&x, r), w
}

func identityOf(m map[string]any) map[string]any { return m["identity"].(map[string]any) }

func forwarders(ids ...string) func(map[string]any) {
	return func(m map[string]any) {
		identityOf(m)["trustedForwarders"] = ids
		m["audit"] = map[string]any{"logAllows": true}
	}
}

// TestOneCallerPerRequest: a peer and a JWT-SVID of another subject are
// two callers and refused, unless the peer is a trusted forwarder; every
// identity is checked (revocations of the peer too) and recorded.
func TestOneCallerPerRequest(t *testing.T) {
	f := guardtest.New(t, epoch)
	dev := [2]string{"x-device-token", f.DeviceToken(t, "inv-9", "inverter", "voltwerk")}
	readerTok := f.SVID(t, reader, func(c map[string]any) { c["jti"] = "j-reader-1" })
	cases := []struct {
		name   string
		config func(map[string]any)
		req    *request
		status uint32
		reason string
		// The record: subject decided on, peer, token subject, forwarder.
		subject, peer, token, forwarder string
	}{
		{"billing's X509-SVID with the controller's JWT-SVID writes a setpoint", forwarders(gateway),
			req("POST", "/v1/inverters/inv-9/setpoint", authz(f.ControllerToken(t)), dev).from(billing),
			403, "two callers: the mTLS peer " + billing + " presents a JWT-SVID of " + controller, "", billing, controller, ""},
		{"revoked peer with the reader's token", nil, get("/v1/meters/42/readings", authz(readerTok)).from(guardtest.OldReader),
			403, "two callers", "", guardtest.OldReader, reader, ""},
		{"a revoked peer is revoked even as a trusted forwarder", forwarders(guardtest.OldReader),
			get("/v1/meters/42/readings", authz(readerTok)).from(guardtest.OldReader),
			403, policies.ReasonRevokedPeer, reader, guardtest.OldReader, reader, guardtest.OldReader},
		{"a trusted forwarder relays the reader's token", forwarders(gateway), get("/v1/meters/42/readings", authz(readerTok)).from(gateway),
			0, policies.ReasonAllowRule, reader, gateway, reader, gateway},
		{"a forwarder without a token is itself the caller", forwarders(gateway), get("/v1/meters/42/readings").from(gateway),
			403, policies.ReasonDefaultDeny, gateway, gateway, "", ""},
		{"peer and token of one identity", forwarders(gateway), get("/v1/meters/42/readings", authz(readerTok)).from(reader),
			0, policies.ReasonAllowRule, reader, reader, reader, ""},
		{"a revoked jti is revoked through a forwarder", forwarders(gateway),
			get("/v1/meters/42/readings", authz(f.SVID(t, reader, func(c map[string]any) { c["jti"] = "7c1d0d6e-leaked-token" }))).from(gateway),
			403, policies.ReasonRevokedJTI, reader, gateway, reader, gateway},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, w := decideOnce(t, f, tc.config, tc.req)
			require.Equal(t, tc.status, out.Status, "%s", out.Body)
			rec := w.recs.last(t)
			assert.Contains(t, rec.Reason, tc.reason)
			assert.Equal(t, tc.subject, rec.Subject, "subject")
			assert.Equal(t, tc.peer, rec.Peer, "peer")
			assert.Equal(t, tc.token, rec.TokenSubject, "token subject")
			assert.Equal(t, tc.forwarder, rec.Forwarder, "forwarder")
			if tc.token == reader && !strings.Contains(tc.name, "jti") {
				assert.Equal(t, "j-reader-1", rec.JTI)
			}
		})
	}
	t.Run("a forwarder must be a SPIFFE ID", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, forwarders("gateway")))
		assert.ErrorContains(t, w.Err(), "identity.trustedForwarders[0]")
	})
}

// TestPerServiceAudience: with localAudience a token is accepted only for
// the service whose certificate the connection shows.
func TestPerServiceAudience(t *testing.T) {
	f := guardtest.New(t, epoch)
	local := func(m map[string]any) {
		j := identityOf(m)["jwtSvid"].(map[string]any)
		j["localAudience"], j["audiences"] = true, []string{}
	}
	forAud := func(aud string) string {
		return f.SVID(t, invoicer, func(c map[string]any) { c["aud"] = aud })
	}
	w := newProxy().worker(t, f.Config(t, local))
	require.NoError(t, w.Err())
	for _, tc := range []struct {
		name   string
		local  string
		token  string
		status uint32
		reason string
	}{
		{"token for this service", meterAPI, forAud(meterAPI), 0, ""},
		{"token captured at another service", meterAPI, forAud("spiffe://grid.example/ns/der/sa/der-api"), 403, "audience mismatch"},
		{"the shared audience of old configurations", meterAPI, forAud(guardtest.Audience), 403, "audience mismatch"},
		{"no local certificate", "", forAud(meterAPI), 403, "no local SPIFFE ID"},
		{"the token again after the service identity changed", "spiffe://grid.example/ns/der/sa/der-api", forAud(meterAPI), 403, "audience mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get("/v1/billing/2026-11", authz(tc.token))
			r.local = tc.local
			var x Exchange
			out := w.Decide(&x, r)
			require.Equal(t, tc.status, out.Status, "%s", out.Body)
			if tc.status != 0 {
				assert.Contains(t, reply(t, out).Reason, tc.reason)
			}
		})
	}
	t.Run("audiences or localAudience are required", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, func(m map[string]any) { identityOf(m)["jwtSvid"].(map[string]any)["audiences"] = []string{} }))
		assert.ErrorContains(t, w.Err(), "or localAudience")
	})
}

// TestDeviceBinding: the device token must attest the device the request
// targets; the target is recorded and the write rate limit is the
// target's, whatever case the id is written in.
func TestDeviceBinding(t *testing.T) {
	f := guardtest.New(t, epoch)
	ctl := authz(f.ControllerToken(t))
	tokA := [2]string{"x-device-token", f.DeviceToken(t, "inv-a", "inverter", "voltwerk")}
	for _, tc := range []struct {
		name           string
		req            *request
		status         uint32
		reason         string
		target, device string
	}{
		{"device A's token writes device B", req("POST", "/v1/inverters/inv-b/setpoint", ctl, tokA).from(controller),
			403, policies.ReasonTargetMismatch, "inv-b", "inv-a"},
		{"a write to a device without a device token", req("POST", "/v1/inverters/inv-b/setpoint", ctl).from(controller),
			403, policies.ReasonTargetNoToken, "inv-b", ""},
		{"device A's token writes device A", req("POST", "/v1/inverters/inv-a/setpoint", ctl, tokA).from(controller),
			0, policies.ReasonAllowRule, "inv-a", "inv-a"},
		{"the id in another case is the same device", req("POST", "/v1/inverters/INV-A/setpoint", ctl, tokA).from(controller),
			0, policies.ReasonAllowRule, "INV-A", "inv-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, w := decideOnce(t, f, nil, tc.req)
			require.Equal(t, tc.status, out.Status, "%s", out.Body)
			rec := w.recs.last(t)
			assert.Equal(t, tc.reason, rec.Reason)
			assert.Equal(t, tc.target, rec.TargetDevice)
			assert.Equal(t, tc.device, rec.DeviceID)
		})
	}

	t.Run("the write budget is the target's, in any case", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, nil))
		// Two tokens for one device, its id spelled in two cases: still
		// one bucket of burst 5.
		lower := [2]string{"x-device-token", f.DeviceToken(t, "inv-8", "inverter", "sunbridge")}
		upper := [2]string{"x-device-token", f.DeviceToken(t, "INV-8", "inverter", "sunbridge")}
		var statuses []uint32
		for i := range 7 {
			path, tok := "/v1/inverters/inv-8/setpoint", lower
			if i%2 == 1 {
				path, tok = "/v1/inverters/Inv-8/setpoint", upper
			}
			var x Exchange
			statuses = append(statuses, w.Decide(&x, req("POST", path, ctl, tok).from(controller)).Status)
		}
		assert.Equal(t, []uint32{0, 0, 0, 0, 0, 429, 429}, statuses)
		assert.Equal(t, "write rate limit exceeded for device inv-8", w.recs.last(t).Reason)
	})
}

// TestCredentialHeadersRemoved: verified credentials do not travel
// upstream unless the configuration keeps one; what the guard did not
// verify is left alone.
func TestCredentialHeadersRemoved(t *testing.T) {
	f := guardtest.New(t, epoch)
	dev := [2]string{"x-device-token", f.DeviceToken(t, "inv-7", "inverter", "voltwerk")}
	for _, tc := range []struct {
		name    string
		config  func(map[string]any)
		req     *request
		removed []string
	}{
		{"the JWT-SVID in authorization and the device token", nil,
			get("/v1/inverters/inv-7/status", authz(f.SVID(t, reader, nil)), dev), []string{"authorization", "x-device-token"}},
		{"the JWT-SVID in x-jwt-svid", nil, get("/v1/billing/2026-11", [2]string{"x-jwt-svid", f.SVID(t, invoicer, nil)}), []string{"x-jwt-svid"}},
		{"the same token in both JWT-SVID headers", nil, func() *request {
			tok := f.SVID(t, invoicer, nil)
			return get("/v1/billing/2026-11", [2]string{"x-jwt-svid", tok}, authz(tok))
		}(), []string{"authorization", "x-jwt-svid"}},
		{"kept by keepCredentialHeaders", func(m map[string]any) { identityOf(m)["keepCredentialHeaders"] = []string{"X-Device-Token"} },
			get("/v1/inverters/inv-7/status", authz(f.SVID(t, reader, nil)), dev), []string{"authorization"}},
		{"another authorization scheme is not a credential the guard verified", nil,
			get("/v1/meters/42/readings", [2]string{"authorization", "Basic dXNlcjpwdw=="}).from(reader), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := decideOnce(t, f, tc.config, tc.req)
			require.True(t, out.Forward(), "%s", out.Body)
			assert.ElementsMatch(t, tc.removed, tc.req.removed)
		})
	}
	t.Run("a kept header must be a credential header", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, func(m map[string]any) { identityOf(m)["keepCredentialHeaders"] = []string{"x-role"} }))
		assert.ErrorContains(t, w.Err(), "not a credential header")
	})
}

// TestAmbiguousCredentials: a credential that could be read two ways is
// refused with 401 and an RFC 6750 reason, whatever the header order.
func TestAmbiguousCredentials(t *testing.T) {
	f := guardtest.New(t, epoch)
	a, b := f.SVID(t, reader, nil), f.SVID(t, invoicer, nil)
	devA := f.DeviceToken(t, "inv-7", "inverter", "voltwerk")
	for _, tc := range []struct {
		name   string
		hdrs   [][2]string
		reason string
	}{
		{"two authorization values", [][2]string{authz(a), authz(b)}, "carries the authorization header more than once"},
		{"the same token twice in authorization", [][2]string{authz(a), authz(a)}, "more than once"},
		{"Bearer without a token", [][2]string{{"authorization", "Bearer"}}, "Bearer scheme but no token"},
		{"Bearer and spaces only", [][2]string{{"authorization", "Bearer   "}}, "Bearer scheme but no token"},
		{"a tab for the space", [][2]string{{"authorization", "Bearer\t" + a}}, "not followed by a space"},
		{"a junk second token", [][2]string{{"authorization", "Bearer " + a + " junk"}}, "exactly one bearer token"},
		{"two Authorization headers joined by a proxy", [][2]string{{"authorization", "Bearer " + a + ",Bearer " + b}}, "exactly one bearer token"},
		{"another scheme hiding a Bearer credential", [][2]string{{"authorization", "Basic dXNlcg==, Bearer " + b}}, "joins another scheme"},
		{"an empty authorization header", [][2]string{{"authorization", ""}}, "is empty"},
		{"two different JWT-SVIDs in two headers", [][2]string{authz(a), {"x-jwt-svid", b}}, "two different JWT-SVIDs"},
		{"junk in x-jwt-svid next to a good token", [][2]string{authz(a), {"x-jwt-svid", "junk junk"}}, "x-jwt-svid header does not hold exactly one token"},
		{"two device tokens", [][2]string{{"x-device-token", devA}, {"x-device-token", devA}}, "x-device-token header more than once"},
		{"a device token and junk", [][2]string{{"x-device-token", devA + " " + devA}}, "x-device-token header does not hold exactly one token"},
		{"a Bearer device token with a tab", [][2]string{{"x-device-token", "bearer\t" + devA}}, "not followed by a space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every order of the headers gets the same answer.
			for _, hdrs := range [][][2]string{tc.hdrs, reversed(tc.hdrs)} {
				out, w := decideOnce(t, f, nil, get("/v1/meters/42/readings", hdrs...).from(reader))
				require.Equal(t, uint32(401), out.Status, "%s", out.Body)
				r := reply(t, out)
				assert.Equal(t, contract.DecisionDeny, r.Decision)
				assert.Contains(t, r.Reason, "ambiguous credentials: ")
				assert.Contains(t, r.Reason, tc.reason)
				require.Len(t, out.Headers, 3)
				ch := out.Headers[2]
				assert.Equal(t, "www-authenticate", ch[0])
				assert.True(t, strings.HasPrefix(ch[1], `Bearer error="invalid_request", error_description="`), ch[1])
				assert.NotContains(t, strings.TrimSuffix(strings.TrimPrefix(ch[1], `Bearer error="invalid_request", error_description="`), `"`), `"`)
				rec := w.recs.last(t)
				assert.Equal(t, contract.DecisionDeny, rec.Decision)
				assert.Equal(t, reader, rec.Peer)
			}
		})
	}
	t.Run("well-formed credentials in any order", func(t *testing.T) {
		hdrs := [][2]string{{"authorization", "bearer  " + a}, {"x-jwt-svid", a}, {"x-device-token", "Bearer " + devA}}
		for _, h := range [][][2]string{hdrs, reversed(hdrs)} {
			out, _ := decideOnce(t, f, nil, get("/v1/inverters/inv-7/status", h...))
			assert.True(t, out.Forward(), "%s", out.Body)
		}
	})
}

func reversed(h [][2]string) [][2]string {
	out := make([][2]string, len(h))
	for i, kv := range h {
		out[len(h)-1-i] = kv
	}
	return out
}

// TestPaths: a path that is not canonical gets 400 (decision deny) by
// default; the normalising modes rewrite it, decide on the rewritten path
// and forward it.
func TestPaths(t *testing.T) {
	f := guardtest.New(t, epoch)
	mode := func(m string) func(map[string]any) { return func(c map[string]any) { c["paths"] = m } }
	for _, tc := range []struct {
		name, mode, path string
		status           uint32
		reason           string
		// forwarded is the :path the upstream gets ("": unchanged).
		forwarded string
	}{
		{"canonical", "", "/v1/meters/42/readings?from=1", 0, "", ""},
		{"dot segment", "", "/v1/meters/42/./readings", 400, policies.ErrPathDotSegment.Error(), ""},
		{"empty segment", "", "/v1//meters/42/readings", 400, policies.ErrPathEmptySegment.Error(), ""},
		{"encoded unreserved character", "", "/v1/meters/42/%72eadings", 400, policies.ErrPathEncodedChar.Error(), ""},
		{"encoded slash after ..", "", "/v1/meters/..%2F..%2Fadmin/readings", 400, policies.ErrPathEncodedSlash.Error(), ""},
		{"encoded dots", "", "/v1/meters/%2e%2e/admin", 400, policies.ErrPathEncodedChar.Error(), ""},
		{"normalised", "normalize", "/v1/meters/42/./%72eadings?from=1", 0, "", "/v1/meters/42/readings?from=1"},
		{"normalising refuses empty segments", "normalize", "/v1//meters/42/readings", 400, policies.ErrPathEmptySegment.Error(), ""},
		{"slashes merged", "merge-slashes", "/v1//meters/42//readings", 0, "", "/v1/meters/42/readings"},
		{"an encoded slash is never decoded", "merge-slashes", "/v1/meters/..%2Fadmin", 400, policies.ErrPathEncodedSlash.Error(), ""},
		{"the normalised path is what is decided", "normalize", "/v1/meters/42/readings/../../../admin/users", 403, policies.ReasonDefaultDeny, "/v1/admin/users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mut func(map[string]any)
			if tc.mode != "" {
				mut = mode(tc.mode)
			}
			r := get(tc.path).from(reader)
			out, w := decideOnce(t, f, mut, r)
			require.Equal(t, tc.status, out.Status, "%s", out.Body)
			if tc.status != 0 {
				rep := reply(t, out)
				assert.Equal(t, contract.DecisionDeny, rep.Decision)
				assert.Equal(t, tc.reason, rep.Reason)
				assert.Equal(t, 1, w.tel.decided[contract.DecisionDeny])
			}
			if tc.forwarded == "" {
				assert.Empty(t, r.replaced)
			} else {
				assert.Equal(t, [][2]string{{":path", tc.forwarded}}, r.replaced)
			}
		})
	}
	t.Run("an unknown mode is refused", func(t *testing.T) {
		w := newProxy().worker(t, f.Config(t, mode("decode")))
		assert.ErrorContains(t, w.Err(), `paths: "decode"`)
	})
}

// FuzzCredentials: whatever credential headers a request carries, the
// guard answers (never panics), and the answer does not depend on their
// order.
func FuzzCredentials(f *testing.F) {
	fx := guardtest.New(f, epoch)
	w := newProxy().worker(f, fx.Config(f, nil))
	tok := fx.SVID(f, reader, nil)
	f.Add("Bearer "+tok, "", "")
	f.Add("Bearer "+tok, tok, "")
	f.Add("bearer\t"+tok, "", "a.b.c")
	f.Add("Basic x, Bearer "+tok, "junk junk", "Bearer  a.b.c")
	f.Add("Bearer", "", "")
	f.Fuzz(func(t *testing.T, authorization, svid, device string) {
		var hdrs [][2]string
		for _, kv := range [][2]string{{"authorization", authorization}, {"x-jwt-svid", svid}, {"x-device-token", device}} {
			if kv[1] != "" {
				hdrs = append(hdrs, kv)
			}
		}
		var x Exchange
		a := w.Decide(&x, get("/v1/meters/42/readings", hdrs...).from(reader))
		b := w.Decide(&x, get("/v1/meters/42/readings", reversed(hdrs)...).from(reader))
		assert.Equal(t, a.Status, b.Status, "%s / %s", a.Body, b.Body)
		assert.Contains(t, []uint32{0, 401, 403}, a.Status, "%s", a.Body)
	})
}
