package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"

	"github.com/meshguard/meshguard/distributor/auth"
)

// fromAddr is an HTTP client whose connections originate from src, as an
// Istio or Kuma sidecar's forwarded inbound connections do (127.0.0.6).
func fromAddr(src string, tc *tls.Config) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: tc}}
}

// TestSidecarTrafficIsNotLoopback: with the default allowlists (loopback
// may do everything) a connection the sidecar forwards from 127.0.0.6 may
// neither publish nor read the audit trail.
func TestSidecarTrafficIsNotLoopback(t *testing.T) {
	k := newSigner(t)
	ts := startServer(t, testConfig(t), k.options())
	sidecar, local := fromAddr("127.0.0.6", nil), fromAddr("127.0.0.1", nil)

	r := do(t, sidecar, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"))
	assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))
	r = do(t, sidecar, "GET", ts.URL+"/v1/decisions/log", nil)
	assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))
	// Envoy's forwarding headers on a 127.0.0.1 connection (older sidecars) too.
	r = do(t, local, "GET", ts.URL+"/v1/decisions/head", nil, "X-Forwarded-Proto", "http")
	assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))

	r = do(t, local, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"))
	assert.Equal(t, http.StatusCreated, r.Code, string(r.Body))
	r = do(t, local, "GET", ts.URL+"/v1/decisions/head", nil)
	assert.Equal(t, http.StatusOK, r.Code, string(r.Body))
}

// TestInMeshSPIFFEAuth is the documented in-mesh configuration, both ways:
// the sidecar's x-forwarded-client-cert trusted only when configured, and
// the distributor terminating mTLS with its own SVID.
func TestInMeshSPIFFEAuth(t *testing.T) {
	const me = "spiffe://grid.example/ns/meshguard-system/sa/meshguard-distributor"
	xfcc := func(uri string) string { return "By=" + me + ";Hash=0123;URI=" + uri }
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Allow = map[auth.Action][]string{
		auth.ActionRead:    {"spiffe://grid.example/ns/grid/*"},
		auth.ActionPublish: {publisherID.String()},
		auth.ActionAudit:   {"spiffe://grid.example/ns/audit/sa/auditor"},
		auth.ActionMetrics: {"anonymous"},
	}
	sidecar, local := fromAddr("127.0.0.6", nil), fromAddr("127.0.0.1", nil)

	t.Run("xfcc not configured", func(t *testing.T) {
		ts := startServer(t, cfg, k.options())
		r := do(t, sidecar, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"), "X-Forwarded-Client-Cert", xfcc(publisherID.String()))
		assert.Equal(t, http.StatusForbidden, r.Code, "the header is ignored: %s", r.Body)
	})

	t.Run("xfcc trusted from the sidecar", func(t *testing.T) {
		c := cfg
		c.Data = t.TempDir()
		c.XFCC = auth.XFCCConfig{Trust: true, By: me}
		ts := startServer(t, c, k.options())
		r := do(t, sidecar, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"), "X-Forwarded-Client-Cert", xfcc(publisherID.String()))
		assert.Equal(t, http.StatusCreated, r.Code, string(r.Body))
		r = do(t, sidecar, "GET", ts.URL+"/v1/bundles/prod", nil, "X-Forwarded-Client-Cert", xfcc(guardID.String()))
		assert.Equal(t, http.StatusOK, r.Code, string(r.Body))
		r = do(t, sidecar, "GET", ts.URL+"/v1/decisions/head", nil, "X-Forwarded-Client-Cert", xfcc(guardID.String()))
		assert.Equal(t, http.StatusForbidden, r.Code, "guards may not read the audit trail: %s", r.Body)
		r = do(t, sidecar, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 2, "prod"), "X-Forwarded-Client-Cert",
			"By=spiffe://grid.example/other;URI="+publisherID.String())
		assert.Equal(t, http.StatusUnauthorized, r.Code, "a header for another service: %s", r.Body)
		// Not from the sidecar's address: the header proves nothing.
		r = do(t, local, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 2, "prod"), "X-Forwarded-Client-Cert", xfcc(publisherID.String()))
		assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))
	})

	t.Run("distributor terminates mTLS", func(t *testing.T) {
		p := newPKI(t, "grid.example")
		c := mtlsConfig(t, p)
		c.Allow = cfg.Allow
		ts := startServer(t, c, k.options())
		pub := fromAddr("127.0.0.6", tlsconfig.MTLSClientConfig(p.svid(t, publisherID), p.ca.X509Bundle(), tlsconfig.AuthorizeID(serverID)))
		guard := fromAddr("127.0.0.6", tlsconfig.MTLSClientConfig(p.svid(t, guardID), p.ca.X509Bundle(), tlsconfig.AuthorizeID(serverID)))
		r := do(t, pub, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 1, "prod"))
		assert.Equal(t, http.StatusCreated, r.Code, string(r.Body))
		r = do(t, guard, "POST", ts.URL+"/v1/bundles/prod", k.bundle(t, 2, "prod"))
		assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))
		r = do(t, guard, "GET", ts.URL+"/v1/bundles/prod", nil)
		assert.Equal(t, http.StatusOK, r.Code, string(r.Body))
	})
}
