package main

import (
	"encoding/csv"
	"encoding/json"
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
			r := runCLI(t, "keys", "generate", "--alg", alg, "--out", keys).ok(t)
			assert.Contains(t, r.stdout, "kid ")
			st, err := os.Stat(filepath.Join(keys, "signing.jwk"))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			// No silent overwrite of a signing key.
			r = runCLI(t, "keys", "generate", "--out", keys)
			assert.Equal(t, exitUsage, r.code)
			assert.Contains(t, r.stderr, "--force")

			dataDir := filepath.Join(dir, "data")
			require.NoError(t, os.MkdirAll(dataDir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dataDir, "jwks.json"), []byte(`{"keys":[]}`), 0o644))
			b1 := filepath.Join(dir, "one.bundle")
			args := []string{"policy", "bundle", "--signing-key", filepath.Join(keys, "signing.jwk"), "--revision", "7", "--scope", "grid-prod",
				"--created", "2026-11-23T09:00:00Z", "--expires", "876000h", "--data", dataDir, "../../policies/testdata/grid"}
			r = runCLI(t, append(args, "--output-file", b1)...).ok(t)
			assert.Contains(t, r.stdout, "revision 7")

			verify := []string{"policy", "verify", "--verify-keys", filepath.Join(keys, "verify.jwk")}
			r = runCLI(t, append(verify, "--scope", "grid-prod", "--min-revision", "6", b1)...).ok(t)
			assert.Contains(t, r.stdout, "revision 7\n")
			assert.Contains(t, r.stdout, "policies/workloads.yaml")
			assert.Contains(t, r.stdout, "data/jwks.json")
			assert.Contains(t, r.stdout, bundle.ImageFile)
			assert.Contains(t, r.stdout, "created  2026-11-23T09:00:00Z")

			// The bundle through stdout and stdin: the same bytes, the same manifest.
			r = runCLI(t, append(args, "--output-file", "-")...).ok(t)
			if alg == "ed25519" {
				assert.Equal(t, string(must(os.ReadFile(b1))), r.stdout)
			}
			assert.Contains(t, r.stderr, "revision 7", "the summary goes to stderr when the bundle takes stdout")
			var vr verifyResult
			require.NoError(t, json.Unmarshal([]byte(runCLIStdin(t, r.stdout, append(verify, "-o", "json", "-")...).ok(t).stdout), &vr))
			assert.Equal(t, uint64(7), vr.Revision)
			assert.Equal(t, []string{"grid-prod"}, vr.Scope)

			// An image that is not what the sources compile to is refused,
			// even with a valid signature.
			key, err := bundle.ParseSigningKey(must(os.ReadFile(filepath.Join(keys, "signing.jwk"))))
			require.NoError(t, err)
			vb, err := bundle.Verify(must(os.ReadFile(b1)), bundle.VerifyOptions{Keys: must(bundle.ParseKeySet(must(os.ReadFile(filepath.Join(keys, "verify.jwk")))))})
			require.NoError(t, err)
			otherEng, err := policies.CompileFiles(map[string][]byte{"w.yaml": []byte(openPolicy)})
			require.NoError(t, err)
			vb.Files[bundle.ImageFile] = must(policies.MarshalEngine(otherEng))
			forged := filepath.Join(dir, "forged.bundle")
			require.NoError(t, os.WriteFile(forged, must(bundle.Build(vb.Files, bundle.BuildOptions{Revision: 8, Created: vb.Manifest.Created,
				Expires: vb.Manifest.Expires, Key: key})), 0o644))
			r = runCLI(t, append(verify, forged)...)
			assert.Equal(t, exitFailed, r.code)
			assert.Contains(t, r.stderr, bundle.ErrImageMismatch.Error())
			// So is a bundle without an image: no proxy would load it.
			delete(vb.Files, bundle.ImageFile)
			require.NoError(t, os.WriteFile(forged, must(bundle.Build(vb.Files, bundle.BuildOptions{Revision: 8, Created: vb.Manifest.Created,
				Expires: vb.Manifest.Expires, Key: key})), 0o644))
			r = runCLI(t, append(verify, forged)...)
			assert.Equal(t, exitFailed, r.code)
			assert.Contains(t, r.stderr, bundle.ErrNoImage.Error())

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
			runCLI(t, append(noCreated, "--output-file", b2)...).ok(t)
			one, _ := os.ReadFile(b1)
			two, _ := os.ReadFile(b2)
			if alg == "ed25519" {
				assert.Equal(t, one, two)
			}

			// Failures exit 1 with the reason.
			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"--min-revision", "7"}, bundle.ErrRollback.Error()},
				{[]string{"--scope", "grid-lab"}, bundle.ErrScope.Error()},
			} {
				r = runCLI(t, append(append(verify, tc.args...), b1)...)
				assert.Equal(t, exitFailed, r.code)
				assert.Contains(t, r.stderr, tc.want)
				assert.Contains(t, r.stderr, "verification failed")
			}
			corrupt := append([]byte{}, one...)
			corrupt[len(corrupt)/2] ^= 0xff
			bad := filepath.Join(dir, "bad.bundle")
			require.NoError(t, os.WriteFile(bad, corrupt, 0o644))
			assert.Equal(t, exitFailed, runCLI(t, append(verify, bad)...).code)

			// Another key set does not verify it.
			other := filepath.Join(dir, "other")
			runCLI(t, "keys", "generate", "--out", other).ok(t)
			r = runCLI(t, "policy", "verify", "--verify-keys", filepath.Join(other, "verify.jwk"), b1)
			assert.Equal(t, exitFailed, r.code)
			assert.Contains(t, r.stderr, bundle.ErrUnknownKey.Error())
		})
	}
}

// TestBundleCLIFormats: the summaries of keys generate, policy bundle and
// policy verify in every format.
func TestBundleCLIFormats(t *testing.T) {
	dir := t.TempDir()
	var k keysResult
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "keys", "generate", "--out", dir, "-o", "json").ok(t).stdout), &k))
	assert.Equal(t, filepath.Join(dir, "signing.jwk"), k.SigningKey)
	assert.NotEmpty(t, k.KeyID)

	out := filepath.Join(dir, "b.bundle")
	var br bundleResult
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "policy", "bundle", "--signing-key", k.SigningKey, "--revision", "2",
		"--output-file", out, "-o", "json", gridDir).ok(t).stdout), &br))
	assert.Equal(t, uint64(2), br.Revision)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, br.Digest)

	rows, err := csv.NewReader(strings.NewReader(runCLI(t, "policy", "verify", "--verify-keys", k.VerifyKeys, "-o", "csv", out).ok(t).stdout)).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, []string{"path", "sha256", "size"}, rows[0])
	var paths []string
	for _, row := range rows[1:] {
		paths = append(paths, row[0])
	}
	assert.Contains(t, paths, bundle.ImageFile)
	assert.Contains(t, paths, "policies/workloads.yaml")

	table := runCLI(t, "policy", "verify", "--verify-keys", k.VerifyKeys, "-o", "yaml", out).ok(t).stdout
	assert.Contains(t, table, "revision: 2\n")

	// The old -o FILE names the flag that takes the file now.
	r := runCLI(t, "policy", "bundle", "--signing-key", k.SigningKey, "--revision", "3", "-o", out, gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "files go to --output-file")
	r = runCLI(t, "policy", "bundle", "--signing-key", k.SigningKey, "--revision", "3", gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `required flag(s) "output-file" not set`)
	r = runCLI(t, "keys", "generate", "--out", "-")
	assert.Equal(t, exitUsage, r.code)
}

func TestBundleCLIRefusesBadPolicy(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "keys", "generate", "--out", dir).ok(t)
	out := filepath.Join(dir, "x.bundle")
	r := runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "signing.jwk"), "--revision", "1", "--output-file", out,
		"../../policies/testdata/errors/syntax.yaml")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "policy check failed")
	assert.Contains(t, r.stderr, "syntax.yaml:")
	assert.NoFileExists(t, out)

	// A public key cannot sign; revision 0 is no revision.
	r = runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "verify.jwk"), "--revision", "1", "--output-file", out, gridDir)
	assert.Equal(t, exitUsage, r.code)
	r = runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "signing.jwk"), "--revision", "0", "--output-file", out, gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.NoFileExists(t, out)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
