package devproxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/internal/devca"
)

var td = spiffeid.RequireTrustDomainFromString("grid.example")

type env struct {
	ca       *devca.CA
	url      string
	upstream *httptest.Server
	seen     chan http.Header
	proxy    *Proxy
}

// start runs pkg's module behind a real mTLS listener with an upstream and a
// callout cluster "authz" that answers 200 "ok-<caller>".
func start(t *testing.T, pkg string) *env {
	t.Helper()
	bin, err := os.ReadFile(wasmbuild.ForTest(t, pkg))
	require.NoError(t, err)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rt, err := host.NewRuntime(ctx, host.RuntimeConfig{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	mod, err := rt.Compile(ctx, bin)
	require.NoError(t, err)

	e := &env{seen: make(chan http.Header, 10)}
	e.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.seen <- r.Header.Clone()
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(e.upstream.Close)
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok-from-authz")
	}))
	t.Cleanup(authz.Close)
	authzURL, _ := url.Parse(authz.URL)

	p, err := rt.NewPlugin(ctx, mod, host.PluginConfig{Name: "dev", Workers: 2, Clusters: map[string]host.Cluster{"authz": &HTTPCluster{BaseURL: authzURL}}})
	require.NoError(t, err)
	t.Cleanup(p.Close)

	e.ca, err = devca.New(td)
	require.NoError(t, err)
	serverSVID, err := e.ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/ns/grid/sa/gateway"), devca.X509Options{})
	require.NoError(t, err)
	up, _ := url.Parse(e.upstream.URL)
	proxy, err := New(Config{Plugin: p, Routes: []Route{{Prefix: "/", Upstream: up}}, Logger: quiet, StreamTimeout: 5 * time.Second, Local: serverSVID})
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLS(serverSVID, e.ca.X509Bundle()))
	require.NoError(t, err)
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.url = "https://" + ln.Addr().String()
	e.proxy = proxy
	return e
}

// route sends every request to up instead of the default upstream.
func (e *env) route(t *testing.T, up *url.URL) {
	t.Helper()
	e.proxy.routes = []Route{{Prefix: "/", Upstream: up}}
}

func (e *env) client(t *testing.T, path string) *http.Client {
	svid, err := e.ca.IssueX509SVID(spiffeid.RequireFromPath(td, path), devca.X509Options{})
	require.NoError(t, err)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, e.ca.X509Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/ns/grid/sa/gateway")))}}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestProxyRunsFilterAndForwards(t *testing.T) {
	e := start(t, "github.com/meshguard/meshguard/filters/hello")
	c := e.client(t, "/ns/grid/sa/billing")
	resp, body := get(t, c, e.url+"/v1/meters/7/readings")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, `{"ok":true}`, body)
	assert.Equal(t, "world", resp.Header.Get("x-hello"), "response headers pass through the filter")
	hdr := <-e.seen
	assert.NotEmpty(t, hdr.Get("x-request-id"))

	resp, body = get(t, c, e.url+"/hello/deny")
	assert.Equal(t, 403, resp.StatusCode)
	assert.Equal(t, "denied by hello\n", body)
	select {
	case <-e.seen:
		t.Fatal("a local reply must not reach the upstream")
	default:
	}
}

func TestConnectionPropertiesFromPeerCertificate(t *testing.T) {
	e := start(t, "github.com/meshguard/meshguard/host/internal/testfilters/probe")
	c := e.client(t, "/ns/grid/sa/meter-reader")
	cases := map[string]string{
		"connection.uri_san_peer_certificate":  "spiffe://grid.example/ns/grid/sa/meter-reader",
		"connection.uri_san_local_certificate": "spiffe://grid.example/ns/grid/sa/gateway",
		"connection.mtls":                      "\x01",
		"connection.tls_version":               "TLSv1.3",
		"request.url_path":                     "/prop",
	}
	for path, want := range cases {
		resp, body := get(t, c, e.url+"/prop?path="+path)
		assert.Equal(t, 200, resp.StatusCode, path)
		assert.Equal(t, want, body, path)
	}
}

func TestPausedStreamResumesAfterRealCallout(t *testing.T) {
	e := start(t, "github.com/meshguard/meshguard/host/internal/testfilters/probe")
	c := e.client(t, "/ns/grid/sa/billing")
	resp, _ := get(t, c, e.url+"/callout?cluster=authz")
	assert.Equal(t, 200, resp.StatusCode)
	hdr := <-e.seen
	assert.Equal(t, "ok-from-authz", hdr.Get("x-callout"), "the filter added the callout's answer before resuming")

	resp, body := get(t, c, e.url+"/callout?cluster=nosuch")
	assert.Equal(t, 500, resp.StatusCode)
	assert.Contains(t, body, "bad argument")
}

func TestClientWithoutSVIDIsRefused(t *testing.T) {
	e := start(t, "github.com/meshguard/meshguard/filters/hello")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the point
	_, err := c.Get(e.url + "/")
	assert.Error(t, err)
}

func TestParseRoute(t *testing.T) {
	r, err := ParseRoute("/v1/meters=http://127.0.0.1:9001")
	require.NoError(t, err)
	assert.Equal(t, "/v1/meters", r.Prefix)
	for _, bad := range []string{"v1=http://x", "/v1=ftp://x", "/v1", "/v1=http://"} {
		_, err := ParseRoute(bad)
		assert.Error(t, err, bad)
	}
}
