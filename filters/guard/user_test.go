//go:build !wasip1

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/internal/contract"
)

// userHarness runs guard.wasm with the IdP's gateway policy and end-user
// tokens enabled; mutate edits the configuration further.
func userHarness(t *testing.T, mutate func(map[string]any)) (*hosttest.Harness, *guardtest.IdP, *guardtest.Fixture) {
	f := newFixture(t)
	idp := guardtest.NewIdP(t, epoch)
	b := f.Bundle(t, 2, f.WithPolicy("edge.yaml", idp.Policy()))
	cfg := f.Config(t, func(m map[string]any) {
		guardtest.Inline(b)(m)
		guardtest.EndUser("")(m)
		if mutate != nil {
			mutate(m)
		}
	})
	return hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg)), idp, f
}

func wwwAuthenticate(lr *host.LocalReply) string {
	v, _ := lr.Headers.Get("www-authenticate")
	return v
}

// TestEndUserTokensInHost: end-user access tokens through the real
// guard.wasm at an ingress gateway: scope and claim conditions with the
// gateway's SPIFFE ID, RFC 6750 challenges, forwarded claims, the audit
// record's user.
func TestEndUserTokensInHost(t *testing.T) {
	h, idp, _ := userHarness(t, nil)
	tok := idp.Token(t, "alice", "meter:read meter:write", nil)

	s := h.NewStream(peer(guardtest.Gateway))
	s.Request("POST", "/api/v1/meters/m1", [2]string{"authorization", "Bearer " + tok}, [2]string{"x-user-subject", "mallory"})
	s.ExpectNoLocalReply()
	s.ExpectRequestHeader("x-user-subject", "alice")
	_, kept := s.RequestHeader("authorization")
	assert.False(t, kept, "the verified access token does not go upstream")

	// insufficient_scope names the scope.
	ro := idp.Token(t, "bob", "meter:read", nil)
	s = h.NewStream(peer(guardtest.Gateway))
	s.Request("POST", "/api/v1/meters/m1", [2]string{"authorization", "Bearer " + ro})
	lr := s.ExpectLocalReply(403)
	assert.Equal(t, `Bearer error="insufficient_scope", scope="meter:write"`, wwwAuthenticate(lr))

	// No token: a bare challenge.
	s = h.NewStream(peer(guardtest.Gateway))
	s.Request("GET", "/api/v1/meters/m1")
	lr = s.ExpectLocalReply(401)
	assert.Equal(t, "Bearer", wwwAuthenticate(lr))

	// Invalid tokens: invalid_token.
	for name, bad := range map[string]string{
		"expired": idp.Token(t, "alice", "meter:read", func(c map[string]any) { c["exp"] = epoch.Add(-time.Hour).Unix() }),
		"not at+jwt": guardtest.Sign(t, idp.Key, "idp-1", "ES256", map[string]any{"iss": guardtest.IdPIssuer, "sub": "a",
			"aud": guardtest.APIAudience, "exp": epoch.Add(time.Hour).Unix(), "iat": epoch.Unix(), "scope": "meter:read"}),
		"iat ahead": idp.Token(t, "alice", "meter:read", func(c map[string]any) { c["iat"] = epoch.Add(time.Hour).Unix() }),
		"forged":    tok[:len(tok)-6] + ro[len(ro)-6:],
	} {
		s = h.NewStream(peer(guardtest.Gateway))
		s.Request("GET", "/api/v1/meters/m1", [2]string{"authorization", "Bearer " + bad})
		lr = s.ExpectLocalReply(401)
		assert.True(t, strings.HasPrefix(wwwAuthenticate(lr), `Bearer error="invalid_token", error_description="`), name)
	}
	// The same token from a workload that is not the gateway: 403.
	s = h.NewStream(peer(reader))
	s.Request("GET", "/api/v1/meters/m1", [2]string{"authorization", "Bearer " + tok})
	s.ExpectLocalReply(403)
}

// TestEndUserRecordInHost: the uploaded audit record carries the user
// (and, with a pseudonym key, only its keyed hash).
func TestEndUserRecordInHost(t *testing.T) {
	for _, key := range []string{"", "c2VjcmV0LXBzZXVkb255bS1rZXktMzItYnl0ZXMtbG9uZyEh"} {
		f := newFixture(t)
		idp := guardtest.NewIdP(t, epoch)
		b := f.Bundle(t, 2, f.WithPolicy("edge.yaml", idp.Policy()))
		cfg := f.Config(t, func(m map[string]any) {
			guardtest.Inline(b)(m)
			guardtest.EndUser(key)(m)
			m["audit"] = map[string]any{"logAllows": true, "sink": map[string]any{"cluster": "distributor", "batchSize": 1, "flushInterval": "1s"}}
		})
		h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg), hosttest.Cluster("distributor"), hosttest.Workers(1))
		s := h.NewStream(peer(guardtest.Gateway))
		s.Request("GET", "/api/v1/meters/m1", [2]string{"authorization", "Bearer " + idp.Token(t, "alice", "meter:read", nil)})
		s.ExpectNoLocalReply()
		s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
		s.Complete()
		h.Advance(2 * time.Second)
		up := uploads(h)
		require.NotEmpty(t, up, "no upload")
		recs := batchOf(t, up[0])
		require.Len(t, recs, 1)
		assert.Equal(t, guardtest.IdPIssuer, recs[0][contract.FieldUserIssuer])
		if key == "" {
			assert.Equal(t, "alice", recs[0][contract.FieldUser])
		} else {
			assert.True(t, strings.HasPrefix(recs[0][contract.FieldUser].(string), "hmac-sha256:"), recs[0][contract.FieldUser])
		}
	}
}

// TestJWTAuthnClaimsInHost: with identity.endUser.jwtAuthn the guard takes
// the claims Envoy's jwt_authn verified from its dynamic metadata, and a
// token header (or a forged claims header) counts for nothing.
func TestJWTAuthnClaimsInHost(t *testing.T) {
	h, idp, _ := userHarness(t, func(m map[string]any) {
		m["identity"].(map[string]any)["endUser"].(map[string]any)["jwtAuthn"] = []string{guardtest.IdPIssuer}
	})
	verified := func(payload map[string]any) *host.Props {
		return peer(guardtest.Gateway).SetJWTAuthnPayload(guardtest.IdPIssuer, payload)
	}
	s := h.NewStream(verified(map[string]any{"iss": guardtest.IdPIssuer, "sub": "alice", "scope": "meter:read", "exp": float64(epoch.Add(time.Hour).Unix())}))
	s.Request("GET", "/api/v1/meters/m1")
	s.ExpectNoLocalReply()

	s = h.NewStream(verified(map[string]any{"iss": guardtest.IdPIssuer, "sub": "bob", "scope": "other"}))
	s.Request("GET", "/api/v1/meters/m1")
	lr := s.ExpectLocalReply(403)
	assert.Equal(t, `Bearer error="insufficient_scope", scope="meter:read"`, wwwAuthenticate(lr))

	// No metadata: a token in a header is not read in this mode.
	s = h.NewStream(peer(guardtest.Gateway))
	s.Request("GET", "/api/v1/meters/m1", [2]string{"x-jwt-payload", `{"sub":"alice","scope":"meter:read"}`})
	s.ExpectLocalReply(401)
	_ = idp
}
