package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies/bundle"
)

// signer builds real signed bundles (policies/bundle) with its own key and
// keeps the public key set in a file the distributor loads.
type signer struct {
	key      jwk.Key
	keysFile string
	created  time.Time
	verifier *KeyVerifier
}

func newSigner(t testing.TB) *signer {
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	b, err := json.Marshal(set)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "bundle-keys.jwks")
	require.NoError(t, os.WriteFile(file, b, 0o644))
	v, err := NewKeyVerifier(file, quietLogger())
	require.NoError(t, err)
	return &signer{key: key, keysFile: file, created: time.Now().UTC().Truncate(time.Second).Add(-time.Minute), verifier: v}
}

// bundle builds a signed bundle; Ed25519 builds are deterministic, so the
// same revision always yields the same bytes.
func (s *signer) bundle(t testing.TB, rev uint64, scope string) []byte {
	opts := bundle.BuildOptions{Revision: rev, Created: s.created, Expires: s.created.Add(24 * time.Hour), Key: s.key}
	if scope != "" {
		opts.Scope = []string{scope}
	}
	data, err := bundle.Build(map[string][]byte{
		"policies/grid.yaml": []byte("# revision " + time.Duration(rev).String() + "\n"),
		"data/devices.json":  []byte(`{"meters":["m1","m2"]}`),
	}, opts)
	require.NoError(t, err)
	return data
}

// tampered is a valid bundle with one byte of its compressed body flipped.
func (s *signer) tampered(t testing.TB, rev uint64) []byte {
	b := s.bundle(t, rev, "")
	b[len(b)/2] ^= 0x40
	return b
}

// options plug the signer's key set into the server, as cfg.Keys would.
func (s *signer) options() Options { return Options{Verifier: s.verifier} }
