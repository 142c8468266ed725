package jose

import (
	"crypto"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/require"
)

var allAlgs = []string{RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA}

// agreesWithJWX checks the property that matters for a verifier written
// here: whatever it accepts, jwx (the library the CLI signs with) accepts
// too, with the same key, algorithm and payload. It reports whether this
// package accepted.
func agreesWithJWX(t testing.TB, set *KeySet, jwxSet jwk.Set, token string) bool {
	j, err := Parse(token)
	if err != nil {
		return false
	}
	key, err := j.Verify(set, allAlgs...)
	if err != nil {
		return false
	}
	jk, ok := jwxSet.LookupKeyID(key.KID)
	require.True(t, ok, "jwx lacks kid %q", key.KID)
	var raw any
	require.NoError(t, jk.Raw(&raw))
	payload, err := jws.Verify([]byte(token), jws.WithKey(jwa.SignatureAlgorithm(j.Header.Alg), raw))
	require.NoError(t, err, "accepted here, rejected by jwx: %q", token)
	require.Equal(t, string(payload), string(j.Payload))
	return true
}

// bothSets parses every test key with this package and with jwx.
func bothSets(t testing.TB) (*KeySet, jwk.Set) {
	raw := allKeysSet(t)
	set, err := ParseKeySet(raw)
	require.NoError(t, err)
	jwxSet, err := jwk.Parse(raw)
	require.NoError(t, err)
	return set, jwxSet
}

// TestDifferentialJWX signs with jwx for every algorithm, then mutates each
// token (bit flips in every part, spliced headers and signatures) and
// compares the verdicts.
func TestDifferentialJWX(t *testing.T) {
	set, jwxSet := bothSets(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var tokens []string
	for _, k := range testKeys(t) {
		tokens = append(tokens, signWith(t, k, `{"sub":"spiffe://grid.example/w","n":1}`, map[string]any{"typ": "JWT"}))
	}
	accepted := 0
	for _, tok := range tokens {
		require.True(t, agreesWithJWX(t, set, jwxSet, tok), "valid token rejected: %s", tok)
		accepted++
		for range 200 {
			b := []byte(tok)
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(7))
			if agreesWithJWX(t, set, jwxSet, string(b)) {
				accepted++
			}
		}
		// Splice: every header with every other token's payload and signature.
		for _, other := range tokens {
			p := strings.SplitN(tok, ".", 2)
			q := strings.SplitN(other, ".", 2)
			agreesWithJWX(t, set, jwxSet, p[0]+"."+q[1])
		}
	}
	require.GreaterOrEqual(t, accepted, len(tokens))
}

// FuzzVerify: no input panics, and nothing is accepted that jwx rejects.
func FuzzVerify(f *testing.F) {
	set, jwxSet := bothSets(f)
	for _, k := range testKeys(f) {
		f.Add(signWith(f, k, `{"a":1}`, nil))
	}
	f.Add(enc(`{"alg":"none","kid":"p256"}`) + "." + enc("{}") + ".")
	f.Fuzz(func(t *testing.T, token string) {
		agreesWithJWX(t, set, jwxSet, token)
	})
}

// FuzzParseKeySet: no input panics; every accepted key has a kid and an
// algorithm, and jwx, when it parses the set, reads the same public keys.
func FuzzParseKeySet(f *testing.F) {
	f.Add(allKeysSet(f))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","kid":"k","x":"AAAA","y":"AAAA","d":"AA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseKeySet(data)
		if err != nil {
			require.ErrorIs(t, err, ErrKey)
			return
		}
		jwxSet, jerr := jwk.Parse(data)
		for _, k := range set.Keys() {
			require.NotEmpty(t, k.KID)
			require.NotNil(t, k.Public())
			ok := false
			for _, a := range allAlgs {
				ok = ok || k.Allows(a)
			}
			require.True(t, ok, "key %q verifies nothing", k.KID)
			if jerr != nil {
				continue
			}
			jk, found := jwxSet.LookupKeyID(k.KID)
			if !found {
				continue
			}
			var raw any
			if jk.Raw(&raw) != nil {
				continue
			}
			e, ok := raw.(interface{ Equal(crypto.PublicKey) bool })
			require.True(t, ok, "jwx key %T", raw)
			require.True(t, e.Equal(k.Public()), "jwx reads kid %q as a different key", k.KID)
		}
	})
}
