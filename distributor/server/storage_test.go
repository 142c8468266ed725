package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/internal/cncftest"
	"github.com/meshguard/meshguard/distributor/modules"
)

// ociConfig is a test config with storage in the registry at registry.
func ociConfig(t *testing.T, registry string) Config {
	// No Docker config of the machine running the tests leaks in.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	cfg := testConfig(t)
	cfg.Storage.Backend = "oci"
	cfg.Storage.OCI = OCIStorageConfig{Registry: registry, Insecure: true}
	return cfg
}

// TestOCIBackendSharedByReplicas: two distributors (own data directories)
// store in one CNCF Distribution registry. What is pushed through one is
// served by the other and is in the registry itself, with equal digests.
func TestOCIBackendSharedByReplicas(t *testing.T) {
	addr := cncftest.Start(t)
	one := startServer(t, ociConfig(t, addr+"/meshguard"), Options{})
	two := startServer(t, ociConfig(t, addr+"/meshguard"), Options{})
	hostOne := strings.TrimPrefix(one.URL, "http://")
	hostTwo := strings.TrimPrefix(two.URL, "http://")
	ctx := context.Background()

	for _, ts := range []*testServer{one, two} {
		r := do(t, nil, "GET", ts.URL+"/readyz", nil)
		var ready struct {
			Checks map[string]string `json:"checks"`
		}
		r.json(t, &ready)
		assert.Equal(t, "ok", ready.Checks["storage"], string(r.Body))
	}

	// A wasm module in Istio's layout, pushed to one replica.
	wasm := []byte("\x00asm\x01\x00\x00\x00meshguard-test")
	pkg, err := modules.Build(wasm, modules.FormatOCIArtifact)
	require.NoError(t, err)
	pushed, err := modules.Push(ctx, pkg, hostOne+"/filters/guard:v1", modules.RemoteOptions{Insecure: true})
	require.NoError(t, err)
	for _, ref := range []string{hostTwo + "/filters/guard:v1", addr + "/meshguard/filters/guard:v1"} {
		got, d, err := modules.Pull(ctx, ref, modules.RemoteOptions{Insecure: true})
		require.NoError(t, err, ref)
		assert.Equal(t, pushed, d, ref)
		assert.Equal(t, wasm, got, ref)
	}
	r := do(t, nil, "GET", two.URL+"/modules/filters/guard/v1.wasm", nil)
	require.Equal(t, 200, r.Code, string(r.Body))
	assert.Equal(t, wasm, r.Body)
	sum := sha256.Sum256(wasm)
	r = do(t, nil, "GET", two.URL+"/modules/filters/guard/v1.wasm.sha256", nil)
	assert.Contains(t, string(r.Body), hex.EncodeToString(sum[:]))

	// An image through the other replica: go-containerregistry streams
	// layers with PATCH and commits with PUT, following each Location.
	img, err := random.Image(3<<20, 3)
	require.NoError(t, err)
	want, err := img.Digest()
	require.NoError(t, err)
	ref, err := name.ParseReference(hostTwo+"/apps/demo:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img))
	for _, s := range []string{hostOne + "/apps/demo:v1", addr + "/meshguard/apps/demo:v1"} {
		ref, err := name.ParseReference(s, name.Insecure)
		require.NoError(t, err)
		got, err := remote.Image(ref)
		require.NoError(t, err, s)
		d, err := got.Digest()
		require.NoError(t, err)
		assert.Equal(t, want, d, s)
		layers, err := got.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			// Reading checks each layer's digest.
			rc, err := l.Compressed()
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, rc)
			require.NoError(t, err, s)
			rc.Close()
		}
	}

	var catalog struct {
		Repositories []string `json:"repositories"`
	}
	do(t, nil, "GET", one.URL+"/v2/_catalog", nil).json(t, &catalog)
	assert.Equal(t, []string{"apps/demo", "filters/guard"}, catalog.Repositories)
}

func TestOCIBackendUnreachableIsNotReady(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	var logs syncBuffer
	ts := startServer(t, ociConfig(t, addr+"/hidden-prefix"), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	r := do(t, nil, "GET", ts.URL+"/readyz", nil)
	assert.Equal(t, 503, r.Code)
	assert.Contains(t, string(r.Body), `"storage"`)

	// Neither answers nor readiness name the backing registry; the log does.
	for _, path := range []string{"/readyz", "/v2/filters/guard/manifests/v1", "/v2/filters/guard/blobs/sha256:" + strings.Repeat("a", 64),
		"/v2/filters/guard/tags/list", "/modules/filters/guard/v1.wasm"} {
		r := do(t, nil, "GET", ts.URL+path, nil)
		assert.GreaterOrEqual(t, r.Code, 500, path)
		assert.NotContains(t, string(r.Body), addr, path)
		assert.NotContains(t, string(r.Body), "hidden-prefix", path)
	}
	r = do(t, nil, "POST", ts.URL+"/v2/filters/guard/blobs/uploads/", nil)
	assert.GreaterOrEqual(t, r.Code, 500)
	assert.NotContains(t, string(r.Body), addr)
	assert.Contains(t, logs.String(), addr)
}

// TestInternalErrorsKeepDetailsInTheLog: a 500 names a reference into the
// log, never a path or an error text.
func TestInternalErrorsKeepDetailsInTheLog(t *testing.T) {
	cfg := testConfig(t)
	var logs syncBuffer
	ts := startServer(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, os.RemoveAll(filepath.Join(cfg.Data, "decisions")))
	r := do(t, nil, "GET", ts.URL+"/v1/decisions?limit=5", nil)
	require.Equal(t, 500, r.Code)
	assert.NotContains(t, string(r.Body), cfg.Data)
	var e map[string]string
	r.json(t, &e)
	ref := regexp.MustCompile(`reference ([0-9a-f]{12})`).FindStringSubmatch(e["error"])
	require.Len(t, ref, 2, e["error"])
	assert.Contains(t, logs.String(), "ref="+ref[1])
	assert.Contains(t, logs.String(), cfg.Data)
}

func TestOCIStorageConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		oci  OCIStorageConfig
		key  string // named in the error; "" means valid
	}{
		{"plain", OCIStorageConfig{Registry: "harbor.example.com"}, ""},
		{"prefix in registry", OCIStorageConfig{Registry: "harbor.example.com/meshguard/prod"}, ""},
		{"credentials", OCIStorageConfig{Registry: "r.example.com", Username: "u", PasswordFile: "/run/pw"}, ""},
		{"token", OCIStorageConfig{Registry: "r.example.com", TokenFile: "/run/token"}, ""},
		{"no registry", OCIStorageConfig{}, "storage.oci.registry"},
		{"scheme", OCIStorageConfig{Registry: "https://r.example.com"}, "storage.oci.registry"},
		{"two prefixes", OCIStorageConfig{Registry: "r.example.com/a", Prefix: "b"}, "storage.oci.prefix"},
		{"bad prefix", OCIStorageConfig{Registry: "r.example.com", Prefix: "Upper"}, "storage.oci.prefix"},
		{"ca with plain http", OCIStorageConfig{Registry: "r.example.com", Insecure: true, CAFile: "ca.pem"}, "storage.oci.ca_file"},
		{"username alone", OCIStorageConfig{Registry: "r.example.com", Username: "u"}, "password_file"},
		{"token and password", OCIStorageConfig{Registry: "r.example.com", Username: "u", Password: "p", TokenFile: "t"}, "token_file"},
		{"negative timeout", OCIStorageConfig{Registry: "r.example.com", Timeout: -1}, "storage.oci.timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Storage.Backend = "oci"
			cfg.Storage.OCI = tc.oci
			err := cfg.Validate()
			if err == nil && tc.key != "" {
				// Some problems only show when the store is built.
				_, err = New(context.Background(), cfg, Options{Logger: quietLogger()})
			}
			if tc.key == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.key)
		})
	}

	cfg := testConfig(t)
	cfg.Storage.OCI.Registry = "r.example.com"
	assert.ErrorContains(t, cfg.Validate(), "storage.backend is not oci")
}
