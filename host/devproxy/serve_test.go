package devproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
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

// serve runs Serve in the background and returns where it listens.
func serve(t *testing.T, cfg ServeConfig) (Listening, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Listening, 1)
	cfg.Ready = func(l Listening) { ready <- l }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case l := <-ready:
		return l, done
	case err := <-done:
		done <- err
		t.Fatalf("Serve: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("Serve did not start")
	}
	return Listening{}, done
}

// TestServe runs the hello filter through Serve twice: mTLS with a local
// CA created on the spot (and reused), then plain HTTP on loopback; plain
// HTTP elsewhere and no identity at all are refused.
func TestServe(t *testing.T) {
	wasm, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello"))
	require.NoError(t, err)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "upstream "+r.URL.Path) }))
	defer upstream.Close()
	up, _ := url.Parse(upstream.URL)
	cfg := ServeConfig{Module: wasm, Runtime: host.RuntimeConfig{Profile: host.ProfileEnvoy133}, Plugin: host.PluginConfig{Name: "hello", Workers: 2},
		Routes: []Route{{Prefix: "/v1/", Upstream: up}}, Clusters: map[string]*url.URL{"authz": up}, Listen: "127.0.0.1:0"}

	caDir := filepath.Join(t.TempDir(), "ca")
	mtls := cfg
	mtls.Identity = Identity{CADir: caDir, TrustDomain: "grid.example", SPIFFEID: "spiffe://grid.example/ns/grid/sa/gateway"}
	l, _ := serve(t, mtls)
	assert.Equal(t, "0_2_1", l.ABIVersion)
	assert.Equal(t, 2, l.Workers)
	assert.Equal(t, host.ProfileEnvoy133, l.Profile)
	ca, err := devca.Load(caDir)
	require.NoError(t, err, "the CA was created and saved")
	svid, err := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/ns/grid/sa/billing"), devca.X509Options{})
	require.NoError(t, err)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, ca.X509Bundle(),
		tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/ns/grid/sa/gateway")))}}
	resp, body := get(t, c, l.URL+"/v1/meters/7")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "upstream /v1/meters/7", body)
	assert.Equal(t, "world", resp.Header.Get("x-hello"))
	resp, _ = get(t, c, l.URL+"/hello/deny")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	plain := cfg
	plain.Identity = Identity{PlainHTTP: true}
	l, _ = serve(t, plain)
	resp, body = get(t, http.DefaultClient, l.URL+"/v1/x")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "upstream /v1/x", body)

	ctx := context.Background()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			nonLoop := plain
			nonLoop.Listen = net.JoinHostPort(ipn.IP.String(), "0")
			assert.ErrorIs(t, Serve(ctx, nonLoop), ErrPlainHTTPNotLoopback)
			break
		}
	}
	none := cfg
	assert.ErrorIs(t, Serve(ctx, none), ErrNoIdentity)
	bad := cfg
	bad.Module = []byte("not wasm")
	bad.Identity = Identity{PlainHTTP: true}
	err = Serve(ctx, bad)
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrNoIdentity))
}

func TestParseCluster(t *testing.T) {
	name, u, err := ParseCluster("authz=http://127.0.0.1:9000")
	require.NoError(t, err)
	assert.Equal(t, "authz", name)
	assert.Equal(t, "127.0.0.1:9000", u.Host)
	for _, bad := range []string{"authz", "=http://x", "authz=127.0.0.1:9000", "authz=ftp://x", "authz=http://"} {
		_, _, err := ParseCluster(bad)
		assert.Error(t, err, bad)
	}
}
