package auth

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseXFCC(t *testing.T) {
	cases := []struct {
		in   string
		want []XFCCElement
		err  bool
	}{
		{in: `By=spiffe://td/d;Hash=abc;URI=spiffe://td/c`, want: []XFCCElement{{By: "spiffe://td/d", Hash: "abc", URI: "spiffe://td/c"}}},
		{in: `By=spiffe://td/a;URI=spiffe://td/x,By=spiffe://td/d;Hash=h;Subject="CN=x,O=y;z";URI=spiffe://td/c`,
			want: []XFCCElement{{By: "spiffe://td/a", URI: "spiffe://td/x"}, {By: "spiffe://td/d", Hash: "h", URI: "spiffe://td/c"}}},
		{in: `uri="spiffe://td/q\"uote"`, want: []XFCCElement{{URI: `spiffe://td/q"uote`}}},
		{in: `Hash=1; URI=spiffe://td/c ;DNS=a.b`, want: []XFCCElement{{Hash: "1", URI: "spiffe://td/c"}}},
		{in: ``, err: true},
		{in: `URI`, err: true},
		{in: `=x`, err: true},
		{in: `URI="unterminated`, err: true},
		{in: `URI=a=b`, err: true},
		{in: `URI=spiffe://td/a;URI=spiffe://td/b`, err: true},
		{in: `By=a;By=b`, err: true},
		{in: `URI="x"y`, err: true},
		{in: `URI=x;`, err: true},
		{in: `URI=x,`, err: true},
	}
	for _, tc := range cases {
		got, err := ParseXFCC(tc.in)
		if tc.err {
			assert.ErrorIs(t, err, ErrXFCC, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	_, err := ParseXFCC("URI=" + string(make([]byte, maxXFCCBytes)))
	assert.ErrorIs(t, err, ErrXFCC)
}

func FuzzParseXFCC(f *testing.F) {
	f.Add(`By=spiffe://td/d;Hash=abc;URI=spiffe://td/c`)
	f.Add(`Subject="a,b;c=\"d\"";URI=spiffe://td/c,By=x`)
	f.Fuzz(func(t *testing.T, in string) {
		els, err := ParseXFCC(in)
		if err != nil {
			return
		}
		if len(els) == 0 {
			t.Fatalf("%q: no elements and no error", in)
		}
	})
}

// TestLoopbackIsNotTheSidecar: traffic a sidecar forwards arrives from
// 127.0.0.6 (or with proxy headers) and must never match "loopback".
func TestLoopbackIsNotTheSidecar(t *testing.T) {
	p, err := NewPolicy(map[Action][]string{ActionPublish: {"loopback"}}, nil)
	require.NoError(t, err)
	cases := []struct {
		remote string
		hdr    map[string]string
		want   bool
	}{
		{"127.0.0.1:4000", nil, true},
		{"[::1]:4000", nil, true},
		{"[::ffff:127.0.0.1]:4000", nil, true},
		{"127.0.0.6:4000", nil, false},
		{"[::6]:4000", nil, false},
		{"127.0.0.2:4000", nil, false},
		{"10.1.2.3:4000", nil, false},
		{"127.0.0.1:4000", map[string]string{"X-Forwarded-Client-Cert": "URI=spiffe://td/x"}, false},
		{"127.0.0.1:4000", map[string]string{"X-Forwarded-For": "10.0.0.9"}, false},
		{"127.0.0.1:4000", map[string]string{"X-Forwarded-Proto": "https"}, false},
		{"127.0.0.1:4000", map[string]string{"X-Envoy-Peer-Metadata-Id": "sidecar~10.0.0.9"}, false},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("POST", "/v1/bundles/prod", nil)
		r.RemoteAddr = tc.remote
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		id, err := p.Identify(r)
		require.NoError(t, err)
		assert.Equal(t, tc.want, id.Loopback, "%s %v", tc.remote, tc.hdr)
		assert.Equal(t, tc.want, p.Allowed(ActionPublish, id), "%s %v", tc.remote, tc.hdr)
	}
}

func TestTrustXFCC(t *testing.T) {
	const me = "spiffe://grid.example/ns/meshguard-system/sa/meshguard-distributor"
	allow := map[Action][]string{ActionPublish: {"spiffe://grid.example/ns/ci/sa/publisher"}}
	xfcc := func(by, uri string) string { return "By=" + by + ";Hash=00;URI=" + uri }
	off, err := NewPolicy(allow, nil)
	require.NoError(t, err)
	on, err := NewPolicy(allow, nil)
	require.NoError(t, err)
	require.NoError(t, on.TrustXFCC(XFCCConfig{Trust: true, By: me}))

	cases := []struct {
		name    string
		p       *Policy
		remote  string
		hdr     []string
		id      string
		errWant bool
	}{
		{"not configured: header ignored", off, "127.0.0.6:1", []string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher")}, "", false},
		{"sidecar, right By", on, "127.0.0.6:1", []string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher")}, "spiffe://grid.example/ns/ci/sa/publisher", false},
		{"ipv6 sidecar", on, "[::6]:1", []string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher")}, "spiffe://grid.example/ns/ci/sa/publisher", false},
		{"not from the sidecar: ignored", on, "10.0.0.7:1", []string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher")}, "", false},
		{"caller-supplied first element, sidecar's last wins", on, "127.0.0.6:1",
			[]string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher") + "," + xfcc(me, "spiffe://grid.example/ns/x/sa/y")}, "spiffe://grid.example/ns/x/sa/y", false},
		{"two headers joined, last wins", on, "127.0.0.6:1",
			[]string{xfcc(me, "spiffe://grid.example/ns/ci/sa/publisher"), xfcc(me, "spiffe://grid.example/ns/x/sa/y")}, "spiffe://grid.example/ns/x/sa/y", false},
		{"wrong By", on, "127.0.0.6:1", []string{xfcc("spiffe://grid.example/other", "spiffe://grid.example/ns/ci/sa/publisher")}, "", true},
		{"no URI", on, "127.0.0.6:1", []string{"By=" + me + ";Hash=00"}, "", true},
		{"not a SPIFFE ID", on, "127.0.0.6:1", []string{xfcc(me, "https://grid.example/x")}, "", true},
		{"garbage", on, "127.0.0.6:1", []string{`By="`}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/bundles/prod", nil)
			r.RemoteAddr = tc.remote
			for _, h := range tc.hdr {
				r.Header.Add(HeaderXFCC, h)
			}
			id, err := tc.p.Identify(r)
			if tc.errWant {
				assert.ErrorIs(t, err, ErrXFCC)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.id, id.SPIFFEID)
			assert.False(t, id.Loopback)
			assert.Equal(t, tc.id == "spiffe://grid.example/ns/ci/sa/publisher", tc.p.Allowed(ActionPublish, id))
		})
	}
	p, _ := NewPolicy(nil, nil)
	for _, bad := range []XFCCConfig{
		{Proxies: []string{"127.0.0.6"}},
		{By: me},
		{Trust: true, Proxies: []string{"sidecar"}},
		{Trust: true, By: "https://x"},
	} {
		assert.Error(t, p.TrustXFCC(bad), "%+v", bad)
	}
}
