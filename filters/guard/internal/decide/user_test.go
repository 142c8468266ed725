//go:build !wasip1

package decide

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
)

const pseudoKey = "c2VjcmV0LXBzZXVkb255bS1rZXktMzItYnl0ZXMtbG9uZyEh" // 35 bytes

func userGuard(t *testing.T, key string) (*worker, *guardtest.IdP, *proxy) {
	f := guardtest.New(t, epoch)
	idp := guardtest.NewIdP(t, epoch)
	b := f.Bundle(t, 2, f.WithPolicy("edge.yaml", idp.Policy()))
	cfg := f.Config(t, func(m map[string]any) { guardtest.Inline(b)(m); guardtest.EndUser(key)(m) })
	p := newProxy()
	w := p.worker(t, cfg)
	require.NoError(t, w.Err())
	return w, idp, p
}

func bearer(tok string) [2]string { return [2]string{"authorization", "Bearer " + tok} }

func TestUserTokens(t *testing.T) {
	w, idp, p := userGuard(t, "")
	var x Exchange
	tok := idp.Token(t, "alice", "meter:read meter:write", nil)
	r := req("POST", "/api/v1/meters/m1", bearer(tok), [2]string{"x-user-subject", "mallory"}).from(guardtest.Gateway)
	out := w.Decide(&x, r)
	require.True(t, out.Forward(), "%s", out.Body)
	assert.Contains(t, r.removed, "authorization", "the verified token does not go upstream")
	assert.Contains(t, r.removed, "x-user-subject", "a spoofed forwarded-claim header is removed")
	assert.Equal(t, [][2]string{{"x-user-subject", "alice"}}, r.replaced)

	// Reads need meter:read only; the cached token costs no signature.
	sigs := w.users.verify.Signatures
	require.True(t, w.Decide(&x, get("/api/v1/meters/m1", bearer(tok)).from(guardtest.Gateway)).Forward())
	assert.Equal(t, sigs, w.users.verify.Signatures)

	// Missing scope: 403 insufficient_scope naming the scope.
	ro := idp.Token(t, "bob", "meter:read", nil)
	out = w.Decide(&x, req("POST", "/api/v1/meters/m1", bearer(ro)).from(guardtest.Gateway))
	require.Equal(t, uint32(403), out.Status)
	assert.Contains(t, out.Headers, [2]string{"www-authenticate", `Bearer error="insufficient_scope", scope="meter:write"`})
	rec := w.recs.last(t)
	assert.Equal(t, "bob", rec.User)
	assert.Equal(t, guardtest.IdPIssuer, rec.UserIssuer)
	assert.Equal(t, []string{"edge/meter-writes"}, rec.RuleIDs)

	// No token where a rule needs one: a bare Bearer challenge.
	out = w.Decide(&x, get("/api/v1/meters/m1").from(guardtest.Gateway))
	require.Equal(t, uint32(401), out.Status)
	assert.Contains(t, out.Headers, [2]string{"www-authenticate", "Bearer"})

	// The right token through another workload than the gateway: 403.
	out = w.Decide(&x, get("/api/v1/meters/m1", bearer(tok)).from(reader))
	require.Equal(t, uint32(403), out.Status)

	// Invalid tokens: 401 invalid_token whose description is quote-free.
	for name, bad := range map[string]string{
		"expired":  idp.Token(t, "alice", "meter:read", func(c map[string]any) { c["exp"] = epoch.Add(-time.Hour).Unix() }),
		"audience": idp.Token(t, "alice", "meter:read", func(c map[string]any) { c["aud"] = `evil"\` }),
		"workload JWT": guardtest.Sign(t, idp.Key, "idp-1", "ES256", map[string]any{"iss": guardtest.IdPIssuer, "sub": "a",
			"aud": guardtest.APIAudience, "exp": epoch.Add(time.Hour).Unix(), "iat": epoch.Unix()}),
		"tampered": tok[:len(tok)-4] + "AAAA",
	} {
		out := w.Decide(&x, get("/api/v1/meters/m1", bearer(bad)).from(guardtest.Gateway))
		require.Equal(t, uint32(401), out.Status, name)
		var wa string
		for _, h := range out.Headers {
			if h[0] == "www-authenticate" {
				wa = h[1]
			}
		}
		require.True(t, strings.HasPrefix(wa, `Bearer error="invalid_token", error_description="`), name+": "+wa)
		desc := strings.TrimSuffix(strings.TrimPrefix(wa, `Bearer error="invalid_token", error_description="`), `"`)
		assert.NotContains(t, desc, `"`, name)
		assert.NotContains(t, desc, `\`, name)
		assert.Equal(t, "deny", w.recs.last(t).Decision, name)
	}
	// A token no Issuer owns, in a header JWT-SVIDs share, is read as a
	// JWT-SVID (and refused as one).
	out = w.Decide(&x, get("/api/v1/meters/m1", bearer(idp.Token(t, "alice", "meter:read",
		func(c map[string]any) { c["iss"] = "https://evil.example" }))).from(guardtest.Gateway))
	require.Equal(t, uint32(403), out.Status)
	assert.Contains(t, reply(t, out).Reason, "JWT-SVID rejected")
	// Expiry is honoured on a cache hit too.
	p.now = epoch.Add(2 * time.Hour)
	out = w.Decide(&x, get("/api/v1/meters/m1", bearer(tok)).from(guardtest.Gateway))
	require.Equal(t, uint32(401), out.Status)
}

func TestUserPseudonym(t *testing.T) {
	w, idp, _ := userGuard(t, pseudoKey)
	var x Exchange
	out := w.Decide(&x, req("POST", "/api/v1/meters/m1", bearer(idp.Token(t, "alice", "meter:read", nil))).from(guardtest.Gateway))
	require.Equal(t, uint32(403), out.Status)
	key, err := base64.StdEncoding.DecodeString(pseudoKey)
	require.NoError(t, err)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(guardtest.IdPIssuer + "\x00alice"))
	want := "hmac-sha256:" + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	rec := w.recs.last(t)
	assert.Equal(t, want, rec.User)
	assert.NotContains(t, rec.User, "alice")
}

func TestUserAmbiguous(t *testing.T) {
	w, idp, _ := userGuard(t, "")
	var x Exchange
	a, b := idp.Token(t, "alice", "meter:read", nil), idp.Token(t, "bob", "meter:read", nil)
	out := w.Decide(&x, get("/api/v1/meters/m1", bearer(a), bearer(b)).from(guardtest.Gateway))
	require.Equal(t, uint32(401), out.Status)
	assert.Contains(t, out.Headers[len(out.Headers)-1][1], `error="invalid_request"`)
}

func TestUserConfig(t *testing.T) {
	f := guardtest.New(t, epoch)
	for key, want := range map[string]string{"AAAA": "at least 32", "!!": "not standard base64"} {
		cfg := f.Config(t, guardtest.EndUser(key))
		g := New(cfg, Ports{Shared: newProxy().store, Telemetry: newTelemetry(), Log: &logs{}, Audit: &records{}, Clock: newProxy().clock}, Options{})
		require.Error(t, g.Err())
		assert.Contains(t, g.Err().Error(), want)
	}
}

// TestUserCallerLimit: a rule limited per end user keeps one bucket per
// issuer and subject; the refusal names the user as the record does.
func TestUserCallerLimit(t *testing.T) {
	f := guardtest.New(t, epoch)
	idp := guardtest.NewIdP(t, epoch)
	pol := strings.Replace(string(idp.Policy()), "      scopes: [meter:read]\n",
		"      scopes: [meter:read]\n      rateLimit: {per: user, requests: 1, period: 1m}\n", 1)
	b := f.Bundle(t, 2, f.WithPolicy("edge.yaml", []byte(pol)))
	cfg := f.Config(t, func(m map[string]any) { guardtest.Inline(b)(m); guardtest.EndUser(pseudoKey)(m) })
	w := newProxy().worker(t, cfg)
	require.NoError(t, w.Err())
	var x Exchange
	alice, bob := idp.Token(t, "alice", "meter:read", nil), idp.Token(t, "bob", "meter:read", nil)
	require.True(t, w.Decide(&x, get("/api/v1/meters/m1", bearer(alice)).from(guardtest.Gateway)).Forward())
	require.True(t, w.Decide(&x, get("/api/v1/meters/m1", bearer(bob)).from(guardtest.Gateway)).Forward(), "bob has his own bucket")
	out := w.Decide(&x, get("/api/v1/meters/m1", bearer(alice)).from(guardtest.Gateway))
	require.Equal(t, uint32(429), out.Status)
	reason := reply(t, out).Reason
	assert.Contains(t, reason, "caller rate limit of rule edge/meter-reads exceeded for end user hmac-sha256:")
	assert.NotContains(t, reason, "alice", "the pseudonym hides the subject in the reason too")
}

// TestJWTAuthnUser: claims jwt_authn verified, one payload per request;
// the claims rules name are read, a token header is not.
func TestJWTAuthnUser(t *testing.T) {
	f := guardtest.New(t, epoch)
	idp := guardtest.NewIdP(t, epoch)
	b := f.Bundle(t, 2, f.WithPolicy("edge.yaml", idp.Policy()))
	cfg := f.Config(t, func(m map[string]any) {
		guardtest.Inline(b)(m)
		m["identity"].(map[string]any)["endUser"] = map[string]any{"jwtAuthn": []string{"k1", "k2"}}
	})
	w := newProxy().worker(t, cfg)
	require.NoError(t, w.Err())
	assert.Equal(t, []string{"groups"}, w.users.claims)
	var x Exchange
	payload := func(key string, kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[JWTAuthnFilter+"/"+key+"/"+kv[i]] = kv[i+1]
		}
		return m
	}
	r := req("POST", "/api/v1/meters/m1").from(guardtest.Gateway)
	r.meta = payload("k2", "iss", guardtest.IdPIssuer, "sub", "alice", "scope", "meter:write", "groups", "operators")
	require.True(t, w.Decide(&x, r).Forward())
	// Without the scope: 403 insufficient_scope, the record names the user.
	r = req("POST", "/api/v1/meters/m1").from(guardtest.Gateway)
	r.meta = payload("k2", "iss", guardtest.IdPIssuer, "sub", "carol", "scope", "meter:read", "groups", "operators")
	require.Equal(t, uint32(403), w.Decide(&x, r).Status)
	assert.Equal(t, "carol", w.recs.last(t).User)

	r = req("POST", "/api/v1/meters/m1").from(guardtest.Gateway)
	r.meta = payload("k1", "iss", guardtest.IdPIssuer, "sub", "bob", "scope", "meter:write")
	for k, v := range payload("k2", "iss", guardtest.IdPIssuer, "sub", "eve", "scope", "meter:write") {
		r.meta[k] = v
	}
	out := w.Decide(&x, r)
	require.Equal(t, uint32(401), out.Status)
	assert.Contains(t, reply(t, out).Reason, "jwt_authn verified two payloads")

	// A bearer token is not read in this mode: no user.
	out = w.Decide(&x, get("/api/v1/meters/m1", bearer(idp.Token(t, "alice", "meter:read", nil))).from(guardtest.Gateway))
	require.Equal(t, uint32(403), out.Status, "the token is read as a JWT-SVID and refused")
}
