//go:build !wasip1

package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/policies"
)

// The issue-13 classes through the real guard.wasm in the host; the core's
// table tests (internal/decide) cover each case natively.

const (
	gateway = "spiffe://grid.example/ns/grid/sa/grid-gateway"
	billing = "spiffe://grid.example/ns/billing/sa/billing"
)

func bearer(tok string) [2]string { return [2]string{"authorization", "Bearer " + tok} }

func TestOneCallerInTheModule(t *testing.T) {
	f := newFixture(t)
	cfg := f.Config(t, func(m map[string]any) {
		m["identity"].(map[string]any)["trustedForwarders"] = []string{gateway}
		m["audit"] = map[string]any{"logAllows": true}
	})
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
	dev := [2]string{"x-device-token", f.DeviceToken(t, "inv-9", "inverter", "voltwerk")}

	s := h.NewStream(peer(billing))
	s.Request("POST", "/v1/inverters/inv-9/setpoint", bearer(f.ControllerToken(t)), dev)
	lr := s.ExpectLocalReply(403)
	assert.Contains(t, decisionBody(t, lr)["reason"], "two callers: the mTLS peer "+billing+" presents a JWT-SVID of "+controller)
	h.ExpectLog(`"peer":"` + billing + `","token_subject":"` + controller + `"`)

	s = h.NewStream(peer(guardtest.OldReader))
	s.Request("GET", "/v1/meters/42/readings", bearer(f.SVID(t, reader, nil)))
	s.ExpectLocalReply(403)

	s = h.NewStream(peer(gateway))
	s.Request("GET", "/v1/meters/42/readings", bearer(f.SVID(t, reader, func(c map[string]any) { c["jti"] = "j-77" })))
	s.ExpectNoLocalReply()
	h.ExpectLog(`"subject":"` + reader + `"`)
	h.ExpectLog(`"peer":"` + gateway + `","token_subject":"` + reader + `","forwarder":"` + gateway + `","jti":"j-77"`)
}

func TestPerServiceAudienceInTheModule(t *testing.T) {
	f := newFixture(t)
	const self = "spiffe://grid.example/ns/metering/sa/meter-api"
	cfg := f.Config(t, func(m map[string]any) {
		j := m["identity"].(map[string]any)["jwtSvid"].(map[string]any)
		j["localAudience"], j["audiences"] = true, []string{}
	})
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
	local := host.NewProps().SetString("connection.uri_san_local_certificate", self)
	tok := func(aud string) [2]string {
		return bearer(f.SVID(t, guardtest.Invoicer, func(c map[string]any) { c["aud"] = aud }))
	}
	s := h.NewStream(local)
	s.Request("GET", "/v1/billing/2026-11", tok(self))
	s.ExpectNoLocalReply()
	s = h.NewStream(local)
	s.Request("GET", "/v1/billing/2026-11", tok("spiffe://grid.example/ns/der/sa/der-api"))
	assert.Contains(t, decisionBody(t, s.ExpectLocalReply(403))["reason"], "audience mismatch")
}

func TestDeviceBindingInTheModule(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, nil)))
	ctl := bearer(f.ControllerToken(t))
	s := h.NewStream(peer(controller))
	s.Request("PUT", "/v1/inverters/inv-b/setpoint", ctl, [2]string{"x-device-token", f.DeviceToken(t, "inv-a", "inverter", "voltwerk")})
	assert.Equal(t, policies.ReasonTargetMismatch, decisionBody(t, s.ExpectLocalReply(403))["reason"])
	h.ExpectLog(`"target_device":"inv-b"`)
	s = h.NewStream(peer(controller))
	s.Request("PUT", "/v1/inverters/inv-b/setpoint", ctl)
	assert.Equal(t, policies.ReasonTargetNoToken, decisionBody(t, s.ExpectLocalReply(403))["reason"])
}

func TestCredentialsDoNotTravel(t *testing.T) {
	f := newFixture(t)
	dev := [2]string{"x-device-token", f.DeviceToken(t, "inv-7", "inverter", "voltwerk")}
	for _, tc := range []struct {
		name string
		keep []string
		gone []string
		kept []string
	}{
		{"removed by default", nil, []string{"authorization", "x-device-token"}, nil},
		{"kept when configured", []string{"authorization"}, []string{"x-device-token"}, []string{"authorization"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.Config(t, func(m map[string]any) {
				if tc.keep != nil {
					m["identity"].(map[string]any)["keepCredentialHeaders"] = tc.keep
				}
			})
			h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
			s := h.NewStream(nil)
			s.Request("GET", "/v1/inverters/inv-7/status", bearer(f.SVID(t, reader, nil)), dev)
			s.ExpectNoLocalReply()
			for _, k := range tc.gone {
				_, ok := s.RequestHeader(k)
				assert.False(t, ok, "%s went upstream", k)
			}
			for _, k := range tc.kept {
				_, ok := s.RequestHeader(k)
				assert.True(t, ok, "%s was removed", k)
			}
		})
	}
}

func TestAmbiguousCredentialsInTheModule(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, nil)))
	a, b := f.SVID(t, reader, nil), f.SVID(t, guardtest.Invoicer, nil)
	for name, hdrs := range map[string][][2]string{
		"two authorization headers": {bearer(a), bearer(b)},
		"Bearer without a token":    {{"authorization", "Bearer"}},
		"a tab for the space":       {{"authorization", "Bearer\t" + a}},
		"a junk second token":       {{"authorization", "Bearer " + a + " " + b}},
		"tokens in two headers":     {{"x-jwt-svid", b}, bearer(a)},
		"two device tokens":         {{"x-device-token", a}, {"x-device-token", b}},
	} {
		t.Run(name, func(t *testing.T) {
			s := h.NewStream(peer(reader))
			s.Request("GET", "/v1/meters/42/readings", hdrs...)
			lr := s.ExpectLocalReply(401)
			body := decisionBody(t, lr)
			assert.Equal(t, "deny", body["decision"])
			assert.True(t, strings.HasPrefix(body["reason"], "ambiguous credentials: "), body["reason"])
			ch, ok := lr.Headers.Get("www-authenticate")
			require.True(t, ok)
			assert.True(t, strings.HasPrefix(ch, `Bearer error="invalid_request", error_description="`), ch)
		})
	}
}

func TestCanonicalPathsInTheModule(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		mode, path string
		status     uint32
		upstream   string
	}{
		{"", "/v1/meters/..%2F..%2Finverters%2Finv-1/readings", 400, ""},
		{"", "/v1/meters/42/./readings", 400, ""},
		{"normalize", "/v1/meters/42/./%72eadings", 0, "/v1/meters/42/readings"},
		{"merge-slashes", "/v1/meters//42/readings?x=1", 0, "/v1/meters/42/readings?x=1"},
		{"merge-slashes", "/v1/meters/..%2Fadmin", 400, ""},
	} {
		t.Run(tc.mode+" "+tc.path, func(t *testing.T) {
			cfg := f.Config(t, func(m map[string]any) {
				if tc.mode != "" {
					m["paths"] = tc.mode
				}
			})
			h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
			s := h.NewStream(peer(reader))
			s.Request("GET", tc.path)
			if tc.status != 0 {
				body := decisionBody(t, s.ExpectLocalReply(tc.status))
				assert.Equal(t, "deny", body["decision"])
				assert.NotEmpty(t, body["reason"])
				return
			}
			s.ExpectNoLocalReply()
			s.ExpectRequestHeader(":path", tc.upstream)
		})
	}
}
