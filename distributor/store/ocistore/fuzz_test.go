package ocistore

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/store"
)

// FuzzDecodeUploadID: whatever a client sends as an upload id, the decoded
// location is an upload URL of the repository it was decoded for, and it
// survives a round trip.
func FuzzDecodeUploadID(f *testing.F) {
	const full = "meshguard/filters/guard"
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	f.Add(raw("0 /v2/meshguard/filters/guard/blobs/uploads/6c1a0d5e-9f5b-4c1e-8f57-2f0d3b8f6e1a?_state=abc%3D"))
	f.Add(raw("1048576 /v2/meshguard/filters/guard/blobs/uploads/abc"))
	f.Add(raw("0 http://evil.example/v2/meshguard/filters/guard/blobs/uploads/abc"))
	f.Add(raw("0 //evil.example/v2/meshguard/filters/guard/blobs/uploads/abc"))
	f.Add(raw("0 /v2/meshguard/filters/guard/blobs/uploads/../../other/blobs/uploads/x"))
	f.Add(raw("0 /v2/meshguard/filters/guard/blobs/uploads/%2e%2e"))
	f.Add(raw("0 /v2/meshguard/filters/guard/blobs/uploads/x?digest=sha256:00"))
	f.Add(raw("-1 /v2/meshguard/filters/guard/blobs/uploads/x"))
	f.Add(raw("01 /v2/meshguard/filters/guard/blobs/uploads/x"))
	f.Add("not base64!")
	f.Fuzz(func(t *testing.T, id string) {
		size, loc, err := decodeUploadID(full, id)
		if err != nil {
			return
		}
		if size < 0 || loc.Scheme != "" || loc.Host != "" || loc.User != nil || loc.Fragment != "" {
			t.Fatalf("accepted %q: size %d, location %#v", id, size, loc)
		}
		session, ok := strings.CutPrefix(loc.Path, "/v2/"+full+"/blobs/uploads/")
		if !ok || session == "" || strings.Contains(session, "/") || session == "." || session == ".." {
			t.Fatalf("accepted %q: path %q is not an upload of %s", id, loc.Path, full)
		}
		if q, _ := url.ParseQuery(loc.RawQuery); q.Has("digest") {
			t.Fatalf("accepted %q: query sets digest", id)
		}
		if _, _, err := decodeUploadID("meshguard/other", id); err == nil {
			t.Fatalf("id %q decoded for another repository", id)
		}
		size2, loc2, err := decodeUploadID(full, encodeUploadID(size, loc))
		if err != nil || size2 != size || loc2.String() != loc.String() {
			t.Fatalf("round trip of %q: %d %v %v", id, size2, loc2, err)
		}
	})
}

func TestDecodeUploadID(t *testing.T) {
	const full = "meshguard/filters/guard"
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, id string
		ok       bool
	}{
		{"distribution", raw("5 /v2/meshguard/filters/guard/blobs/uploads/6c1a0d5e-9f5b?_state=abc%3D"), true},
		{"no query", raw("0 /v2/meshguard/filters/guard/blobs/uploads/abc"), true},
		{"other repository", raw("0 /v2/meshguard/other/blobs/uploads/abc"), false},
		{"nested deeper", raw("0 /v2/meshguard/filters/guard/blobs/uploads/a/b"), false},
		{"dot dot", raw("0 /v2/meshguard/filters/guard/blobs/uploads/.."), false},
		{"escaped", raw("0 /v2/meshguard/filters/guard/blobs/uploads/a%2Fb"), false},
		{"absolute", raw("0 https://evil.example/v2/meshguard/filters/guard/blobs/uploads/abc"), false},
		{"scheme relative", raw("0 //evil.example/v2/meshguard/filters/guard/blobs/uploads/abc"), false},
		{"user info", raw("0 //u:p@/v2/meshguard/filters/guard/blobs/uploads/abc"), false},
		{"digest in query", raw("0 /v2/meshguard/filters/guard/blobs/uploads/abc?digest=sha256:00"), false},
		{"negative size", raw("-1 /v2/meshguard/filters/guard/blobs/uploads/abc"), false},
		{"leading zero", raw("01 /v2/meshguard/filters/guard/blobs/uploads/abc"), false},
		{"padding", raw("0 /v2/meshguard/filters/guard/blobs/uploads/abc") + "==", false},
		{"not base64", "%%%", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeUploadID(full, tc.id)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, store.ErrNotFound)
			}
		})
	}
}
