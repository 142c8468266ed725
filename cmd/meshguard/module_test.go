package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/filters/wasmbuild"
)

// TestPushPullModuleCLI pushes a real module to a real registry (the
// distributor's OCI handler on loopback) in the three layouts and pulls
// each back.
func TestPushPullModuleCLI(t *testing.T) {
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	require.NoError(t, err)
	srv := httptest.NewServer(oci.NewHandler(st, oci.Options{}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	wasmPath := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello")
	wasm, err := os.ReadFile(wasmPath)
	require.NoError(t, err)

	var digests []string
	for _, f := range []string{"oci-image", "docker", "oci-artifact"} {
		r := runCLI(t, "push", "module", wasmPath, host+"/cli/hello:"+f, "--format", f).ok(t)
		d := strings.TrimSpace(r.stdout)
		require.Regexp(t, `^sha256:[0-9a-f]{64}$`, d)
		digests = append(digests, d)

		dst := filepath.Join(t.TempDir(), "out.wasm")
		r = runCLI(t, "pull", "module", host+"/cli/hello@"+d, "--output-file", dst).ok(t)
		assert.Equal(t, d+"\n", r.stdout)
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.Equal(t, wasm, got)
	}
	// Same module again (from stdin, by an oci:// reference): same digest
	// (deterministic packaging).
	r := runCLIStdin(t, string(wasm), "push", "module", "-", "oci://"+host+"/cli/hello:again", "-o", "json").ok(t)
	var res moduleResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	assert.Equal(t, digests[0], res.Digest)
	assert.Equal(t, host+"/cli/hello:again", res.Reference)
	assert.Equal(t, len(wasm), res.Size)

	// Pulled to stdout: the module there, the digest on stderr; no file named -.
	dir := t.TempDir()
	t.Chdir(dir)
	r = runCLI(t, "pull", "module", "oci://"+host+"/cli/hello:again", "--output-file", "-").ok(t)
	assert.Equal(t, string(wasm), r.stdout)
	assert.Equal(t, digests[0]+"\n", r.stderr)
	assert.NoFileExists(t, filepath.Join(dir, "-"))

	// The old -o FILE is refused, naming --output-file.
	r = runCLI(t, "pull", "module", host+"/cli/hello:again", "-o", filepath.Join(dir, "x.wasm"))
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "files go to --output-file")

	notWasm := filepath.Join(dir, "x.wasm")
	require.NoError(t, os.WriteFile(notWasm, []byte("hello"), 0o644))
	assert.Equal(t, exitUsage, runCLI(t, "push", "module", notWasm, host+"/cli/bad:v1").code)
	assert.Equal(t, exitUsage, runCLI(t, "push", "module", wasmPath, host+"/cli/hello:v1", "--format", "zip").code)
	r = runCLI(t, "pull", "module", host+"/cli/nothing:v1", "--output-file", filepath.Join(dir, "n.wasm"))
	assert.Equal(t, exitError, r.code, "a registry answer is not a usage error")
	assert.NoFileExists(t, filepath.Join(dir, "n.wasm"))
}

// TestModuleReferencesNeverDefaultToDockerHub: a registry without a
// repository, or a repository without a registry, is refused before any
// network call (no server listens here).
func TestModuleReferencesNeverDefaultToDockerHub(t *testing.T) {
	wasmPath := filepath.Join(t.TempDir(), "m.wasm")
	require.NoError(t, os.WriteFile(wasmPath, []byte("\x00asm\x01\x00\x00\x00"), 0o644))
	for _, ref := range []string{"127.0.0.1:5000", "oci://127.0.0.1:5000", "registry.example.com:443/", "meshguard/guard:v1", "guard:v1"} {
		t.Run(ref, func(t *testing.T) {
			r := runCLI(t, "push", "module", wasmPath, ref)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Contains(t, r.stderr, ref)
			r = runCLI(t, "pull", "module", ref, "--output-file", filepath.Join(t.TempDir(), "m.wasm"))
			assert.Equal(t, exitUsage, r.code, r.stderr)
		})
	}
}
