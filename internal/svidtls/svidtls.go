// Package svidtls is the server side of SPIFFE mTLS, shared by meshguard's
// servers: the distributor (`meshguard serve`) and the dev proxy
// (`meshguard run`). Each server presents its X509-SVID and decides how a
// client's certificate chain is verified: the distributor checks a strict
// X509-SVID (go-spiffe), the dev proxy checks what Envoy checks.
package svidtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Verifier checks a client's certificate chain (DER, leaf first, never
// empty).
type Verifier func(rawCerts [][]byte) error

// ErrNoClientCert is the handshake error when a required client certificate
// is missing.
var ErrNoClientCert = errors.New("client certificate (X509-SVID) required")

// Server is a TLS 1.2+ server configuration that presents the SVID from src
// (following its rotations) and checks every client certificate with verify.
// requireClient refuses a handshake without a client certificate; otherwise
// such a client is let through to authenticate another way (a bearer token).
func Server(src x509svid.Source, verify Verifier, requireClient bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: tlsconfig.GetCertificate(src),
		// Go's own chain verification is replaced by verify (which knows the
		// SPIFFE trust bundles); RequireAnyClientCert/RequestClientCert only
		// ask for a certificate.
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				if requireClient {
					return ErrNoClientCert
				}
				return nil
			}
			return verify(raw)
		},
	}
	if requireClient {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	return cfg
}

// X509SVID verifies the chain as an X509-SVID against bundles with go-spiffe:
// exactly one URI SAN that is a valid SPIFFE ID, a leaf that is not a CA, and
// a chain to the bundle of that ID's trust domain.
func X509SVID(bundles x509bundle.Source) Verifier {
	verify := tlsconfig.VerifyPeerCertificate(bundles, tlsconfig.AuthorizeAny())
	return func(raw [][]byte) error { return verify(raw, nil) }
}
