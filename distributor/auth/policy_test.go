package auth

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/devca"
)

func TestPolicyEntries(t *testing.T) {
	p, err := NewPolicy(map[Action][]string{
		ActionRead:    {"spiffe://grid.example/ns/grid/*", "loopback"},
		ActionPublish: {"spiffe://grid.example/ci/publisher", "token:ci"},
		ActionIngest:  {"spiffe://grid.example/*"},
		ActionMetrics: {"anonymous"},
	}, map[string]string{"ci": "secret"})
	require.NoError(t, err)
	cases := []struct {
		a    Action
		id   Identity
		want bool
	}{
		{ActionRead, Identity{SPIFFEID: "spiffe://grid.example/ns/grid/sa/guard"}, true},
		{ActionRead, Identity{SPIFFEID: "spiffe://grid.example/ns/gridx/sa/guard"}, false},
		{ActionRead, Identity{SPIFFEID: "spiffe://grid.example/ns/grid"}, false},
		{ActionRead, Identity{Loopback: true}, true},
		{ActionRead, Identity{}, false},
		{ActionPublish, Identity{SPIFFEID: "spiffe://grid.example/ci/publisher"}, true},
		{ActionPublish, Identity{SPIFFEID: "spiffe://grid.example/ci/publisher/x"}, false},
		{ActionPublish, Identity{Token: "ci"}, true},
		{ActionIngest, Identity{SPIFFEID: "spiffe://grid.example/anything"}, true},
		{ActionIngest, Identity{SPIFFEID: "spiffe://grid.example.evil/x"}, false},
		{ActionAudit, Identity{Loopback: true, Token: "ci"}, false},
		{ActionMetrics, Identity{}, true},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, p.Allowed(tc.a, tc.id), "%s %+v", tc.a, tc.id)
	}
	for _, bad := range []map[Action][]string{
		{"delete": {"anonymous"}},
		{ActionRead: {"token:nope"}},
		{ActionRead: {"token:"}},
		{ActionRead: {"spiffe://UPPER/x"}},
		{ActionRead: {"everyone"}},
	} {
		_, err := NewPolicy(bad, map[string]string{"ci": "secret"})
		assert.Error(t, err, "%v", bad)
	}
}

func TestIdentify(t *testing.T) {
	p, err := NewPolicy(nil, map[string]string{"ci": "s3cret", "ops": "other"})
	require.NoError(t, err)
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("Authorization", "Bearer s3cret")
	id, err := p.Identify(r)
	require.NoError(t, err)
	assert.Equal(t, "ci", id.Token)
	assert.True(t, id.Loopback)
	assert.Equal(t, "token:ci", id.Key())

	r.Header.Set("Authorization", "bearer other")
	id, err = p.Identify(r)
	require.NoError(t, err)
	assert.Equal(t, "ops", id.Token)
	r.Header.Del("Authorization")
	r.SetBasicAuth("any-user", "s3cret")
	id, err = p.Identify(r)
	require.NoError(t, err)
	assert.Equal(t, "ci", id.Token, "Basic with the token as password")
	for _, h := range []string{"Bearer s3cre", "Bearer ", "Basic czNjcmV0", "Basic eDp5", "s3cret"} {
		r.Header.Set("Authorization", h)
		_, err = p.Identify(r)
		assert.ErrorIs(t, err, ErrBadToken, h)
	}

	ca, err := devca.New(spiffeid.RequireTrustDomainFromString("grid.example"))
	require.NoError(t, err)
	svid, err := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://grid.example/meter"), devca.X509Options{})
	require.NoError(t, err)
	r = httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.1:5000"
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{svid.Certificates[0]}}
	id, err = p.Identify(r)
	require.NoError(t, err)
	assert.Equal(t, "spiffe://grid.example/meter", id.SPIFFEID)
	assert.False(t, id.Loopback)
	assert.Equal(t, "spiffe://grid.example/meter", id.Key())
}

func TestParseTokens(t *testing.T) {
	m, err := ParseTokens([]byte("# comment\nci: abc\n\nops=def, audit:ghi\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"ci": "abc", "ops": "def", "audit": "ghi"}, m)
	for _, bad := range []string{"nocolon", ":secret", "name:", "a:1\na:2"} {
		_, err := ParseTokens([]byte(bad))
		assert.Error(t, err, bad)
	}
	t.Setenv("MG_TEST_TOKENS", "x:1,y:2")
	m, err = LoadTokens("", "MG_TEST_TOKENS")
	require.NoError(t, err)
	assert.Len(t, m, 2)
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(100, 50)
	ok, _ := l.Allow("a", 50)
	assert.True(t, ok)
	ok, wait := l.Allow("a", 10)
	assert.False(t, ok)
	assert.InDelta(t, 100*time.Millisecond, wait, float64(20*time.Millisecond))
	ok, _ = l.Allow("b", 10)
	assert.True(t, ok, "buckets are per identity")
	ok, _ = l.Allow("a", 51)
	assert.False(t, ok, "more than the burst never passes")
	time.Sleep(120 * time.Millisecond)
	ok, _ = l.Allow("a", 10)
	assert.True(t, ok, "refilled")
	ok, _ = NewLimiter(0, 0).Allow("x", 1e6)
	assert.True(t, ok, "rate 0 disables limiting")
}

func TestResourceAllowlistsReplaceTheGlobalOnes(t *testing.T) {
	p, err := NewPolicy(map[Action][]string{ActionPush: {"token:ci"}, ActionRead: {"anonymous"}}, map[string]string{"ci": "x", "team": "y"})
	require.NoError(t, err)
	require.NoError(t, p.Restrict(KindRepository, "team/*", map[Action][]string{ActionPush: {"token:team"}}))
	require.NoError(t, p.Restrict(KindRepository, "team/special/*", map[Action][]string{ActionPush: {}}))
	require.NoError(t, p.Restrict(KindRepository, "team/special/open", map[Action][]string{ActionPush: {"token:ci"}}))
	ci, team, anon := Identity{Token: "ci"}, Identity{Token: "team"}, Identity{}
	repo := func(n string) Resource { return Resource{Kind: KindRepository, Name: n} }
	for _, tc := range []struct {
		a    Action
		id   Identity
		res  Resource
		want bool
	}{
		{ActionPush, ci, repo("other/x"), true},
		{ActionPush, team, repo("other/x"), false},
		{ActionPush, team, repo("team/x"), true},
		{ActionPush, ci, repo("team/x"), false},
		{ActionPush, team, repo("team/special/x"), false}, // longest prefix: empty list
		{ActionPush, ci, repo("team/special/open"), true}, // exact name wins
		{ActionRead, anon, repo("team/x"), true},          // actions left out keep the global list
		{ActionPush, team, repo("teamx"), false},          // "team/*" is not a string prefix
		{ActionPush, team, Resource{Kind: KindChannel, Name: "team/x"}, false},
	} {
		assert.Equal(t, tc.want, p.AllowedOn(tc.a, tc.id, tc.res), "%s %s %+v", tc.id, tc.a, tc.res)
	}
	assert.ErrorContains(t, p.Restrict(KindChannel, "prod", map[Action][]string{"fly": nil}), "unknown action")
}
