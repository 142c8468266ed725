package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/modules"
)

// TestOCIMountedWithPushAllowlist: /v2/ is the OCI registry; pushes need
// the push action (here a token given as a Basic pull/push secret), pulls
// the read action (here anonymous, as Istio's agent pulls).
func TestOCIMountedWithPushAllowlist(t *testing.T) {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("ci:push-secret\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{auth.ActionRead: {"anonymous"}, auth.ActionPush: {"token:ci"}}
	ts := startServer(t, cfg, Options{})
	host := strings.TrimPrefix(ts.URL, "http://")

	ref, err := name.ParseReference(host + "/filters/guard:v1")
	require.NoError(t, err)
	img, err := random.Image(10_000, 2)
	require.NoError(t, err)

	err = remote.Write(ref, img)
	require.Error(t, err, "anonymous push is refused")
	err = remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "ci", Password: "wrong"}))
	require.Error(t, err, "wrong secret is refused")
	require.NoError(t, remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "ci", Password: "push-secret"})))

	got, err := remote.Image(ref)
	require.NoError(t, err, "anonymous pull")
	want, _ := img.Digest()
	d, err := got.Digest()
	require.NoError(t, err)
	assert.Equal(t, want, d)

	// A wasm module pushed in Istio's layout is served over plain HTTP too.
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	pkg, err := modules.Build(wasm, modules.FormatOCIArtifact)
	require.NoError(t, err)
	_, err = modules.Push(context.Background(), pkg, host+"/filters/guard:v2", modules.RemoteOptions{Auth: &authn.Basic{Username: "ci", Password: "push-secret"}})
	require.NoError(t, err)
	r := do(t, nil, "GET", ts.URL+"/modules/filters/guard/v2.wasm", nil)
	require.Equal(t, 200, r.Code, string(r.Body))
	assert.Equal(t, wasm, r.Body)
	sum := sha256.Sum256(wasm)
	r = do(t, nil, "GET", ts.URL+"/modules/filters/guard/v2.wasm.sha256", nil)
	assert.Contains(t, string(r.Body), hex.EncodeToString(sum[:]))
	assert.Equal(t, 403, do(t, nil, "PUT", ts.URL+"/modules/filters/guard/v3.wasm", wasm).Code, "writes under /modules/ need push")
}

// TestOCIRefusalsUseTheSpecEnvelope: what the server itself refuses on
// /v2/ (401, 403, 413) answers the distribution spec's error body, so
// registry clients show the reason; other routes keep {"error": ...}.
func TestOCIRefusalsUseTheSpecEnvelope(t *testing.T) {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("ci:push-secret\nreader:read-secret\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{auth.ActionRead: {"token:reader", "token:ci"}, auth.ActionPush: {"token:ci"}}
	cfg.Limits.ModuleBytes = 1 << 10
	ts := startServer(t, cfg, Options{})
	for _, tc := range []struct {
		name, method, path, token string
		body                      []byte
		status                    int
		code                      string
	}{
		{"no credentials", "GET", "/v2/", "", nil, 401, "UNAUTHORIZED"},
		{"bad token", "GET", "/v2/filters/guard/tags/list", "nope", nil, 401, "UNAUTHORIZED"},
		{"reader pushes", "POST", "/v2/filters/guard/blobs/uploads/", "read-secret", nil, 403, "DENIED"},
		{"too large", "POST", "/v2/filters/guard/blobs/uploads/?digest=sha256:" + strings.Repeat("0", 64), "push-secret", make([]byte, 2<<10), 413, "SIZE_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{}
			if tc.token != "" {
				hdr = append(hdr, "Authorization", "Bearer "+tc.token)
			}
			r := do(t, nil, tc.method, ts.URL+tc.path, tc.body, hdr...)
			require.Equal(t, tc.status, r.Code, string(r.Body))
			var e struct {
				Errors []struct{ Code, Message string } `json:"errors"`
			}
			r.json(t, &e)
			require.Len(t, e.Errors, 1, string(r.Body))
			assert.Equal(t, tc.code, e.Errors[0].Code)
			assert.NotEmpty(t, e.Errors[0].Message)
			assert.Equal(t, "registry/2.0", r.Header.Get("Docker-Distribution-API-Version"))
		})
	}
	r := do(t, nil, "GET", ts.URL+"/v1/bundles", nil)
	require.Equal(t, 403, r.Code)
	var e map[string]string
	r.json(t, &e)
	assert.NotEmpty(t, e["error"])
}
