package oci_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/internal/cncftest"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store/ocistore"
)

// client is a tiny raw-HTTP driver for conformance tables.
type client struct {
	t    *testing.T
	base string
}

func (c client) do(method, path, ctype string, body []byte, hdr ...string) *http.Response {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	require.NoError(c.t, err)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func errCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.NotEmpty(t, e.Errors)
	return e.Errors[0].Code
}

func manifestFor(config, layer []byte, subject *digest.Digest, artifactType string) []byte {
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     string(types.OCIManifestSchema1),
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(config), "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.FromBytes(layer), "size": len(layer)}},
	}
	if subject != nil {
		m["subject"] = map[string]any{"mediaType": string(types.OCIManifestSchema1), "digest": *subject, "size": 1}
	}
	if artifactType != "" {
		m["artifactType"] = artifactType
	}
	b, _ := json.Marshal(m)
	return b
}

// serverFunc starts the handler over a fresh store of one backend.
type serverFunc func(t testing.TB, opt oci.Options) (*httptest.Server, string)

func TestConformance(t *testing.T) { conformance(t, newServer) }

// TestConformanceExternalRegistry runs the same requests over the oci
// storage backend, in a CNCF Distribution registry.
func TestConformanceExternalRegistry(t *testing.T) {
	addr := cncftest.Start(t)
	conformance(t, func(t testing.TB, opt oci.Options) (*httptest.Server, string) {
		st, err := ocistore.New(ocistore.Options{
			Registry: addr, Prefix: fmt.Sprintf("conf%d", time.Now().UnixNano()), PlainHTTP: true, Auth: authn.Anonymous,
		})
		require.NoError(t, err)
		srv := httptest.NewServer(oci.NewHandler(st, opt))
		t.Cleanup(srv.Close)
		return srv, strings.TrimPrefix(srv.URL, "http://")
	})
}

func conformance(t *testing.T, newServer serverFunc) {
	srv, _ := newServer(t, oci.Options{AllowDelete: true, MaxManifestBytes: 1 << 16})
	c := client{t, srv.URL}
	config := []byte(`{"architecture":"wasm","os":"wasip1"}`)
	layer := []byte("layer content for conformance")
	cd, ld := digest.FromBytes(config), digest.FromBytes(layer)
	man := manifestFor(config, layer, nil, "")
	md := digest.FromBytes(man)

	t.Run("base", func(t *testing.T) {
		r := c.do("GET", "/v2/", "", nil)
		require.Equal(t, 200, r.StatusCode)
		require.Equal(t, "registry/2.0", r.Header.Get("Docker-Distribution-API-Version"))
	})

	t.Run("push", func(t *testing.T) {
		// Monolithic POST ?digest=.
		r := c.do("POST", "/v2/conf/repo/blobs/uploads/?digest="+cd.String(), "application/octet-stream", config)
		require.Equal(t, 201, r.StatusCode)
		require.Equal(t, "/v2/conf/repo/blobs/"+cd.String(), r.Header.Get("Location"))
		// Chunked: POST, PATCH x2 with Content-Range, PUT.
		r = c.do("POST", "/v2/conf/repo/blobs/uploads/", "", nil)
		require.Equal(t, 202, r.StatusCode)
		loc := r.Header.Get("Location")
		require.True(t, strings.HasPrefix(loc, "/v2/conf/repo/blobs/uploads/"))
		r = c.do("PATCH", loc, "application/octet-stream", layer[:10], "Content-Range", "0-9")
		require.Equal(t, 202, r.StatusCode)
		require.Equal(t, "0-9", r.Header.Get("Range"))
		// Out-of-order chunk is refused with 416.
		r = c.do("PATCH", loc, "application/octet-stream", layer[10:], "Content-Range", fmt.Sprintf("5-%d", len(layer)-6))
		require.Equal(t, 416, r.StatusCode)
		require.Equal(t, "0-9", r.Header.Get("Range"))
		require.Equal(t, "BLOB_UPLOAD_INVALID", errCode(t, r))
		r = c.do("PATCH", loc, "application/octet-stream", layer[10:], "Content-Range", fmt.Sprintf("10-%d", len(layer)-1))
		require.Equal(t, 202, r.StatusCode)
		r = c.do("GET", loc, "", nil)
		require.Equal(t, 204, r.StatusCode)
		require.Equal(t, fmt.Sprintf("0-%d", len(layer)-1), r.Header.Get("Range"))
		// Wrong digest on close.
		r = c.do("PUT", loc+"?digest="+cd.String(), "", nil)
		require.Equal(t, 400, r.StatusCode)
		require.Equal(t, "DIGEST_INVALID", errCode(t, r))
		r = c.do("PUT", loc+"?digest="+ld.String(), "", nil)
		require.Equal(t, 201, r.StatusCode)
		require.Equal(t, ld.String(), r.Header.Get("Docker-Content-Digest"))
		// POST then single PUT with body.
		r = c.do("POST", "/v2/conf/other/blobs/uploads/", "", nil)
		loc2 := r.Header.Get("Location")
		r = c.do("PUT", loc2+"?digest="+ld.String(), "application/octet-stream", layer)
		require.Equal(t, 201, r.StatusCode)
		// Digest mismatch on monolithic push leaves nothing behind.
		r = c.do("POST", "/v2/conf/repo/blobs/uploads/?digest="+digest.FromString("other").String(), "application/octet-stream", layer)
		require.Equal(t, 400, r.StatusCode)
		require.Equal(t, "DIGEST_INVALID", errCode(t, r))
		// sha512 is accepted.
		d512 := digest.SHA512.FromBytes(layer)
		r = c.do("POST", "/v2/conf/repo/blobs/uploads/?digest="+d512.String(), "application/octet-stream", layer)
		require.Equal(t, 201, r.StatusCode)
		// Chunked sha512 (the oci backend: CNCF Distribution answers with
		// its canonical sha256 digest).
		r = c.do("POST", "/v2/conf/sha512/blobs/uploads/", "", nil)
		require.Equal(t, 202, r.StatusCode)
		loc512 := r.Header.Get("Location")
		r = c.do("PATCH", loc512, "application/octet-stream", layer[:7], "Content-Range", "0-6")
		require.Equal(t, 202, r.StatusCode)
		loc512 = r.Header.Get("Location")
		sep := "?"
		if strings.Contains(loc512, "?") {
			sep = "&"
		}
		r = c.do("PUT", loc512+sep+"digest="+d512.String(), "application/octet-stream", layer[7:], "Content-Range", fmt.Sprintf("7-%d", len(layer)-1))
		require.Equal(t, 201, r.StatusCode, "chunked sha512 upload")
		require.Equal(t, d512.String(), r.Header.Get("Docker-Content-Digest"))
		r = c.do("GET", "/v2/conf/sha512/blobs/"+d512.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
		b512, _ := io.ReadAll(r.Body)
		require.Equal(t, layer, b512)
		// Cross-repo mount.
		r = c.do("POST", "/v2/conf/mounted/blobs/uploads/?mount="+ld.String()+"&from=conf/repo", "", nil)
		require.Equal(t, 201, r.StatusCode)
		// Mount from a repository without the blob falls back to an upload session.
		r = c.do("POST", "/v2/conf/mounted2/blobs/uploads/?mount="+ld.String()+"&from=nope", "", nil)
		require.Equal(t, 202, r.StatusCode)
		// Unknown upload.
		r = c.do("PATCH", "/v2/conf/repo/blobs/uploads/00000000000000000000000000000000", "", layer)
		require.Equal(t, 404, r.StatusCode)
		require.Equal(t, "BLOB_UPLOAD_UNKNOWN", errCode(t, r))

		// Manifests.
		r = c.do("PUT", "/v2/conf/repo/manifests/v1", string(types.OCIManifestSchema1), man)
		require.Equal(t, 201, r.StatusCode)
		require.Equal(t, md.String(), r.Header.Get("Docker-Content-Digest"))
		r = c.do("PUT", "/v2/conf/repo/manifests/"+md.String(), string(types.OCIManifestSchema1), man)
		require.Equal(t, 201, r.StatusCode)
		// Tags given with a push by digest (?tag=, distribution-spec 1.1).
		for _, dg := range []string{cd.String(), ld.String()} {
			r = c.do("POST", "/v2/conf/tagged/blobs/uploads/?mount="+dg+"&from=conf/repo", "", nil)
			require.Equal(t, 201, r.StatusCode)
		}
		r = c.do("PUT", "/v2/conf/tagged/manifests/"+md.String()+"?tag=one&tag=two", string(types.OCIManifestSchema1), man)
		require.Equal(t, 201, r.StatusCode)
		require.Equal(t, []string{"one", "two"}, r.Header.Values("OCI-Tag"))
		for _, tag := range []string{"one", "two"} {
			r = c.do("GET", "/v2/conf/tagged/manifests/"+tag, "", nil)
			require.Equal(t, 200, r.StatusCode, tag)
			require.Equal(t, md.String(), r.Header.Get("Docker-Content-Digest"))
		}
		r = c.do("PUT", "/v2/conf/tagged/manifests/"+md.String()+"?tag=-bad", string(types.OCIManifestSchema1), man)
		require.Equal(t, 400, r.StatusCode)
		require.Equal(t, "MANIFEST_INVALID", errCode(t, r))
		// Non-distributable layers are refused (see the package doc).
		foreign := bytes.Replace(man, []byte(`"application/vnd.oci.image.layer.v1.tar"`), []byte(`"`+string(types.OCIRestrictedLayer)+`"`), 1)
		require.NotEqual(t, man, foreign)
		r = c.do("PUT", "/v2/conf/repo/manifests/foreign", string(types.OCIManifestSchema1), foreign)
		require.Equal(t, 400, r.StatusCode)
		require.Equal(t, "MANIFEST_INVALID", errCode(t, r))
		for _, tc := range []struct {
			name, ctype, ref string
			body             []byte
			code             string
		}{
			{"not json", string(types.OCIManifestSchema1), "bad", []byte("{"), "MANIFEST_INVALID"},
			{"schema 1", string(types.OCIManifestSchema1), "bad", []byte(`{"schemaVersion":1}`), "MANIFEST_INVALID"},
			{"no config", string(types.OCIManifestSchema1), "bad", []byte(`{"schemaVersion":2,"layers":[]}`), "MANIFEST_INVALID"},
			{"unknown type", "text/plain", "bad", man, "MANIFEST_INVALID"},
			{"type mismatch", string(types.DockerManifestSchema2), "bad", man, "MANIFEST_INVALID"},
			{"missing blob", string(types.OCIManifestSchema1), "bad", manifestFor(config, []byte("absent"), nil, ""), "MANIFEST_BLOB_UNKNOWN"},
			{"digest ref mismatch", string(types.OCIManifestSchema1), digest.FromString("x").String(), man, "DIGEST_INVALID"},
			{"bad tag", string(types.OCIManifestSchema1), "-bad", man, "MANIFEST_INVALID"},
			{"too large", string(types.OCIManifestSchema1), "big", bytes.Repeat([]byte(" "), 1<<17), "SIZE_INVALID"},
		} {
			r := c.do("PUT", "/v2/conf/repo/manifests/"+tc.ref, tc.ctype, tc.body)
			require.GreaterOrEqual(t, r.StatusCode, 400, tc.name)
			require.Equal(t, tc.code, errCode(t, r), tc.name)
		}
	})

	t.Run("pull", func(t *testing.T) {
		for _, ref := range []string{"v1", md.String()} {
			r := c.do("GET", "/v2/conf/repo/manifests/"+ref, "", nil)
			require.Equal(t, 200, r.StatusCode)
			require.Equal(t, string(types.OCIManifestSchema1), r.Header.Get("Content-Type"))
			require.Equal(t, md.String(), r.Header.Get("Docker-Content-Digest"))
			b, _ := io.ReadAll(r.Body)
			require.Equal(t, man, b)
			r = c.do("HEAD", "/v2/conf/repo/manifests/"+ref, "", nil)
			require.Equal(t, 200, r.StatusCode)
			require.EqualValues(t, len(man), r.ContentLength)
		}
		r := c.do("GET", "/v2/conf/repo/blobs/"+ld.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
		b, _ := io.ReadAll(r.Body)
		require.Equal(t, layer, b)
		r = c.do("HEAD", "/v2/conf/repo/blobs/"+ld.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
		require.EqualValues(t, len(layer), r.ContentLength)
		require.Equal(t, ld.String(), r.Header.Get("Docker-Content-Digest"))
		r = c.do("GET", "/v2/conf/repo/blobs/"+ld.String(), "", nil, "Range", "bytes=0-4")
		require.Equal(t, 206, r.StatusCode)
		b, _ = io.ReadAll(r.Body)
		require.Equal(t, layer[:5], b)
		r = c.do("GET", "/v2/conf/mounted/blobs/"+ld.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)

		for _, tc := range []struct{ path, code string }{
			{"/v2/conf/repo/manifests/nope", "MANIFEST_UNKNOWN"},
			{"/v2/conf/repo/manifests/" + digest.FromString("nope").String(), "MANIFEST_UNKNOWN"},
			{"/v2/conf/repo/blobs/" + digest.FromString("nope").String(), "BLOB_UNKNOWN"},
			{"/v2/conf/repo/blobs/sha256:xyz", "DIGEST_INVALID"},
			{"/v2/conf/repo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"},
			// Blobs are scoped to repositories that hold them.
			{"/v2/conf/unrelated/blobs/" + ld.String(), "BLOB_UNKNOWN"},
			{"/v2/Conf/Repo/manifests/v1", "NAME_INVALID"},
			{"/v2/conf/../repo/manifests/v1", "NAME_INVALID"},
			{"/v2/conf/%2e%2e/repo/manifests/v1", "NAME_INVALID"},
			{"/v2/conf/nope/tags/list", "NAME_UNKNOWN"},
		} {
			r := c.do("GET", tc.path, "", nil)
			require.GreaterOrEqual(t, r.StatusCode, 400, tc.path)
			require.Equal(t, tc.code, errCode(t, r), tc.path)
		}
	})

	t.Run("content discovery", func(t *testing.T) {
		for _, tag := range []string{"a", "b", "c", "d"} {
			r := c.do("PUT", "/v2/conf/repo/manifests/"+tag, string(types.OCIManifestSchema1), man)
			require.Equal(t, 201, r.StatusCode)
		}
		r := c.do("GET", "/v2/conf/repo/tags/list", "", nil)
		var tl struct {
			Name string
			Tags []string
		}
		require.NoError(t, json.NewDecoder(r.Body).Decode(&tl))
		require.Equal(t, "conf/repo", tl.Name)
		require.Equal(t, []string{"a", "b", "c", "d", "v1"}, tl.Tags)
		r = c.do("GET", "/v2/conf/repo/tags/list?n=2&last=a", "", nil)
		require.NoError(t, json.NewDecoder(r.Body).Decode(&tl))
		require.Equal(t, []string{"b", "c"}, tl.Tags)
		require.Contains(t, r.Header.Get("Link"), `rel="next"`)
		require.Contains(t, r.Header.Get("Link"), "last=c")
		r = c.do("GET", "/v2/conf/repo/tags/list?n=0", "", nil)
		require.NoError(t, json.NewDecoder(r.Body).Decode(&tl))
		require.Empty(t, tl.Tags)

		// Referrers via subject.
		for i, at := range []string{"application/vnd.example.sig", "application/vnd.example.sbom"} {
			ref := manifestFor(config, layer, &md, at)
			ref = append(ref[:len(ref)-1], []byte(fmt.Sprintf(`,"annotations":{"n":"%d"}}`, i))...)
			r := c.do("PUT", "/v2/conf/repo/manifests/"+digest.FromBytes(ref).String(), string(types.OCIManifestSchema1), ref)
			require.Equal(t, 201, r.StatusCode)
			require.Equal(t, md.String(), r.Header.Get("OCI-Subject"))
		}
		var idx struct {
			MediaType string
			Manifests []oci.Descriptor
		}
		r = c.do("GET", "/v2/conf/repo/referrers/"+md.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
		require.Equal(t, string(types.OCIImageIndex), r.Header.Get("Content-Type"))
		require.NoError(t, json.NewDecoder(r.Body).Decode(&idx))
		require.Len(t, idx.Manifests, 2)
		r = c.do("GET", "/v2/conf/repo/referrers/"+md.String()+"?artifactType=application/vnd.example.sbom", "", nil)
		require.Equal(t, "artifactType", r.Header.Get("OCI-Filters-Applied"))
		require.NoError(t, json.NewDecoder(r.Body).Decode(&idx))
		require.Len(t, idx.Manifests, 1)
		require.Equal(t, "application/vnd.example.sbom", idx.Manifests[0].ArtifactType)
		r = c.do("GET", "/v2/conf/repo/referrers/"+digest.FromString("none").String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
		require.NoError(t, json.NewDecoder(r.Body).Decode(&idx))
		require.Empty(t, idx.Manifests)
	})

	t.Run("content management", func(t *testing.T) {
		r := c.do("DELETE", "/v2/conf/repo/manifests/a", "", nil)
		require.Equal(t, 202, r.StatusCode)
		r = c.do("GET", "/v2/conf/repo/manifests/a", "", nil)
		require.Equal(t, 404, r.StatusCode)
		r = c.do("DELETE", "/v2/conf/repo/manifests/"+md.String(), "", nil)
		require.Equal(t, 202, r.StatusCode)
		for _, ref := range []string{md.String(), "v1", "b"} {
			r = c.do("GET", "/v2/conf/repo/manifests/"+ref, "", nil)
			require.Equal(t, 404, r.StatusCode, ref)
		}
		r = c.do("DELETE", "/v2/conf/repo/blobs/"+ld.String(), "", nil)
		require.Equal(t, 202, r.StatusCode)
		r = c.do("GET", "/v2/conf/repo/blobs/"+ld.String(), "", nil)
		require.Equal(t, 404, r.StatusCode)
		r = c.do("DELETE", "/v2/conf/repo/blobs/"+ld.String(), "", nil)
		require.Equal(t, 404, r.StatusCode)
		// Still in the repository it was mounted into.
		r = c.do("GET", "/v2/conf/mounted/blobs/"+ld.String(), "", nil)
		require.Equal(t, 200, r.StatusCode)
	})

	t.Run("deletes disabled", func(t *testing.T) {
		srv, _ := newServer(t, oci.Options{})
		c := client{t, srv.URL}
		r := c.do("POST", "/v2/x/blobs/uploads/?digest="+ld.String(), "", layer)
		require.Equal(t, 201, r.StatusCode)
		r = c.do("DELETE", "/v2/x/blobs/"+ld.String(), "", nil)
		require.Equal(t, 405, r.StatusCode)
		require.Equal(t, "UNSUPPORTED", errCode(t, r))
	})
}
