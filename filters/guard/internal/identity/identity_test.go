package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

type signer struct {
	kid string
	alg jwa.SignatureAlgorithm
	key any
	pub jwk.Key
}

func newEC(t testing.TB, kid string) *signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pub, err := jwk.FromRaw(k.Public())
	require.NoError(t, err)
	require.NoError(t, pub.Set(jwk.KeyIDKey, kid))
	return &signer{kid: kid, alg: jwa.ES256, key: k, pub: pub}
}

func newRSA(t testing.TB, kid string) *signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pub, err := jwk.FromRaw(k.Public())
	require.NoError(t, err)
	require.NoError(t, pub.Set(jwk.KeyIDKey, kid))
	return &signer{kid: kid, alg: jwa.PS256, key: k, pub: pub}
}

func jwks(t testing.TB, ss ...*signer) []byte {
	set := jwk.NewSet()
	for _, s := range ss {
		require.NoError(t, set.AddKey(s.pub))
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

func (s *signer) sign(t testing.TB, claims map[string]any, extraHdr map[string]any) string {
	b, err := json.Marshal(claims)
	require.NoError(t, err)
	h := jws.NewHeaders()
	if s.kid != "" {
		require.NoError(t, h.Set(jws.KeyIDKey, s.kid))
	}
	require.NoError(t, h.Set(jws.TypeKey, "JWT"))
	for k, v := range extraHdr {
		require.NoError(t, h.Set(k, v))
	}
	out, err := jws.Sign(b, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

func claims(sub string, aud any, exp time.Time) map[string]any {
	m := map[string]any{"sub": sub, "iat": now.Add(-time.Minute).Unix()}
	if aud != nil {
		m["aud"] = aud
	}
	if !exp.IsZero() {
		m["exp"] = exp.Unix()
	}
	return m
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestSVIDVerify(t *testing.T) {
	grid := newEC(t, "grid-1")
	gridRSA := newRSA(t, "grid-2")
	foreign := newEC(t, "other-1")
	v, err := NewSVIDVerifier(map[string][]byte{
		"grid.example": jwks(t, grid, gridRSA),
		"other.org":    jwks(t, foreign),
	}, []string{"meter-api"}, false, 16)
	require.NoError(t, err)
	sub := "spiffe://grid.example/ns/scada/sa/operator"
	exp := now.Add(time.Hour)

	pubDER, err := x509.MarshalPKIXPublicKey(grid.key.(*ecdsa.PrivateKey).Public())
	require.NoError(t, err)
	hs, err := jws.Sign(mustJSON(claims(sub, "meter-api", exp)), jws.WithKey(jwa.HS256, pubDER))
	require.NoError(t, err)

	cases := []struct {
		name  string
		token string
		err   error
	}{
		{"valid ES256", grid.sign(t, claims(sub, "meter-api", exp), nil), nil},
		{"valid PS256 and aud list", gridRSA.sign(t, claims(sub, []string{"x", "meter-api"}, exp), nil), nil},
		{"expired", grid.sign(t, claims(sub, "meter-api", now.Add(-time.Hour)), nil), ErrExpired},
		{"not yet valid", grid.sign(t, withClaim(claims(sub, "meter-api", exp), "nbf", now.Add(time.Hour).Unix()), nil), ErrNotYetValid},
		{"missing exp", grid.sign(t, claims(sub, "meter-api", time.Time{}), nil), ErrMissingExp},
		{"wrong aud", grid.sign(t, claims(sub, "billing", exp), nil), ErrAudience},
		{"empty aud string", grid.sign(t, claims(sub, "", exp), nil), ErrAudience},
		{"empty aud list", grid.sign(t, claims(sub, []string{}, exp), nil), ErrAudience},
		{"missing aud", grid.sign(t, claims(sub, nil, exp), nil), ErrAudience},
		{"foreign trust domain", grid.sign(t, claims("spiffe://evil.example/x", "meter-api", exp), nil), ErrSubject},
		{"sub not a SPIFFE ID", grid.sign(t, claims("operator", "meter-api", exp), nil), ErrSubject},
		{"key of another trusted domain", foreign.sign(t, claims(sub, "meter-api", exp), nil), ErrUnknownKey},
		{"unknown kid", (&signer{kid: "nope", alg: jwa.ES256, key: grid.key}).sign(t, claims(sub, "meter-api", exp), nil), ErrUnknownKey},
		{"missing kid", (&signer{alg: jwa.ES256, key: grid.key}).sign(t, claims(sub, "meter-api", exp), nil), ErrUnknownKey},
		{"extra header", grid.sign(t, claims(sub, "meter-api", exp), map[string]any{"jku": "https://evil/"}), ErrHeader},
		{"alg none", b64(map[string]string{"alg": "none", "kid": "grid-1"}) + "." + b64(claims(sub, "meter-api", exp)) + ".", ErrAlgorithm},
		{"HS256 with public key as secret", string(hs), ErrAlgorithm},
		{"signature of other key", swapSig(grid.sign(t, claims(sub, "meter-api", exp), nil), newEC(t, "grid-1").sign(t, claims(sub, "meter-api", exp), nil)), ErrSignature},
		{"garbage", "a.b.c", ErrMalformed},
		{"JSON serialisation", `{"payload":"e30","signatures":[]}`, ErrMalformed},
		{"empty", "", ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Verify(tc.token, now)
			if tc.err == nil {
				require.NoError(t, err)
				assert.Equal(t, sub, s.ID)
				assert.Equal(t, "grid.example", s.TrustDomain)
				return
			}
			require.ErrorIs(t, err, tc.err)
			assert.Nil(t, s)
		})
	}
}

func TestSVIDCache(t *testing.T) {
	grid := newEC(t, "grid-1")
	v, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(t, grid)}, []string{"a"}, false, 2)
	require.NoError(t, err)
	tok := grid.sign(t, claims("spiffe://grid.example/w", "a", now.Add(time.Minute)), nil)
	_, err = v.Verify(tok, now)
	require.NoError(t, err)
	_, err = v.Verify(tok, now)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v.Cache().Hits)
	assert.Equal(t, uint64(1), v.Cache().Misses)
	// A cached token still expires.
	_, err = v.Verify(tok, now.Add(time.Hour))
	require.ErrorIs(t, err, ErrExpired)
	assert.Equal(t, 0, v.Cache().Len())
	// Bounded.
	for i := range 5 {
		tk := grid.sign(t, withClaim(claims("spiffe://grid.example/w", "a", now.Add(time.Minute)), "n", i), nil)
		_, err := v.Verify(tk, now)
		require.NoError(t, err)
	}
	assert.Equal(t, 2, v.Cache().Len())
	// Key rotation clears the cache.
	require.NoError(t, v.SetBundle("grid.example", jwks(t, newEC(t, "grid-9"))))
	_, err = v.Verify(tok, now)
	require.ErrorIs(t, err, ErrUnknownKey)
}

func TestNewSVIDVerifierRejectsEmptyAudience(t *testing.T) {
	_, err := NewSVIDVerifier(map[string][]byte{"grid.example": nil}, []string{""}, false, 1)
	require.Error(t, err)
	_, err = NewSVIDVerifier(map[string][]byte{"Bad/TD": nil}, []string{"a"}, false, 1)
	require.Error(t, err)
}

func TestDeviceVerify(t *testing.T) {
	mfr := newEC(t, "mfr-1")
	v, err := NewDeviceVerifier(map[string][]byte{"https://mfr.example": jwks(t, mfr)}, []string{"grid"},
		ClaimNames{ID: "ueid", Class: "hwmodel", Vendor: "oemid", Model: "hwversion", Firmware: "swversion"}, 8)
	require.NoError(t, err)
	c := map[string]any{"iss": "https://mfr.example", "aud": "grid", "exp": now.Add(time.Hour).Unix(),
		"ueid": "inv-0042", "hwmodel": "inverter", "oemid": 12345, "swversion": "2.4.1"}
	d, err := v.Verify(mfr.sign(t, c, nil), now)
	require.NoError(t, err)
	assert.Equal(t, Device{ID: "inv-0042", Class: "inverter", Vendor: "12345", Firmware: "2.4.1",
		Issuer: "https://mfr.example", Expiry: time.Unix(now.Add(time.Hour).Unix(), 0)}, *d)

	c2 := withClaim(c, "iss", "https://evil.example")
	_, err = v.Verify(mfr.sign(t, c2, nil), now)
	require.ErrorIs(t, err, ErrIssuer)
	c3 := withClaim(c, "aud", "")
	_, err = v.Verify(mfr.sign(t, c3, nil), now)
	require.ErrorIs(t, err, ErrAudience)
	c4 := withClaim(c, "ueid", nil)
	delete(c4, "ueid")
	_, err = v.Verify(mfr.sign(t, c4, nil), now)
	require.ErrorIs(t, err, ErrMalformed)
}

func TestTrustDomain(t *testing.T) {
	cases := []struct {
		in, td string
		ok     bool
	}{
		{"spiffe://grid.example/ns/a/sa/b", "grid.example", true},
		{"spiffe://grid.example", "grid.example", true},
		{"spiffe://Grid.example/x", "", false},
		{"spiffe://grid.example/", "", false},
		{"spiffe://grid.example//x", "", false},
		{"spiffe://grid.example/../x", "", false},
		{"spiffe://grid.example:443/x", "", false},
		{"spiffe://user@grid.example/x", "", false},
		{"spiffe://grid.example/x?y", "", false},
		{"https://grid.example/x", "", false},
		{"spiffe:///x", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		td, err := TrustDomain(tc.in)
		if tc.ok {
			require.NoError(t, err, tc.in)
			assert.Equal(t, tc.td, td)
		} else {
			require.ErrorIs(t, err, ErrBadSPIFFEID, tc.in)
		}
	}
	assert.Equal(t, "", PeerSPIFFEID("https://x"))
}

func FuzzVerify(f *testing.F) {
	grid := newEC(f, "grid-1")
	v, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(f, grid)}, []string{"a"}, false, 4)
	require.NoError(f, err)
	f.Add(grid.sign(f, claims("spiffe://grid.example/w", "a", now.Add(time.Minute)), nil))
	f.Add("e30.e30.e30")
	f.Add(b64(map[string]string{"alg": "ES256", "kid": "grid-1"}) + "." + b64(map[string]any{"exp": 1e300, "aud": []any{1}}) + ".AA")
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := v.Verify(tok, now)
		if err == nil {
			require.NotEmpty(t, s.ID)
		}
	})
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func withClaim(m map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// swapSig returns a's header and payload with b's signature.
func swapSig(a, b string) string {
	i := len(a) - 1
	for a[i] != '.' {
		i--
	}
	j := len(b) - 1
	for b[j] != '.' {
		j--
	}
	return a[:i] + b[j:]
}

func TestCacheComparesWholeToken(t *testing.T) {
	c := NewCache[int](8)
	c.Put("token-a", 1, now.Add(time.Minute))
	v, ok := c.Get("token-a")
	require.True(t, ok)
	assert.Equal(t, 1, v)
	// A different token never returns a's value, even if the 64-bit keys
	// were to collide: force that case by planting a's entry under b's key.
	c.m[c.key("token-b")] = c.m[c.key("token-a")]
	_, ok = c.Get("token-b")
	assert.False(t, ok)
	c.Remove("token-b") // must not drop a's entry
	_, ok = c.Get("token-a")
	assert.True(t, ok)
}

func TestCacheByteBudget(t *testing.T) {
	c := NewCache[int](1000)
	big := MaxCacheBytes / 4
	for i := range 6 {
		c.Put(strings.Repeat(string(rune('a'+i)), big), i, now.Add(time.Minute))
	}
	assert.LessOrEqual(t, c.Bytes(), MaxCacheBytes)
	assert.Equal(t, 4, c.Len())
	_, ok := c.Get(strings.Repeat("f", big))
	assert.True(t, ok, "newest entry kept")
	_, ok = c.Get(strings.Repeat("a", big))
	assert.False(t, ok, "oldest entry evicted")
	// Oversized tokens are not cached at all.
	c.Put(strings.Repeat("z", big+1), 9, now.Add(time.Minute))
	assert.Equal(t, 4, c.Len())
	c.Clear()
	assert.Zero(t, c.Bytes())
}
