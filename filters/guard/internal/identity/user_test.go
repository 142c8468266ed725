package identity

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
)

const idpURL = "https://idp.utility.example"

func userIssuerCfg(t testing.TB, ss ...*signer) policies.IssuerConfig {
	return policies.IssuerConfig{Name: "utility-idp", URL: idpURL, Audiences: []string{"https://api.grid.example"},
		Algorithms: []string{"ES256", "PS256", "EdDSA"}, JWKS: jwks(t, ss...), Header: policies.DefaultUserHeader,
		StrictType: true, Leeway: 30 * time.Second,
		ForwardedClaims: []policies.ForwardedClaim{{Claim: "sub", Header: "x-user-subject"}, {Claim: "groups", Header: "x-user-groups"}}}
}

func accessClaims() map[string]any {
	return map[string]any{"iss": idpURL, "sub": "alice", "aud": []string{"other", "https://api.grid.example"},
		"exp": now.Add(time.Hour).Unix(), "iat": now.Add(-time.Minute).Unix(), "client_id": "portal", "jti": "j1",
		"scope": "meter:read meter:write", "groups": []string{"operators"}}
}

func TestUserVerify(t *testing.T) {
	ec := newEC(t, "ec1")
	v, err := NewUserVerifier([]policies.IssuerConfig{userIssuerCfg(t, ec)}, 16)
	require.NoError(t, err)
	tok := ec.sign(t, accessClaims(), map[string]any{"typ": "at+jwt"})
	u, err := v.Verify(tok, "authorization", now)
	require.NoError(t, err)
	assert.Equal(t, "utility-idp", u.Issuer)
	assert.Equal(t, "alice", u.User.Subject)
	assert.Equal(t, []string{"meter:read", "meter:write"}, u.User.Scopes)
	assert.Equal(t, [][2]string{{"x-user-subject", "alice"}, {"x-user-groups", "operators"}}, u.Forwarded)
	assert.Equal(t, uint64(1), v.Signatures)
	// A hit costs no signature and honours expiry.
	_, err = v.Verify(tok, "authorization", now.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v.Signatures)
	assert.Equal(t, uint64(1), v.Cache().Hits)
	_, err = v.Verify(tok, "authorization", now.Add(2*time.Hour))
	require.ErrorIs(t, err, ErrExpired)
	assert.Zero(t, v.Cache().Len(), "an expired token leaves the cache")
	// The same token in another header than its Issuer's is refused.
	_, err = v.Verify(tok, "x-token", now)
	require.ErrorIs(t, err, ErrIssuer)
}

func TestUserVerifyRejects(t *testing.T) {
	ec, other := newEC(t, "ec1"), newEC(t, "ec1")
	rs := newRSA(t, "rs1")
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	edJWK, err := jwk.FromRaw(edPub)
	require.NoError(t, err)
	require.NoError(t, edJWK.Set(jwk.KeyIDKey, "ed1"))
	ed := &signer{kid: "ed1", alg: jwa.EdDSA, key: edKey, pub: edJWK}
	cfg := userIssuerCfg(t, ec, rs, ed)
	v, err := NewUserVerifier([]policies.IssuerConfig{cfg}, 0)
	require.NoError(t, err)
	typ := map[string]any{"typ": "at+jwt"}
	with := func(k string, val any) map[string]any {
		c := accessClaims()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	// Good ones first: every allowed algorithm and typ spelling.
	for name, tok := range map[string]string{
		"PS256":              rs.sign(t, accessClaims(), typ),
		"EdDSA":              ed.sign(t, accessClaims(), typ),
		"application/at+JWT": ec.sign(t, accessClaims(), map[string]any{"typ": "application/at+JWT"}),
		"aud string":         ec.sign(t, with("aud", "https://api.grid.example"), typ),
		"scp array":          ec.sign(t, with("scp", []string{"a"}), typ),
	} {
		_, err := v.Verify(tok, "authorization", now)
		assert.NoError(t, err, name)
	}
	hmacTok := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"ec1","typ":"at+jwt"}`))
		b, _ := json.Marshal(accessClaims())
		p := base64.RawURLEncoding.EncodeToString(b)
		m := hmac.New(sha256.New, []byte("secret"))
		m.Write([]byte(h + "." + p))
		return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}()
	noneTok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." +
		strings.Split(ec.sign(t, accessClaims(), typ), ".")[1] + "."
	rsAsEC := rs.sign(t, accessClaims(), typ)
	parts := strings.Split(rsAsEC, ".")
	// A header naming the RSA key with ES256: kty and alg must fit.
	wrongKty := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"rs1","typ":"at+jwt"}`)) + "." + parts[1] + "." + parts[2]
	cases := map[string]struct {
		tok  string
		want error
	}{
		"typ JWT":          {ec.sign(t, accessClaims(), nil), ErrType},
		"HMAC":             {hmacTok, ErrAlgorithm},
		"none":             {noneTok, ErrAlgorithm},
		"wrong kty":        {wrongKty, ErrAlgorithm},
		"unknown kid":      {newEC(t, "nope").sign(t, accessClaims(), typ), ErrUnknownKey},
		"other key":        {other.sign(t, accessClaims(), typ), ErrSignature},
		"other issuer":     {ec.sign(t, with("iss", "https://evil.example"), typ), ErrIssuer},
		"no iss":           {ec.sign(t, with("iss", nil), typ), ErrIssuer},
		"audience":         {ec.sign(t, with("aud", []string{"x"}), typ), ErrAudience},
		"no aud":           {ec.sign(t, with("aud", nil), typ), ErrAudience},
		"aud number":       {ec.sign(t, with("aud", 7), typ), ErrMalformed},
		"no exp":           {ec.sign(t, with("exp", nil), typ), ErrMissingExp},
		"expired":          {ec.sign(t, with("exp", now.Add(-time.Minute).Unix()), typ), ErrExpired},
		"exp string":       {ec.sign(t, with("exp", "soon"), typ), ErrMalformed},
		"nbf ahead":        {ec.sign(t, with("nbf", now.Add(time.Minute).Unix()), typ), ErrNotYetValid},
		"iat ahead":        {ec.sign(t, with("iat", now.Add(time.Minute).Unix()), typ), ErrIssuedInFuture},
		"no iat (strict)":  {ec.sign(t, with("iat", nil), typ), ErrMalformed},
		"no sub":           {ec.sign(t, with("sub", nil), typ), ErrMalformed},
		"sub number":       {ec.sign(t, with("sub", 5), typ), ErrMalformed},
		"scope array":      {ec.sign(t, with("scope", []string{"a"}), typ), ErrMalformed},
		"scp numbers":      {ec.sign(t, with("scp", []int{1}), typ), ErrMalformed},
		"jku header":       {ec.sign(t, accessClaims(), map[string]any{"typ": "at+jwt", "jku": "https://x"}), ErrHeader},
		"not a JWS":        {"abc.def", ErrMalformed},
		"duplicate claims": {signRaw(t, ec, `{"iss":"`+idpURL+`","sub":"a","sub":"b"}`), ErrMalformed},
	}
	for name, c := range cases {
		_, err := v.Verify(c.tok, "authorization", now)
		assert.ErrorIs(t, err, c.want, name)
	}
	// Within the leeway nbf and iat pass.
	_, err = v.Verify(ec.sign(t, with("iat", now.Add(20*time.Second).Unix()), typ), "authorization", now)
	assert.NoError(t, err)
	// A lax Issuer accepts typ JWT and no iat.
	cfg.StrictType = false
	lax, err := NewUserVerifier([]policies.IssuerConfig{cfg}, 0)
	require.NoError(t, err)
	_, err = lax.Verify(ec.sign(t, with("iat", nil), nil), "authorization", now)
	assert.NoError(t, err)
}

func signRaw(t *testing.T, s *signer, payload string) string {
	t.Helper()
	tok := s.sign(t, map[string]any{"x": 1}, map[string]any{"typ": "at+jwt"})
	parts := strings.Split(tok, ".")
	// The signature no longer matches, but the payload is refused first.
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + parts[2]
}

func TestUserOwns(t *testing.T) {
	ec := newEC(t, "ec1")
	v, err := NewUserVerifier([]policies.IssuerConfig{userIssuerCfg(t, ec)}, 16)
	require.NoError(t, err)
	assert.True(t, v.Owns(ec.sign(t, accessClaims(), nil), now))
	foreign := ec.sign(t, map[string]any{"sub": "spiffe://grid.example/x", "exp": now.Add(time.Hour).Unix()}, nil)
	assert.False(t, v.Owns(foreign, now))
	assert.Equal(t, 1, v.NotOwned().Len(), "a foreign token is remembered")
	assert.False(t, v.Owns(foreign, now))
	assert.Equal(t, uint64(1), v.NotOwned().Hits)
	assert.False(t, v.Owns("not-a-token", now))
}

// FuzzUserVerify: no token makes the end-user verifier panic, and every
// accepted token names a subject, its Issuer and an expiry ahead of now.
func FuzzUserVerify(f *testing.F) {
	ec := newEC(f, "ec1")
	v, err := NewUserVerifier([]policies.IssuerConfig{userIssuerCfg(f, ec)}, 4)
	require.NoError(f, err)
	f.Add(ec.sign(f, accessClaims(), map[string]any{"typ": "at+jwt"}))
	f.Add(b64(map[string]string{"alg": "ES256", "kid": "ec1", "typ": "at+jwt"}) + "." +
		b64(map[string]any{"iss": idpURL, "sub": "a", "aud": []any{1}, "exp": 1e300, "scp": []any{"a", 2}}) + ".AA")
	f.Add(b64(map[string]string{"alg": "none", "typ": "at+jwt"}) + "." + b64(accessClaims()) + ".")
	f.Fuzz(func(t *testing.T, tok string) {
		u, err := v.Verify(tok, "authorization", now)
		if err == nil {
			require.NotEmpty(t, u.User.Subject)
			require.Equal(t, "utility-idp", u.Issuer)
			require.True(t, now.Before(u.Expiry.Add(time.Minute)))
		}
		v.Owns(tok, now)
	})
}
