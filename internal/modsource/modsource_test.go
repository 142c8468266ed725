package modsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
)

// TestFetch gets one module from a file, a real HTTP server and a real OCI
// registry (the distributor's, on loopback), each pinned, and refuses every
// mismatch.
func TestFetch(t *testing.T) {
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	sum := sha256.Sum256(wasm)
	fileSum := hex.EncodeToString(sum[:])
	file := filepath.Join(t.TempDir(), "m.wasm")
	require.NoError(t, os.WriteFile(file, wasm, 0o644))

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/m.wasm" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(wasm)
	}))
	defer web.Close()

	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	require.NoError(t, err)
	reg := httptest.NewServer(oci.NewHandler(st, oci.Options{}))
	defer reg.Close()
	p, err := modules.Build(wasm, modules.FormatOCIImage)
	require.NoError(t, err)
	host := strings.TrimPrefix(reg.URL, "http://")
	dgst, err := modules.Push(context.Background(), p, host+"/m/guard:v1", modules.RemoteOptions{})
	require.NoError(t, err)

	tests := []struct {
		name, src, want string
		err             string
	}{
		{"file", file, "", ""},
		{"file pinned", file, "sha256:" + fileSum, ""},
		{"file, wrong pin", file, strings.Repeat("0", 64), "module digest mismatch"},
		{"http pinned", web.URL + "/m.wasm", fileSum, ""},
		{"http without a pin", web.URL + "/m.wasm", "", ErrNoDigest.Error()},
		{"http, wrong pin", web.URL + "/m.wasm", strings.Repeat("0", 64), "module digest mismatch"},
		{"http 404", web.URL + "/other.wasm", fileSum, "404"},
		{"oci by tag, pinned by manifest digest", "oci://" + host + "/m/guard:v1", dgst.String(), ""},
		{"oci by digest", "oci://" + host + "/m/guard@" + dgst.String(), "", ""},
		{"oci pinned by the file sum is a mismatch", "oci://" + host + "/m/guard:v1", fileSum, "manifest digest"},
		{"oci without repository", "oci://" + host, "", "no repository"},
		{"missing file", filepath.Join(t.TempDir(), "none.wasm"), "", "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Fetch(context.Background(), tc.src, tc.want, Options{})
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, wasm, got)
		})
	}
}
