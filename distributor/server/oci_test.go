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
