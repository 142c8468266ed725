package devproxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/internal/devca"
)

const probeFilter = "github.com/meshguard/meshguard/host/internal/testfilters/probe"

// rawUpstream is a TCP server that records each request line exactly as it
// arrived and answers 200.
func rawUpstream(t *testing.T) (*url.URL, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	lines := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				lines <- strings.TrimRight(line, "\r\n")
				for { // the rest of the head
					l, err := r.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			}()
		}
	}()
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u, lines
}

// TestForwardsPathUnchanged sends paths whose decoding or re-encoding would
// change what the filter decided on and checks the upstream's request line.
func TestForwardsPathUnchanged(t *testing.T) {
	e := start(t, probeFilter)
	up, lines := rawUpstream(t)
	e.route(t, up)
	c := e.client(t, "/ns/grid/sa/billing")
	for _, path := range []string{
		"/v1/meters/..%2F..%2Finverters%2Finv-7/readings",
		"/v1/meters/%2e%2e/admin",
		"/v1/meters/a%2fb?from=%2F..%2F&x",
		"/v1/%7Eoperator/./x",
		"/v1//meters",
		"//v1/meters",
		"/v1/meters?",
	} {
		t.Run(path, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.url, nil)
			require.NoError(t, err)
			req.URL.Opaque = path // the client sends path as is, too
			if strings.HasPrefix(path, "//") {
				req.URL.Opaque, req.URL.Path, req.URL.RawPath = "", path, path
			}
			resp, err := c.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode)
			select {
			case line := <-lines:
				assert.Equal(t, "GET "+path+" HTTP/1.1", line)
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream got no request")
			}
		})
	}
	// The filter reads the same raw :path.
	resp, body := get(t, c, e.url+"/prop?path=request.path&q=..%2F%2e")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "/prop?path=request.path&q=..%2F%2e", body)
}

func TestUpstreamURL(t *testing.T) {
	base, _ := url.Parse("http://127.0.0.1:9000/ignored")
	for _, path := range []string{"/a%2Fb", "/a?b=%2F", "//x/%2e", "*"} {
		u, err := upstreamURL(base, path)
		require.NoError(t, err, path)
		assert.Equal(t, path, u.RequestURI())
		assert.Equal(t, "127.0.0.1:9000", u.Host)
	}
	_, err := upstreamURL(base, "//x/%zz")
	assert.Error(t, err, "a path net/http cannot write unchanged is refused, not rewritten")
}

// TestSanitisesForwardedHeaders: a client's XFCC is dropped
// (forward_client_cert_details SANITIZE) and x-forwarded-proto is the
// downstream connection's scheme (xff_num_trusted_hops 0).
func TestSanitisesForwardedHeaders(t *testing.T) {
	e := start(t, "github.com/meshguard/meshguard/filters/hello")
	c := e.client(t, "/ns/grid/sa/billing")
	req, err := http.NewRequest(http.MethodGet, e.url+"/v1/meters/7/readings", nil)
	require.NoError(t, err)
	req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://grid.example/ns/grid/sa/meter-api;URI=spiffe://grid.example/ns/grid/sa/controller")
	req.Header.Add("X-Forwarded-Proto", "http")
	req.Header.Add("X-Forwarded-Proto", "https")
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	hdr := <-e.seen
	assert.Empty(t, hdr.Values("X-Forwarded-Client-Cert"))
	assert.Equal(t, []string{"https"}, hdr.Values("X-Forwarded-Proto"))
}

// certClient presents a CA-signed certificate with exactly these URI SANs.
func (e *env) certClient(t *testing.T, ca *devca.CA, opts devca.X509Options, uris ...string) *http.Client {
	t.Helper()
	cert, err := ca.IssueCertificate(uris, opts)
	require.NoError(t, err)
	cfg := tlsconfig.TLSClientConfig(e.ca.X509Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/ns/grid/sa/gateway")))
	cfg.Certificates = []tls.Certificate{cert}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestPeerURISANAsPresented: a certificate chaining to the bundle is
// accepted whatever its URI SAN says, and the filter reads the first URI SAN
// byte for byte (connection.uri_san_peer_certificate), so the guard's own
// SPIFFE ID checks decide. Two URI SANs meet the rendered RBAC filter first.
func TestPeerURISANAsPresented(t *testing.T) {
	e := start(t, probeFilter)
	const prop = "/prop?path=connection.uri_san_peer_certificate"
	for _, san := range []string{
		"spiffe://grid.example/ns/../sa/controller",
		"spiffe://grid.example/ns/grid/sa/a%2Fb",
		"spiffe://grid.example/ns//sa/x",
		"spiffe://grid.example/ns/grid/sa/reader?x=1",
	} {
		t.Run(san, func(t *testing.T) {
			resp, body := get(t, e.certClient(t, e.ca, devca.X509Options{}, san), e.url+prop)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, san, body)
		})
	}
	t.Run("two URI SANs", func(t *testing.T) {
		c := e.certClient(t, e.ca, devca.X509Options{}, "spiffe://grid.example/ns/grid/sa/reader", "spiffe://grid.example/ns/grid/sa/controller")
		resp, body := get(t, c, e.url+prop)
		assert.Equal(t, 403, resp.StatusCode)
		assert.Equal(t, "RBAC: access denied\n", body, "refused ahead of the filter")
		assert.Equal(t, "rbac_access_denied_matched_policy["+envoy.OneURISANPolicy+"]", resp.Header.Get("x-envoy-local-reply-details"))
	})
}

// TestTLSRefusesLikeEnvoy: what Envoy's SPIFFE validator refuses at the
// handshake.
func TestTLSRefusesLikeEnvoy(t *testing.T) {
	e := start(t, probeFilter)
	other, err := devca.New(spiffeid.RequireTrustDomainFromString("other.example"))
	require.NoError(t, err)
	cases := []struct {
		name string
		ca   *devca.CA
		opts devca.X509Options
		uris []string
	}{
		{"another trust domain's CA", other, devca.X509Options{}, []string{"spiffe://grid.example/ns/grid/sa/x"}},
		{"SAN of another trust domain", e.ca, devca.X509Options{}, []string{"spiffe://other.example/ns/grid/sa/x"}},
		{"first URI SAN not spiffe", e.ca, devca.X509Options{}, []string{"https://grid.example/x", "spiffe://grid.example/ns/grid/sa/x"}},
		{"no URI SAN", e.ca, devca.X509Options{}, nil},
		{"no path after the trust domain", e.ca, devca.X509Options{}, []string{"spiffe://grid.example"}},
		{"trust domain in upper case", e.ca, devca.X509Options{}, []string{"spiffe://GRID.example/ns/grid/sa/x"}},
		{"CA certificate as leaf", e.ca, devca.X509Options{CA: true}, []string{"spiffe://grid.example/ns/grid/sa/x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.certClient(t, tc.ca, tc.opts, tc.uris...).Get(e.url + "/prop?path=connection.mtls")
			assert.Error(t, err, "the handshake must fail")
		})
	}
}

func TestRequestPath(t *testing.T) {
	for raw, want := range map[string]string{
		"/v1/a%2Fb?x=%2e":           "/v1/a%2Fb?x=%2e",
		"*":                         "*",
		"http://meter/v1/a%2Fb?q=1": "/v1/a%2Fb?q=1",
		"HTTP://meter/v1/%2e%2e":    "/v1/%2e%2e",
		"http://meter?q=1":          "/?q=1",
		"http://meter":              "/",
	} {
		u, err := url.ParseRequestURI(raw)
		if raw == "*" {
			u, err = &url.URL{Path: "*"}, nil
		}
		require.NoError(t, err, raw)
		assert.Equal(t, want, requestPath(&http.Request{RequestURI: raw, URL: u}), raw)
	}
}
