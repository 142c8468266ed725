package server

import (
	"encoding/json"
	"fmt"
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

// files are a bundle's sources: a policy that differs by revision.
func (s *signer) files(rev uint64) map[string][]byte {
	return map[string][]byte{
		"policies/grid.yaml": fmt.Appendf(nil, "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: grid}\nspec:\n  rules:\n"+
			"    - name: readers-r%d\n      effect: allow\n      subjects: [spiffe://grid.example/ns/metering/sa/meter-reader]\n      paths: [/v1/meters/**]\n      methods: [GET]\n", rev),
		"data/devices.json": []byte(`{"meters":["m1","m2"]}`),
	}
}

func (s *signer) opts(rev uint64, scope string) bundle.BuildOptions {
	opts := bundle.BuildOptions{Revision: rev, Created: s.created, Expires: s.created.Add(24 * time.Hour), Key: s.key}
	if scope != "" {
		opts.Scope = []string{scope}
	}
	return opts
}

// bundle packs a signed bundle as `meshguard policy bundle` does; Ed25519
// builds are deterministic, so the same revision always yields the same
// bytes.
func (s *signer) bundle(t testing.TB, rev uint64, scope string) []byte {
	data, err := bundle.Pack(s.files(rev), bundle.PackOptions{BuildOptions: s.opts(rev, scope)})
	require.NoError(t, err)
	return data
}

// forged is a correctly signed bundle whose engine image (what proxies
// enforce) is not what its sources (what auditors read) compile to: image
// of revision rev+1000's policy, sources of rev's. Without image it
// carries no image at all.
func (s *signer) forged(t testing.TB, rev uint64, image bool) []byte {
	files := s.files(rev)
	if image {
		other, err := bundle.Pack(s.files(rev+1000), bundle.PackOptions{BuildOptions: s.opts(rev, "prod")})
		require.NoError(t, err)
		keys, err := s.verifier.current()
		require.NoError(t, err)
		b, err := bundle.Verify(other, bundle.VerifyOptions{Keys: keys})
		require.NoError(t, err)
		files[bundle.ImageFile] = b.Files[bundle.ImageFile]
	}
	data, err := bundle.Build(files, s.opts(rev, "prod"))
	require.NoError(t, err)
	return data
}

// tampered is a valid bundle with one byte of its compressed body flipped.
func (s *signer) tampered(t testing.TB, rev uint64) []byte {
	b := s.bundle(t, rev, "prod")
	b[len(b)/2] ^= 0x40
	return b
}

// options plug the signer's key set into the server, as cfg.Keys would.
func (s *signer) options() Options { return Options{Verifier: s.verifier} }

// TestPublishRefusesBytesAfterTheGzipStream: the same signed bundle with
// anything appended (another digest) is not a new upload.
func TestPublishRefusesBytesAfterTheGzipStream(t *testing.T) {
	k := newSigner(t)
	ts := startServer(t, testConfig(t), k.options())
	b := k.bundle(t, 1, "prod")
	for name, extra := range map[string][]byte{
		"one byte":      {0},
		"second member": b,
		"newline":       []byte("\n"),
	} {
		r := publish(t, ts.URL, "prod", append(append([]byte{}, b...), extra...))
		require.Equal(t, 422, r.Code, name)
		require.Contains(t, string(r.Body), "after the end of the bundle's gzip stream", name)
	}
	require.Equal(t, 201, publish(t, ts.URL, "prod", b).Code)
}

// FuzzBundleTrailingBytes: a signed bundle followed by any bytes is
// refused, the bundle alone is accepted.
func FuzzBundleTrailingBytes(f *testing.F) {
	k := newSigner(f)
	b := k.bundle(f, 1, "prod")
	f.Add([]byte{0})
	f.Add(b[:10])
	f.Fuzz(func(t *testing.T, suffix []byte) {
		err := singleStream(append(append([]byte{}, b...), suffix...), 64<<20)
		if len(suffix) == 0 && err != nil {
			t.Fatalf("bundle refused: %v", err)
		}
		if len(suffix) > 0 && err == nil {
			t.Fatalf("%d trailing bytes accepted", len(suffix))
		}
	})
}
