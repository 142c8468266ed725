package svidtls_test

import (
	"crypto/tls"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/devca"
	"github.com/meshguard/meshguard/internal/svidtls"
)

// handshake runs a real TLS handshake over loopback and returns the server's
// error (nil when the server accepted the client).
func handshake(t *testing.T, server *tls.Config, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	require.NoError(t, err)
	defer ln.Close()
	serr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serr <- err
			return
		}
		defer c.Close()
		serr <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3: the client learns of a refusal only on its first read.
		_, _ = c.Write([]byte("x"))
		c.Close()
	}
	return <-serr
}

func TestServer(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("grid.example")
	ca, err := devca.New(td)
	require.NoError(t, err)
	other, err := devca.New(spiffeid.RequireTrustDomainFromString("other.example"))
	require.NoError(t, err)
	serverID := spiffeid.RequireFromPath(td, "/ns/meshguard/sa/distributor")
	serverSVID, err := ca.IssueX509SVID(serverID, devca.X509Options{})
	require.NoError(t, err)
	clientSVID, err := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/ns/grid/sa/guard"), devca.X509Options{})
	require.NoError(t, err)
	foreignSVID, err := other.IssueX509SVID(spiffeid.RequireFromPath(other.TrustDomain(), "/x"), devca.X509Options{})
	require.NoError(t, err)

	mtls := tlsconfig.MTLSClientConfig(clientSVID, ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))
	anonymous := tlsconfig.TLSClientConfig(ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))
	foreign := tlsconfig.MTLSClientConfig(foreignSVID, ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))
	cases := []struct {
		name          string
		requireClient bool
		client        *tls.Config
		wantErr       string
	}{
		{"svid, required", true, mtls, ""},
		{"svid, optional", false, mtls, ""},
		{"no certificate, optional", false, anonymous, ""},
		{"no certificate, required", true, anonymous, "didn't provide a certificate"},
		{"other trust domain", false, foreign, "other.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := svidtls.Server(serverSVID, svidtls.X509SVID(ca.X509Bundle()), tc.requireClient)
			err := handshake(t, srv, tc.client)
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}
}
