package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

func TestBundleCLIRoundTrip(t *testing.T) {
	for _, alg := range []string{"ed25519", "es256"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			keys := filepath.Join(dir, "keys")
			out, err := runFresh(t, newKeysGenerateCmd(), "--alg", alg, "--out", keys)
			require.NoError(t, err)
			assert.Contains(t, out, "kid ")
			st, err := os.Stat(filepath.Join(keys, "signing.jwk"))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			// No silent overwrite of a signing key.
			_, err = runFresh(t, newKeysGenerateCmd(), "--out", keys)
			assert.ErrorContains(t, err, "--force")

			dataDir := filepath.Join(dir, "data")
			require.NoError(t, os.MkdirAll(dataDir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dataDir, "jwks.json"), []byte(`{"keys":[]}`), 0o644))
			b1 := filepath.Join(dir, "one.bundle")
			args := []string{"--signing-key", filepath.Join(keys, "signing.jwk"), "--revision", "7", "--scope", "grid-prod",
				"--created", "2026-11-23T09:00:00Z", "--expires", "876000h", "--data", dataDir, "../../policies/testdata/grid"}
			out, err = runFresh(t, newPolicyBundleCmd(), append(args, "-o", b1)...)
			require.NoError(t, err)
			assert.Contains(t, out, "revision 7")

			out, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(keys, "verify.jwk"), "--scope", "grid-prod", "--min-revision", "6", b1)
			require.NoError(t, err)
			assert.Contains(t, out, "revision 7\n")
			assert.Contains(t, out, "policies/workloads.yaml")
			assert.Contains(t, out, "data/jwks.json")
			assert.Contains(t, out, bundle.ImageFile)
			assert.Contains(t, out, "created  2026-11-23T09:00:00Z")

			// An image that is not what the sources compile to is refused,
			// even with a valid signature.
			key, err := bundle.ParseSigningKey(must(os.ReadFile(filepath.Join(keys, "signing.jwk"))))
			require.NoError(t, err)
			vb, err := bundle.Verify(must(os.ReadFile(b1)), bundle.VerifyOptions{Keys: must(bundle.ParseKeySet(must(os.ReadFile(filepath.Join(keys, "verify.jwk")))))})
			require.NoError(t, err)
			otherEng, err := policies.CompileFiles(map[string][]byte{"w.yaml": []byte(openPolicy)})
			require.NoError(t, err)
			vb.Files[bundle.ImageFile] = must(otherEng.MarshalBinary())
			forged := filepath.Join(dir, "forged.bundle")
			require.NoError(t, os.WriteFile(forged, must(bundle.Build(vb.Files, bundle.BuildOptions{Revision: 8, Created: vb.Manifest.Created,
				Expires: vb.Manifest.Expires, Key: key})), 0o644))
			_, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(keys, "verify.jwk"), forged)
			require.ErrorIs(t, err, bundle.ErrImageMismatch)
			// So is a bundle without an image: no proxy would load it.
			delete(vb.Files, bundle.ImageFile)
			require.NoError(t, os.WriteFile(forged, must(bundle.Build(vb.Files, bundle.BuildOptions{Revision: 8, Created: vb.Manifest.Created,
				Expires: vb.Manifest.Expires, Key: key})), 0o644))
			_, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(keys, "verify.jwk"), forged)
			require.ErrorIs(t, err, bundle.ErrNoImage)

			// Same inputs, same bytes (Ed25519; ES256 signatures are randomised).
			b2 := filepath.Join(dir, "two.bundle")
			t.Setenv("SOURCE_DATE_EPOCH", "1795424400") // 2026-11-23T09:00:00Z
			noCreated := append([]string{}, args...)
			for i := range noCreated {
				if noCreated[i] == "--created" {
					noCreated = append(noCreated[:i], noCreated[i+2:]...)
					break
				}
			}
			_, err = runFresh(t, newPolicyBundleCmd(), append(noCreated, "-o", b2)...)
			require.NoError(t, err)
			one, _ := os.ReadFile(b1)
			two, _ := os.ReadFile(b2)
			if alg == "ed25519" {
				assert.Equal(t, one, two)
			}

			// Failures exit 1 with the reason.
			for _, tc := range []struct {
				args []string
				want error
			}{
				{[]string{"--min-revision", "7"}, bundle.ErrRollback},
				{[]string{"--scope", "grid-lab"}, bundle.ErrScope},
			} {
				_, err = runFresh(t, newPolicyVerifyCmd(), append(append([]string{"--verify-keys", filepath.Join(keys, "verify.jwk")}, tc.args...), b1)...)
				require.Error(t, err)
				assert.ErrorIs(t, err, tc.want)
				var ee *exitError
				require.ErrorAs(t, err, &ee)
				assert.Equal(t, 1, ee.code)
				assert.Contains(t, err.Error(), "verification failed")
			}
			corrupt := append([]byte{}, one...)
			corrupt[len(corrupt)/2] ^= 0xff
			bad := filepath.Join(dir, "bad.bundle")
			require.NoError(t, os.WriteFile(bad, corrupt, 0o644))
			_, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(keys, "verify.jwk"), bad)
			var ee *exitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, 1, ee.code)

			// Another key set does not verify it.
			other := filepath.Join(dir, "other")
			_, err = runFresh(t, newKeysGenerateCmd(), "--out", other)
			require.NoError(t, err)
			_, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(other, "verify.jwk"), b1)
			assert.ErrorIs(t, err, bundle.ErrUnknownKey)
		})
	}
}

func TestBundleCLIRefusesBadPolicy(t *testing.T) {
	dir := t.TempDir()
	_, err := runFresh(t, newKeysGenerateCmd(), "--out", dir)
	require.NoError(t, err)
	out := filepath.Join(dir, "x.bundle")
	_, err = runFresh(t, newPolicyBundleCmd(), "--signing-key", filepath.Join(dir, "signing.jwk"), "--revision", "1", "-o", out,
		"../../policies/testdata/errors/syntax.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "policy check failed")
	assert.True(t, strings.Contains(err.Error(), "syntax.yaml:"), err.Error())
	_, statErr := os.Stat(out)
	assert.True(t, os.IsNotExist(statErr))

	// A public key cannot sign.
	_, err = runFresh(t, newPolicyBundleCmd(), "--signing-key", filepath.Join(dir, "verify.jwk"), "--revision", "1", "-o", out,
		"../../policies/testdata/grid")
	assert.Error(t, err)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
