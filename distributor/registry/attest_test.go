package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/require"
)

// attestFixture is a registry with one device (inv-1) and its key.
func attestFixture(t testing.TB) (*Attestor, *ecdsa.PrivateKey) {
	st, err := OpenFS(t.TempDir())
	require.NoError(t, err)
	svc, err := New(st, Options{Organisations: []Organisation{{Name: "o", Members: []string{"loopback"}, DevicePrefixes: []string{"inv-"}}}})
	require.NoError(t, err)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pk, err := jwk.FromRaw(&priv.PublicKey)
	require.NoError(t, err)
	pj, _ := json.Marshal(pk)
	body, _ := json.Marshal(map[string]any{"id": "inv-1", "class": "inverter", "vendor": "v", "firmware": ">=1.0.0", "credential": map[string]any{"jwk": json.RawMessage(pj)}})
	_, err = svc.Create(context.Background(), Caller{Org: "o", Who: "t"}, KindDevice, body)
	require.NoError(t, err)
	a, err := NewAttestor(svc, AttestOptions{KeyFile: filepath.Join(t.TempDir(), "k"), Issuer: "i", Audience: []string{"a"}, TokenLifetime: time.Minute, NonceLifetime: time.Minute})
	require.NoError(t, err)
	return a, priv
}

// FuzzAttest: whatever a caller sends, Attest never panics, and it issues
// a token only for a JWS the registered key signed over a live nonce.
func FuzzAttest(f *testing.F) {
	a, priv := attestFixture(f)
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, AttestTyp)
	good, _ := jws.Sign([]byte(`{"device_id":"inv-1","nonce":"NONCE","firmware":"1.2.3"}`), jws.WithKey(jwa.ES256, priv, jws.WithProtectedHeaders(hdr)))
	f.Add(good)
	f.Add([]byte("eyJhbGciOiJub25lIn0.eyJkZXZpY2VfaWQiOiJpbnYtMSJ9."))
	f.Add([]byte("a.b.c"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, _, ev, err := a.Attest(context.Background(), data)
		if err == nil {
			// Only a fresh nonce the fuzzer cannot know could pass.
			t.Fatalf("attestation issued a token for fuzz input %q: %s (%+v)", data, tok, ev)
		}
		require.Error(t, ev.Err)
	})
}
