package verify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func jwkJSON(t *testing.T, raw any, extra map[string]any) string {
	k, err := jwk.FromRaw(raw)
	require.NoError(t, err)
	require.NoError(t, k.Set(jwk.KeyIDKey, "k1"))
	for n, v := range extra {
		require.NoError(t, k.Set(n, v))
	}
	b, err := json.Marshal(k)
	require.NoError(t, err)
	return string(b)
}

func TestParseKeySet(t *testing.T) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	cases := []struct {
		name, in, err string
	}{
		{"Ed25519", jwkJSON(t, ed.Public(), nil), ""},
		{"P-256 set with alg and use", `{"keys":[` + jwkJSON(t, p256.Public(), map[string]any{"alg": "ES256", "use": "sig"}) + `]}`, ""},
		{"P-384: not a bundle key", jwkJSON(t, p384.Public(), nil), "not an Ed25519 or P-256 key"},
		{"RSA: not a bundle key", jwkJSON(t, r.Public(), nil), "not an Ed25519 or P-256 key"},
		{"use jwt-svid", jwkJSON(t, p256.Public(), map[string]any{"use": "jwt-svid"}), `use "jwt-svid" is not sig`},
		{"private key", jwkJSON(t, ed, nil), "private member"},
		{"alg of the other type", jwkJSON(t, ed.Public(), map[string]any{"alg": "ES256"}), "does not fit"},
		{"empty", `{"keys":[]}`, "no keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseKeySet([]byte(tc.in))
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, 1, set.Len())
		})
	}
}
