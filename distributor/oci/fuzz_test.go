package oci

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/meshguard/meshguard/distributor/store"
)

func FuzzDecodeManifest(f *testing.F) {
	f.Add(string(types.OCIManifestSchema1), []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`))
	f.Add(string(types.OCIImageIndex), []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}`))
	f.Add("", []byte(`{"schemaVersion":2}`))
	f.Fuzz(func(t *testing.T, ctype string, data []byte) {
		doc, mt, err := DecodeManifest(ctype, data)
		if err != nil {
			return
		}
		if doc.SchemaVersion != 2 {
			t.Fatalf("accepted schemaVersion %d", doc.SchemaVersion)
		}
		switch types.MediaType(mt) {
		case types.OCIManifestSchema1, types.DockerManifestSchema2:
			if doc.Config == nil {
				t.Fatal("accepted image manifest without config")
			}
			for _, l := range doc.Layers {
				if _, ok := parseDigest(string(l.Digest)); !ok {
					t.Fatalf("accepted layer digest %q", l.Digest)
				}
			}
		case types.OCIImageIndex, types.DockerManifestList:
		default:
			t.Fatalf("accepted media type %q", mt)
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/x", "/v2/a/../b/blobs/sha256:00", "/v2/_catalog", "/v2/a/tags/list", "/v2/a/referrers/sha256:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parsePath(p)
		if !ok || rt.op == "base" || rt.op == "catalog" {
			return
		}
		if store.ValidRepository(rt.name) {
			for _, seg := range strings.Split(rt.name, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("valid name %q has unsafe segment", rt.name)
				}
			}
		}
		if strings.Contains(rt.ref, "/") {
			t.Fatalf("reference %q contains a slash", rt.ref)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-9", "bytes 10-19/*", "bytes=0-0", "5-4", "-1-2", "a-b", "9223372036854775807-9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := ParseContentRange(s)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("%q -> %d-%d", s, start, end)
		}
	})
}
