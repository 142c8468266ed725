package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/filters/wasmbuild"
)

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
		out, err := runDistCLI(t, "push", "module", wasmPath, host+"/cli/hello:"+f, "--format", f)
		require.NoError(t, err, out)
		d := strings.TrimSpace(out)
		require.Regexp(t, `^sha256:[0-9a-f]{64}$`, d)
		digests = append(digests, d)

		dst := filepath.Join(t.TempDir(), "out.wasm")
		out, err = runDistCLI(t, "pull", "module", host+"/cli/hello@"+d, "-o", dst)
		require.NoError(t, err, out)
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.Equal(t, wasm, got)
	}
	// Same module again: same digest (deterministic packaging).
	out, err := runDistCLI(t, "push", "module", wasmPath, host+"/cli/hello:again")
	require.NoError(t, err, out)
	require.Equal(t, digests[0], strings.TrimSpace(out))

	notWasm := filepath.Join(t.TempDir(), "x.wasm")
	require.NoError(t, os.WriteFile(notWasm, []byte("hello"), 0o644))
	_, err = runDistCLI(t, "push", "module", notWasm, host+"/cli/bad:v1")
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 2, ee.code)
	_, err = runDistCLI(t, "push", "module", wasmPath, host+"/cli/hello:v1", "--format", "zip")
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 2, ee.code)
}
