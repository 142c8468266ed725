package devproxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/svidtls"
)

// ServerTLS is the dev proxy's downstream mTLS: it presents the SVID from src
// and requires a client certificate that VerifyPeer accepts.
func ServerTLS(src x509svid.Source, bundles x509bundle.Source) *tls.Config {
	return svidtls.Server(src, VerifyPeer(bundles), true)
}

// VerifyPeer checks a client chain the way Envoy's SPIFFE certificate
// validator (envoy.tls.cert_validator.spiffe) does, and no more: the leaf is
// not a CA and may not sign certificates or CRLs; the trust domain is taken
// from the first URI SAN ("spiffe://<td>/..."); the chain must lead to that
// trust domain's bundle. Like Envoy it does not check that the URI SAN is a
// valid SPIFFE ID or that it is the only one: the guard sees the first URI
// SAN as presented (connection.uri_san_peer_certificate) and judges it.
func VerifyPeer(bundles x509bundle.Source) svidtls.Verifier {
	return func(raw [][]byte) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("client certificate %d: %w", i, err)
			}
			certs[i] = c
		}
		leaf := certs[0]
		if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
			return errors.New("client certificate: a CA or signing certificate is not a workload certificate")
		}
		san, _ := FirstURISAN(leaf)
		td, err := spiffeid.TrustDomainFromString(trustDomainOf(san))
		if err != nil {
			return fmt.Errorf("client certificate: first URI SAN %q names no known trust domain", san)
		}
		b, err := bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return fmt.Errorf("client certificate: trust domain %q: %w", td.Name(), err)
		}
		roots := x509.NewCertPool()
		for _, a := range b.X509Authorities() {
			roots.AddCert(a)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		return nil
	}
}

// trustDomainOf is Envoy's SPIFFEValidator::extractTrustDomain: the text
// between "spiffe://" and the next "/", or "" when there is none. The result
// is compared with the configured trust domains exactly (go-spiffe refuses
// upper case, which no configured trust domain has).
func trustDomainOf(san string) string {
	rest, ok := strings.CutPrefix(san, "spiffe://")
	if !ok {
		return ""
	}
	td, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return td
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// URISANs returns the certificate's URI SANs exactly as encoded (Go's
// cert.URIs are re-serialised url.URL values, which can differ from the
// bytes Envoy hands the filter).
func URISANs(cert *x509.Certificate) []string {
	var out []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &seq); err != nil || len(rest) > 0 || !seq.IsCompound {
			return nil
		}
		for b := seq.Bytes; len(b) > 0; {
			var gn asn1.RawValue
			rest, err := asn1.Unmarshal(b, &gn)
			if err != nil {
				return out
			}
			// GeneralName uniformResourceIdentifier is [6] IA5String.
			if gn.Class == asn1.ClassContextSpecific && gn.Tag == 6 {
				out = append(out, string(gn.Bytes))
			}
			b = rest
		}
	}
	return out
}

// FirstURISAN is what Envoy's connection.uri_san_peer_certificate holds.
func FirstURISAN(cert *x509.Certificate) (string, bool) {
	sans := URISANs(cert)
	if len(sans) == 0 {
		return "", false
	}
	return sans[0], true
}
