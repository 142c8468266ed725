package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
)

// TestPerChannelAndRepositoryRights: channels and repositories with their
// own allowlists replace the global ones there; a channel's scope defaults
// to its name, so a bundle signed for one environment is refused in
// another; a cross-repository mount needs read on the source.
func TestPerChannelAndRepositoryRights(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("ci-prod:p1\nci-staging:s1\nreader:r1\npusher-a:a1\npusher-b:b1\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{
		auth.ActionRead:    {"anonymous"},
		auth.ActionPublish: {"token:ci-staging"},
		auth.ActionPush:    {"token:pusher-a", "token:pusher-b"},
	}
	cfg.Bundles.Channels = map[string]ChannelConfig{
		"prod":    {Allow: map[auth.Action][]string{auth.ActionPublish: {"token:ci-prod"}, auth.ActionRead: {"token:reader"}}},
		"staging": {},
	}
	cfg.Storage.Repositories = map[string]RepositoryConfig{
		"team-a/*": {Allow: map[auth.Action][]string{auth.ActionPush: {"token:pusher-a"}, auth.ActionRead: {"token:pusher-a"}}},
	}
	ts := startServer(t, cfg, k.options())
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	for _, tc := range []struct {
		name, channel, scope, token string
		want                        int
	}{
		{"staging CI may not publish to prod", "prod", "prod", "s1", 403},
		{"prod CI may not publish to staging", "staging", "staging", "p1", 403},
		{"staging bundle replayed into prod", "prod", "staging", "p1", 422},
		{"prod CI publishes to prod", "prod", "prod", "p1", 201},
		{"staging CI publishes to staging", "staging", "staging", "s1", 201},
		{"unconfigured channel", "other", "other", "s1", 404},
	} {
		r := publish(t, ts.URL, tc.channel, k.bundle(t, 1, tc.scope), bearer(tc.token)...)
		assert.Equal(t, tc.want, r.Code, "%s: %s", tc.name, r.Body)
	}
	assert.Equal(t, 403, do(t, nil, "GET", ts.URL+"/v1/bundles/prod", nil).Code, "prod has its own read list")
	assert.Equal(t, 200, do(t, nil, "GET", ts.URL+"/v1/bundles/prod", nil, bearer("r1")...).Code)
	assert.Equal(t, 200, do(t, nil, "GET", ts.URL+"/v1/bundles/staging", nil).Code)
	var list map[string]uint64
	do(t, nil, "GET", ts.URL+"/v1/bundles", nil).json(t, &list)
	assert.Equal(t, map[string]uint64{"staging": 1}, list, "the listing shows only readable channels")
	assert.Equal(t, 404, do(t, nil, "GET", ts.URL+"/v1/bundles/unknown?wait=5s", nil).Code, "no waiting on unknown channels")

	blob := []byte("team a's module layer")
	d := digest.FromBytes(blob)
	up := "/v2/team-a/guard/blobs/uploads/?digest=" + d.String()
	assert.Equal(t, 403, do(t, nil, "POST", ts.URL+up, blob, bearer("b1")...).Code, "team-a/* has its own push list")
	require.Equal(t, 201, do(t, nil, "POST", ts.URL+up, blob, bearer("a1")...).Code)
	assert.Equal(t, 401, do(t, nil, "GET", ts.URL+"/v2/team-a/guard/blobs/"+d.String(), nil).Code)
	assert.Equal(t, 200, do(t, nil, "GET", ts.URL+"/v2/team-a/guard/blobs/"+d.String(), nil, bearer("a1")...).Code)
	assert.Equal(t, 403, do(t, nil, "GET", ts.URL+"/modules/team-a/guard/v1.wasm", nil, bearer("b1")...).Code)

	// A mount from a repository the caller may not read starts an empty
	// upload instead of copying the blob.
	r := do(t, nil, "POST", ts.URL+"/v2/team-b/copy/blobs/uploads/?mount="+d.String()+"&from=team-a/guard", nil, bearer("b1")...)
	assert.Equal(t, 202, r.Code)
	assert.Equal(t, 404, do(t, nil, "GET", ts.URL+"/v2/team-b/copy/blobs/"+d.String(), nil, bearer("b1")...).Code)
	r = do(t, nil, "POST", ts.URL+"/v2/team-a/copy/blobs/uploads/?mount="+d.String()+"&from=team-a/guard", nil, bearer("a1")...)
	assert.Equal(t, 201, r.Code, "a reader of the source may mount")
	assert.True(t, strings.HasPrefix(r.Header.Get("Location"), "/v2/team-a/copy/blobs/"))
}

func TestChannelAndRepositoryConfigValidation(t *testing.T) {
	cfg := testConfig(t)
	cfg.Bundles.Channels = map[string]ChannelConfig{"prod": {Allow: map[auth.Action][]string{auth.ActionIngest: {"anonymous"}}}}
	assert.ErrorContains(t, cfg.Validate(), "not a channel action")
	cfg = testConfig(t)
	cfg.Storage.Repositories = map[string]RepositoryConfig{"Bad/*": {}}
	assert.ErrorContains(t, cfg.Validate(), "not a repository name")
	cfg = testConfig(t)
	cfg.Storage.Repositories = map[string]RepositoryConfig{"a/*": {Allow: map[auth.Action][]string{auth.ActionPush: {"token:nope"}}}}
	_, err := New(t.Context(), cfg, Options{Logger: quietLogger()})
	assert.ErrorContains(t, err, `names token "nope"`)
}
