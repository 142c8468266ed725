package devproxy

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/devca"
)

// TestUpstreamProps: what the dev proxy presents of the upstream once
// connected: its address, and over TLS the first URI SAN of its
// certificate.
func TestUpstreamProps(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("grid.example")
	ca, err := devca.New(td)
	require.NoError(t, err)
	svid, err := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/ns/der/sa/inverter-gw"), devca.X509Options{})
	require.NoError(t, err)

	p := upstreamProps("10.0.3.7:8443", &http.Response{TLS: &tls.ConnectionState{PeerCertificates: svid.Certificates}})
	v, ok := p.Lookup("upstream.address")
	require.True(t, ok)
	assert.Equal(t, "10.0.3.7:8443", string(v))
	v, ok = p.Lookup("upstream.uri_san_peer_certificate")
	require.True(t, ok)
	assert.Equal(t, "spiffe://grid.example/ns/der/sa/inverter-gw", string(v))

	p = upstreamProps("127.0.0.1:9000", &http.Response{})
	_, ok = p.Lookup("upstream.uri_san_peer_certificate")
	assert.False(t, ok, "plain HTTP: no upstream certificate")
	p = upstreamProps("", &http.Response{})
	_, ok = p.Lookup("upstream.address")
	assert.False(t, ok)
}
