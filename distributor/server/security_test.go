package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/internal/devca"
)

var (
	serverID    = spiffeid.RequireFromString("spiffe://grid.example/meshguard/distributor")
	publisherID = spiffeid.RequireFromString("spiffe://grid.example/ci/publisher")
	guardID     = spiffeid.RequireFromString("spiffe://grid.example/ns/grid/sa/guard")
	strangerID  = spiffeid.RequireFromString("spiffe://grid.example/ns/other/sa/x")
)

type pki struct {
	ca     *devca.CA
	dir    string
	bundle string // CA PEM file
}

func newPKI(t testing.TB, td string) *pki {
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString(td))
	require.NoError(t, err)
	dir := t.TempDir()
	p := &pki{ca: ca, dir: dir, bundle: filepath.Join(dir, "bundle.pem")}
	require.NoError(t, os.WriteFile(p.bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o644))
	return p
}

func (p *pki) svid(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	s, err := p.ca.IssueX509SVID(id, devca.X509Options{})
	require.NoError(t, err)
	return s
}

// files writes an SVID and returns its cert and key paths.
func (p *pki) files(t testing.TB, id spiffeid.ID) (string, string) {
	cert, key := filepath.Join(p.dir, id.Path()[1:]+".pem"), filepath.Join(p.dir, id.Path()[1:]+".key")
	require.NoError(t, os.MkdirAll(filepath.Dir(cert), 0o755))
	require.NoError(t, devca.WriteSVID(p.svid(t, id), cert, key))
	return cert, key
}

// client is an HTTPS client that verifies the distributor's SPIFFE ID and
// presents svid (nil: no client certificate).
func (p *pki) client(svid *x509svid.SVID) *http.Client {
	var cfg *tls.Config
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, p.ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))
	} else {
		cfg = tlsconfig.TLSClientConfig(p.ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func mtlsConfig(t testing.TB, p *pki) Config {
	cfg := testConfig(t)
	cfg.InsecureHTTP = false
	cfg.TLS.CertFile, cfg.TLS.KeyFile = p.files(t, serverID)
	cfg.TLS.BundleFile = p.bundle
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("# CI and audit tokens\nci:s3cret-ci-token\nauditor: audit-token-77\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{
		auth.ActionRead:    {"spiffe://grid.example/ns/grid/*"},
		auth.ActionPublish: {publisherID.String(), "token:ci"},
		auth.ActionIngest:  {"spiffe://grid.example/ns/grid/*"},
		auth.ActionAudit:   {"token:auditor"},
		auth.ActionMetrics: {"anonymous"},
	}
	return cfg
}

func TestMTLSAllowlistsAndTokens(t *testing.T) {
	p := newPKI(t, "grid.example")
	k := newSigner(t)
	ts := startServer(t, mtlsConfig(t, p), k.options())
	require.Contains(t, ts.URL, "https://")

	pub, guard, stranger := p.client(p.svid(t, publisherID)), p.client(p.svid(t, guardID)), p.client(p.svid(t, strangerID))
	anon := p.client(nil)
	bundle := k.bundle(t, 1, "prod")
	cases := []struct {
		name   string
		c      *http.Client
		method string
		path   string
		body   []byte
		hdr    []string
		want   int
	}{
		{"publisher publishes", pub, "POST", "/v1/bundles/prod", bundle, nil, 201},
		{"guard may not publish", guard, "POST", "/v1/bundles/prod", k.bundle(t, 2, "prod"), nil, 403},
		{"guard reads", guard, "GET", "/v1/bundles/prod", nil, nil, 200},
		{"publisher may not read", pub, "GET", "/v1/bundles/prod", nil, nil, 403},
		{"stranger may not read", stranger, "GET", "/v1/bundles/prod", nil, nil, 403},
		{"no cert may not read", anon, "GET", "/v1/bundles/prod", nil, nil, 403},
		{"guard ingests", guard, "POST", "/v1/decisions", decisionBatch(0, 3), nil, 200},
		{"stranger may not ingest", stranger, "POST", "/v1/decisions", decisionBatch(0, 3), nil, 403},
		{"CI token publishes without cert", anon, "POST", "/v1/bundles/prod", k.bundle(t, 2, "prod"), []string{"Authorization", "Bearer s3cret-ci-token"}, 201},
		{"wrong token is 401", anon, "POST", "/v1/bundles/prod", k.bundle(t, 3, "prod"), []string{"Authorization", "Bearer s3cret-ci-tokeN"}, 401},
		{"basic auth is 401", anon, "GET", "/v1/decisions", nil, []string{"Authorization", "Basic YTpi"}, 401},
		{"auditor token may not publish", anon, "POST", "/v1/bundles/prod", k.bundle(t, 3, "prod"), []string{"Authorization", "Bearer audit-token-77"}, 403},
		{"auditor queries", anon, "GET", "/v1/decisions", nil, []string{"Authorization", "Bearer audit-token-77"}, 200},
		{"guard may not query", guard, "GET", "/v1/decisions", nil, nil, 403},
		{"metrics are open", anon, "GET", "/metrics", nil, nil, 200},
		{"health is open", anon, "GET", "/healthz", nil, nil, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.c, tc.method, ts.URL+tc.path, tc.body, tc.hdr...)
			assert.Equal(t, tc.want, r.Code, string(r.Body))
		})
	}

	// Stored records name the authenticated uploader.
	r := do(t, anon, "GET", ts.URL+"/v1/decisions?limit=1", nil, "Authorization", "Bearer audit-token-77")
	require.Equal(t, 200, r.Code)
	assert.Contains(t, string(r.Body), `"received_by":"`+guardID.String()+`"`)

	// A certificate from another trust domain fails the handshake.
	other := newPKI(t, "other.example")
	foreign := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(
		other.svid(t, spiffeid.RequireFromString("spiffe://other.example/ns/grid/sa/guard")),
		p.ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))}}
	_, err := foreign.Get(ts.URL + "/healthz")
	require.Error(t, err)
	// The client refuses a server with an unexpected SPIFFE ID.
	wrong := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(
		p.ca.X509Bundle(), tlsconfig.AuthorizeID(publisherID))}}
	_, err = wrong.Get(ts.URL + "/healthz")
	require.Error(t, err)
}

func TestRequireClientCert(t *testing.T) {
	p := newPKI(t, "grid.example")
	cfg := mtlsConfig(t, p)
	cfg.TLS.RequireClientCert = true
	ts := startServer(t, cfg, Options{})
	_, err := p.client(nil).Get(ts.URL + "/healthz")
	require.Error(t, err, "handshake without a client SVID")
	r := do(t, p.client(p.svid(t, guardID)), "GET", ts.URL+"/healthz", nil)
	assert.Equal(t, 200, r.Code)
}

func TestCheckListenRefusesPlainHTTPOffLoopback(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InsecureHTTP = true
	for addr, ok := range map[string]bool{"127.0.0.1:8443": true, "[::1]:8443": true, "localhost:1": true,
		"0.0.0.0:8443": false, ":8443": false, "10.1.2.3:80": false} {
		cfg.Listen = addr
		err := CheckListen(cfg)
		assert.Equal(t, ok, err == nil, "%s: %v", addr, err)
	}
	cfg.Listen, cfg.ForceInsecure = "0.0.0.0:8443", true
	assert.NoError(t, CheckListen(cfg))
	cfg.InsecureHTTP = false
	assert.ErrorContains(t, CheckListen(cfg), "X509-SVID")
}

// workloadAPI is a real SPIFFE Workload API server (gRPC on a unix socket)
// handing out one X509-SVID.
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	svid *x509svid.SVID
	ca   *x509.Certificate
}

func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if len(md.Get("workload.spiffe.io")) == 0 {
		return grpcErr("missing workload.spiffe.io metadata")
	}
	var chain []byte
	for _, c := range w.svid.Certificates {
		chain = append(chain, c.Raw...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(w.svid.PrivateKey)
	if err != nil {
		return err
	}
	if err := stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: w.svid.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: w.ca.Raw,
	}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

type grpcErr string

func (e grpcErr) Error() string { return string(e) }

func startWorkloadAPI(t testing.TB, p *pki, id spiffeid.ID) string {
	dir, err := os.MkdirTemp("", "wl")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	g := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(g, &workloadAPI{svid: p.svid(t, id), ca: p.ca.Certificate()})
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return "unix://" + sock
}

func TestWorkloadAPISource(t *testing.T) {
	p := newPKI(t, "grid.example")
	cfg := mtlsConfig(t, p)
	cfg.TLS.SVIDConfig = auth.SVIDConfig{WorkloadSocket: startWorkloadAPI(t, p, serverID)}
	k := newSigner(t)
	ts := startServer(t, cfg, k.options())

	// The server's certificate comes from the Workload API.
	r := do(t, p.client(p.svid(t, publisherID)), "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"))
	assert.Equal(t, 201, r.Code, string(r.Body))
	r = do(t, p.client(nil), "GET", ts.URL+"/readyz", nil)
	assert.Equal(t, 200, r.Code, string(r.Body))

	// The CLI client side: SVID and bundle from a (second) Workload API.
	ctx := context.Background()
	tc, closeFn, err := auth.ClientTLSConfig(ctx, auth.ClientOptions{WorkloadSocket: startWorkloadAPI(t, p, guardID), ServerID: serverID.String()})
	require.NoError(t, err)
	defer closeFn()
	r = do(t, &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, "GET", ts.URL+"/v1/bundles/prod", nil)
	assert.Equal(t, 200, r.Code, "guard identity from the Workload API may read")

	// And from files.
	cert, key := p.files(t, publisherID)
	tc, _, err = auth.ClientTLSConfig(ctx, auth.ClientOptions{CA: p.bundle, Cert: cert, Key: key})
	require.NoError(t, err)
	r = do(t, &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 2, "prod"))
	assert.Equal(t, 201, r.Code, string(r.Body))
}
