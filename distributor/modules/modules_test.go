package modules_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/filters/wasmbuild"
)

var (
	helloOnce sync.Once
	helloWasm []byte
)

func hello(t *testing.T) []byte {
	helloOnce.Do(func() {
		b, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello"))
		require.NoError(t, err)
		helloWasm = b
	})
	require.NotEmpty(t, helloWasm)
	return helloWasm
}

func serve(t *testing.T) (host string, st store.Store, srv *httptest.Server) {
	t.Helper()
	fs, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/v2/", oci.NewHandler(fs, oci.Options{}))
	mux.Handle("/modules/", modules.NewHTTPHandler(fs, modules.HTTPOptions{}))
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), fs, srv
}

func TestBuildIsDeterministicAndIstioShaped(t *testing.T) {
	wasm := hello(t)
	for _, f := range []modules.Format{modules.FormatOCIImage, modules.FormatDocker, modules.FormatOCIArtifact} {
		t.Run(string(f), func(t *testing.T) {
			a, err := modules.Build(wasm, f)
			require.NoError(t, err)
			b, err := modules.Build(append([]byte(nil), wasm...), f)
			require.NoError(t, err)
			require.Equal(t, a.Digest, b.Digest, "same module, same digest")
			require.Equal(t, digest.FromBytes(a.Manifest), a.Digest)

			var m modules.Manifest
			require.NoError(t, json.Unmarshal(a.Manifest, &m))
			require.Equal(t, 2, m.SchemaVersion)
			last := m.Layers[len(m.Layers)-1]
			switch f {
			case modules.FormatOCIImage:
				assert.Equal(t, types.OCIManifestSchema1, m.MediaType)
				assert.Equal(t, types.OCILayer, last.MediaType)
				assert.Equal(t, "compat", m.Annotations["module.wasm.image/variant"])
			case modules.FormatDocker:
				// Istio detects Docker images by the manifest mediaType field.
				assert.Equal(t, types.DockerManifestSchema2, m.MediaType)
				assert.Equal(t, types.DockerLayer, last.MediaType)
			case modules.FormatOCIArtifact:
				require.Len(t, m.Layers, 2, "Istio requires exactly two layers")
				assert.Equal(t, modules.MediaTypeWasmConfig, m.Config.MediaType)
				assert.Equal(t, modules.MediaTypeWasmConfig, m.Layers[0].MediaType)
				assert.Equal(t, modules.MediaTypeWasmContent, m.Layers[1].MediaType)
				assert.Equal(t, digest.FromBytes(wasm), m.Layers[1].Digest)
			}
			blobs := map[digest.Digest][]byte{}
			for _, bl := range a.Blobs {
				blobs[bl.Digest] = bl.Data
			}
			got, err := modules.Extract(a.Manifest, func(d digest.Digest) (io.ReadCloser, error) {
				return io.NopCloser(strings.NewReader(string(blobs[d]))), nil
			})
			require.NoError(t, err)
			require.Equal(t, wasm, got)
		})
	}
	_, err := modules.Build([]byte("not wasm at all"), modules.FormatOCIImage)
	require.ErrorIs(t, err, modules.ErrNotWasm)
	_, err = modules.ParseFormat("zip")
	require.Error(t, err)
}

func TestPushPullAllFormats(t *testing.T) {
	host, _, _ := serve(t)
	wasm := hello(t)
	ctx := context.Background()
	for _, f := range []modules.Format{modules.FormatOCIImage, modules.FormatDocker, modules.FormatOCIArtifact} {
		t.Run(string(f), func(t *testing.T) {
			p, err := modules.Build(wasm, f)
			require.NoError(t, err)
			ref := host + "/meshguard/hello-" + string(f) + ":v1"
			d, err := modules.Push(ctx, p, ref, modules.RemoteOptions{})
			require.NoError(t, err)
			require.Equal(t, p.Digest, d)

			// The registry reports the same manifest digest (the WasmPlugin sha256).
			r, _ := name.ParseReference(ref)
			desc, err := remote.Head(r)
			require.NoError(t, err)
			require.Equal(t, d.String(), desc.Digest.String())

			got, gd, err := modules.Pull(ctx, ref, modules.RemoteOptions{})
			require.NoError(t, err)
			require.Equal(t, wasm, got)
			require.Equal(t, d, gd)
			got, _, err = modules.Pull(ctx, host+"/meshguard/hello-"+string(f)+"@"+d.String(), modules.RemoteOptions{})
			require.NoError(t, err)
			require.Equal(t, wasm, got)
		})
	}
}

func TestHTTPHandler(t *testing.T) {
	host, _, srv := serve(t)
	wasm := hello(t)
	sum := sha256.Sum256(wasm)
	want := hex.EncodeToString(sum[:])
	for _, f := range []modules.Format{modules.FormatOCIImage, modules.FormatOCIArtifact} {
		p, err := modules.Build(wasm, f)
		require.NoError(t, err)
		_, err = modules.Push(context.Background(), p, host+"/mods/"+string(f)+":v1.2.0", modules.RemoteOptions{})
		require.NoError(t, err)

		base := srv.URL + "/modules/mods/" + string(f) + "/v1.2.0.wasm"
		resp, err := http.Get(base)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, wasm, body)
		require.Equal(t, `"`+want+`"`, resp.Header.Get("ETag"))
		require.Equal(t, want, resp.Header.Get("X-Content-Sha256"))
		require.Equal(t, "application/wasm", resp.Header.Get("Content-Type"))

		req, _ := http.NewRequest(http.MethodGet, base, nil)
		req.Header.Set("If-None-Match", `"`+want+`"`)
		resp, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotModified, resp.StatusCode)

		resp, err = http.Head(base)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.EqualValues(t, len(wasm), resp.ContentLength)

		resp, err = http.Get(base + ".sha256")
		require.NoError(t, err)
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, want+"\n", string(body))

		resp, err = http.Get(srv.URL + "/modules/mods/" + string(f) + "@" + p.Digest.String())
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, err = http.Get(srv.URL + "/modules/mods/" + string(f) + "/" + p.Digest.String() + ".wasm")
		require.NoError(t, err)
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, wasm, body)
	}
	for _, p := range []string{"/modules/mods/oci-image/missing.wasm", "/modules/../etc/passwd.wasm", "/modules/x.wasm", "/modules/mods/oci-image/v1.2.0.tar"} {
		resp, err := http.Get(srv.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode, p)
	}
	resp, err := http.Post(srv.URL+"/modules/mods/oci-image/v1.2.0.wasm", "application/wasm", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func FuzzParseModulePath(f *testing.F) {
	for _, s := range []string{"/modules/a/b.wasm", "/modules/a/b/c.wasm.sha256", "/modules/../x.wasm", "/modules/a/sha256:" + strings.Repeat("a", 64) + ".wasm", "/modules//x.wasm"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		repo, ref, _, ok := modules.ParseModulePath(p)
		if !ok {
			return
		}
		if !store.ValidRepository(repo) || strings.Contains(repo, "..") || strings.Contains(ref, "/") {
			t.Fatalf("accepted unsafe path %q -> %q %q", p, repo, ref)
		}
	})
}

func FuzzExtract(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:`+strings.Repeat("0", 64)+`","size":1}]}`), []byte("x"))
	f.Add([]byte(`{"layers":[{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm"}]}`), []byte("\x00asm\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, manifest, blob []byte) {
		wasm, err := modules.Extract(manifest, func(d digest.Digest) (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(string(blob))), nil
		})
		if err == nil {
			require.NoError(t, modules.CheckWasm(wasm))
		}
	})
}
