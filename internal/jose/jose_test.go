package jose

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testKey is a private key with the JWS algorithm it signs with.
type testKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv any
}

var (
	keysOnce sync.Once
	keys     []testKey
)

// testKeys are one key per supported algorithm family (RSA keys generate
// slowly, so they are made once).
func testKeys(t testing.TB) []testKey {
	keysOnce.Do(func() {
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		r2048, _ := rsa.GenerateKey(rand.Reader, 2048)
		keys = []testKey{
			{"p256", jwa.ES256, p256}, {"p384", jwa.ES384, p384}, {"p521", jwa.ES512, p521}, {"ed", jwa.EdDSA, ed},
			{"rsa", jwa.RS256, r2048}, {"rsa", jwa.RS384, r2048}, {"rsa", jwa.RS512, r2048},
			{"rsa", jwa.PS256, r2048}, {"rsa", jwa.PS384, r2048}, {"rsa", jwa.PS512, r2048},
		}
	})
	return keys
}

// publicJWK is k's public JWK as jwx writes it, with extra members.
func publicJWK(t testing.TB, k testKey, extra map[string]any) map[string]any {
	pk, err := jwk.PublicKeyOf(k.priv)
	require.NoError(t, err)
	require.NoError(t, pk.Set(jwk.KeyIDKey, k.kid))
	b, err := json.Marshal(pk)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for n, v := range extra {
		if v == nil {
			delete(m, n)
		} else {
			m[n] = v
		}
	}
	return m
}

func setJSON(t testing.TB, keys ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"keys": keys})
	require.NoError(t, err)
	return b
}

// allKeysSet is the public set of every test key (the RSA key once).
func allKeysSet(t testing.TB) []byte {
	var ms []map[string]any
	seen := map[string]bool{}
	for _, k := range testKeys(t) {
		if !seen[k.kid] {
			seen[k.kid] = true
			ms = append(ms, publicJWK(t, k, nil))
		}
	}
	return setJSON(t, ms...)
}

func signWith(t testing.TB, k testKey, payload string, hdr map[string]any) string {
	h := jws.NewHeaders()
	require.NoError(t, h.Set(jws.KeyIDKey, k.kid))
	for n, v := range hdr {
		require.NoError(t, h.Set(n, v))
	}
	out, err := jws.Sign([]byte(payload), jws.WithKey(k.alg, k.priv, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseKeySet(t *testing.T) {
	ks := testKeys(t)
	p256, ed, rsaKey := ks[0], ks[3], ks[4]
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	privJWK, err := jwk.FromRaw(p256.priv)
	require.NoError(t, err)
	privJSON, _ := json.Marshal(privJWK)
	var priv map[string]any
	require.NoError(t, json.Unmarshal(privJSON, &priv))
	priv["kid"] = "priv"
	p := publicJWK(t, p256, nil)
	offCurve := publicJWK(t, p256, map[string]any{"y": p["x"]})

	cases := []struct {
		name string
		in   string
		n    int
		err  string
	}{
		{"every supported type", string(allKeysSet(t)), 5, ""},
		{"single JWK", mustJSON(publicJWK(t, ed, nil)), 1, ""},
		{"SPIFFE bundle: x509-svid skipped, members ignored", `{"spiffe_sequence":3,"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x5c":["AA"]},` +
			mustJSON(publicJWK(t, p256, map[string]any{"use": "jwt-svid"})) + `]}`, 1, ""},
		{"matching alg", string(setJSON(t, publicJWK(t, p256, map[string]any{"alg": "ES256"}))), 1, ""},
		{"empty set", `{"keys":[]}`, 0, ""},
		{"private key", string(setJSON(t, priv)), 0, "private member"},
		{"symmetric key", `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`, 0, "private member"},
		{"RSA 1024", string(setJSON(t, publicJWK(t, testKey{"small", jwa.RS256, small}, nil))), 0, "modulus of 1024 bits"},
		{"off-curve point", string(setJSON(t, offCurve)), 0, "point"},
		{"short coordinate", string(setJSON(t, publicJWK(t, p256, map[string]any{"x": "AAAA"}))), 0, "32 bytes"},
		{"unknown curve", string(setJSON(t, publicJWK(t, p256, map[string]any{"crv": "secp256k1"}))), 0, "curve"},
		{"unknown kty", `{"keys":[{"kty":"XYZ","kid":"a"}]}`, 0, "kty"},
		{"alg of another type", string(setJSON(t, publicJWK(t, p256, map[string]any{"alg": "RS256"}))), 0, "does not fit"},
		{"alg of another curve", string(setJSON(t, publicJWK(t, p256, map[string]any{"alg": "ES384"}))), 0, "does not fit"},
		{"HMAC alg", string(setJSON(t, publicJWK(t, rsaKey, map[string]any{"alg": "HS256"}))), 0, "does not fit"},
		{"encryption key", string(setJSON(t, publicJWK(t, p256, map[string]any{"use": "enc"}))), 0, "not a signature use"},
		{"missing kid", string(setJSON(t, publicJWK(t, p256, map[string]any{"kid": nil}))), 0, "no kid"},
		{"duplicate kid", string(setJSON(t, publicJWK(t, p256, nil), publicJWK(t, testKey{"p256", jwa.EdDSA, ed.priv}, nil))), 0, "two keys"},
		{"duplicate member", `{"kty":"OKP","crv":"Ed25519","kid":"a","kid":"b","x":"` + publicJWK(t, ed, nil)["x"].(string) + `"}`, 0, "duplicate member"},
		{"padded base64", string(setJSON(t, publicJWK(t, ed, map[string]any{"x": publicJWK(t, ed, nil)["x"].(string) + "="}))), 0, "base64url"},
		{"trailing data", `{"keys":[]} x`, 0, "trailing data"},
		{"not an object", `[]`, 0, "not a JSON object"},
		{"neither set nor key", `{"a":1}`, 0, "neither"},
		{"keys not an array", `{"keys":{}}`, 0, "not an array"},
		{"RSA leading zero", string(setJSON(t, publicJWK(t, rsaKey, map[string]any{"e": "AAEAAQ"}))), 0, "leading zero"},
		{"RSA even exponent", string(setJSON(t, publicJWK(t, rsaKey, map[string]any{"e": "Ag"}))), 0, "exponent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseKeySet([]byte(tc.in))
			if tc.err != "" {
				require.ErrorIs(t, err, ErrKey)
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.n, set.Len())
		})
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestVerify(t *testing.T) {
	ks := testKeys(t)
	set, err := ParseKeySet(allKeysSet(t))
	require.NoError(t, err)
	all := []string{RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA}
	for _, k := range ks {
		t.Run("valid "+k.alg.String(), func(t *testing.T) {
			j, err := Parse(signWith(t, k, `{"sub":"x"}`, map[string]any{"typ": "JWT"}))
			require.NoError(t, err)
			got, err := j.Verify(set, all...)
			require.NoError(t, err)
			assert.Equal(t, k.kid, got.KID)
			assert.Equal(t, `{"sub":"x"}`, string(j.Payload))
			assert.Equal(t, Header{Alg: k.alg.String(), Kid: k.kid, Typ: "JWT"}, j.Header)
		})
	}
	p256, p384, ed, rsaKey := ks[0], ks[1], ks[3], ks[4]
	good := signWith(t, p256, "payload", nil)
	parts := strings.Split(good, ".")
	hmac, err := jws.Sign([]byte("payload"), jws.WithKey(jwa.HS256, []byte(mustJSON(publicJWK(t, p256, nil))),
		jws.WithProtectedHeaders(func() jws.Headers { h := jws.NewHeaders(); _ = h.Set("kid", "p256"); return h }())))
	require.NoError(t, err)
	cases := []struct {
		name    string
		token   string
		allowed []string
		err     error
	}{
		{"alg none", enc(`{"alg":"none","kid":"p256"}`) + "." + parts[1] + ".", all, ErrAlgorithm},
		{"alg NONE", enc(`{"alg":"NONE","kid":"p256"}`) + "." + parts[1] + "." + parts[2], all, ErrAlgorithm},
		{"empty signature", parts[0] + "." + parts[1] + ".", all, ErrAlgorithm},
		{"HMAC with the public key as secret", string(hmac), all, ErrAlgorithm},
		{"alg outside the allow-list", good, []string{EdDSA}, ErrAlgorithm},
		{"ES384 header over a P-256 key", enc(`{"alg":"ES384","kid":"p256"}`) + "." + parts[1] + "." + parts[2], all, ErrAlgorithm},
		{"EdDSA header over an EC key", enc(`{"alg":"EdDSA","kid":"p256"}`) + "." + parts[1] + "." + parts[2], all, ErrAlgorithm},
		{"RS256 header over an EC key", enc(`{"alg":"RS256","kid":"p256"}`) + "." + parts[1] + "." + parts[2], all, ErrAlgorithm},
		{"ES256 header over an RSA key", enc(`{"alg":"ES256","kid":"rsa"}`) + "." + parts[1] + "." + parts[2], all, ErrAlgorithm},
		{"unknown kid", signWith(t, testKey{"nope", jwa.ES256, p256.priv}, "p", nil), all, ErrUnknownKey},
		{"missing kid", enc(`{"alg":"ES256"}`) + "." + parts[1] + "." + parts[2], all, ErrUnknownKey},
		{"signature of another key", signWith(t, testKey{"p256", jwa.ES256, mustEC(t)}, "payload", nil), all, ErrSignature},
		{"P-384 signature under the P-256 kid", signWith(t, testKey{"p256", jwa.ES384, p384.priv}, "payload", nil), all, ErrAlgorithm},
		{"tampered payload", parts[0] + "." + enc("payloae") + "." + parts[2], all, ErrSignature},
		{"truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:20], all, ErrSignature},
		{"PS256 signature as RS256", enc(`{"alg":"RS256","kid":"rsa"}`) + "." + strings.SplitN(signWith(t, testKey{"rsa", jwa.PS256, rsaKey.priv}, "payload", nil), ".", 2)[1], all, ErrSignature},
		{"Ed25519 signature under another message", strings.Join(append(strings.Split(signWith(t, ed, "a", nil), ".")[:2], strings.Split(signWith(t, ed, "b", nil), ".")[2]), "."), all, ErrSignature},
		{"jku header", signWith(t, p256, "payload", map[string]any{"jku": "https://evil.example/keys"}), all, ErrHeader},
		{"crit header", enc(`{"alg":"ES256","kid":"p256","crit":["b64"]}`) + "." + parts[1] + "." + parts[2], all, ErrHeader},
		{"non-string header member", enc(`{"alg":"ES256","kid":1}`) + "." + parts[1] + "." + parts[2], all, ErrHeader},
		{"duplicate header member", enc(`{"alg":"ES256","alg":"none","kid":"p256"}`) + "." + parts[1] + "." + parts[2], all, ErrMalformed},
		{"header not JSON", enc(`alg`) + "." + parts[1] + "." + parts[2], all, ErrMalformed},
		{"padded header", parts[0] + "=." + parts[1] + "." + parts[2], all, ErrMalformed},
		{"non-canonical base64 tail", parts[0] + "." + parts[1] + "." + flipLastBits(parts[2]), all, ErrMalformed},
		{"four parts", good + ".x", all, ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], all, ErrMalformed},
		{"JSON serialisation", `{"payload":"e30","signatures":[]}`, all, ErrMalformed},
		{"empty", "", all, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err := Parse(tc.token)
			if err == nil {
				_, err = j.Verify(set, tc.allowed...)
			}
			require.ErrorIs(t, err, tc.err)
		})
	}
	var empty *KeySet
	j, err := Parse(good)
	require.NoError(t, err)
	_, err = j.Verify(empty, all...)
	require.ErrorIs(t, err, ErrUnknownKey)
}

func mustEC(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

// flipLastBits changes the unused low bits of the last base64 character, so
// the decoded bytes stay the same but the encoding is not canonical.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i^1])
}

func TestMembers(t *testing.T) {
	cases := []struct {
		in  string
		n   int
		err string
	}{
		{`{}`, 0, ""},
		{` { } `, 0, ""},
		{`{"a":1}`, 1, ""},
		{`{"a":"x,y}","b":[1,{"c":2,"d":3}],"e":{"f":[","]}}`, 3, ""},
		{`{"a":"\"","b":"\\"}`, 2, ""},
		{`{"a":1,"a":2}`, 0, "duplicate"},
		{`{"\u0061":1,"a":2}`, 0, "duplicate"},
		{`{"a":1,"b":{"a":1},"b":2}`, 0, "duplicate"},
		{`[{"a":1}]`, 0, "not a JSON object"},
		{`null`, 0, "not a JSON object"},
		{`{"a":1}{}`, 0, "trailing data"},
		{`{"a":}`, 0, "unexpected character"},
	}
	for _, tc := range cases {
		m, err := members([]byte(tc.in))
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Len(t, m, tc.n, tc.in)
	}
}

// membersByTokens is a second, slower reading of the same rule (object,
// unique top-level names, nothing after it) through json.Decoder's tokens.
func membersByTokens(data []byte) (int, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		name, ok := t.(string)
		if err != nil || !ok || seen[name] {
			return 0, false
		}
		seen[name] = true
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return 0, false
		}
	}
	if _, err := dec.Token(); err != nil {
		return 0, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return 0, false
	}
	return len(seen), true
}

// FuzzMembers: members agrees with the token-by-token reading.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":"x,\"}","b":[{"c":1}]}`, `{"\u0061":1,"a":2}`, `[1]`, `{"a":1} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := members(data)
		n, ok := membersByTokens(data)
		require.Equal(t, ok, err == nil, "%q: members error %v", data, err)
		if ok {
			require.Len(t, m, n)
		}
	})
}
