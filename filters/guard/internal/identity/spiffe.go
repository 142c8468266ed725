// Package identity resolves who is calling: SPIFFE IDs from the mTLS peer
// certificate, JWT-SVIDs verified against trust-domain JWT bundles (with the
// rules of the JWT-SVID spec that generic verifiers get wrong), and device
// claims from signed device tokens. It is pure Go and builds for wasip1.
package identity

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadSPIFFEID is returned for a string that is not a SPIFFE ID.
var ErrBadSPIFFEID = errors.New("not a SPIFFE ID")

// TrustDomain returns the trust domain of a SPIFFE ID ("spiffe://td/path"),
// enforcing the SPIFFE ID grammar: lower-case trust domain of [a-z0-9.-_],
// no port, userinfo, query or fragment, path segments of [A-Za-z0-9.-_] that
// are neither empty nor "." / "..".
func TrustDomain(id string) (string, error) {
	const scheme = "spiffe://"
	if len(id) > 2048 {
		return "", fmt.Errorf("%w: longer than 2048 bytes", ErrBadSPIFFEID)
	}
	if !strings.HasPrefix(id, scheme) {
		return "", fmt.Errorf("%w: %q lacks the spiffe:// scheme", ErrBadSPIFFEID, id)
	}
	rest := id[len(scheme):]
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return "", fmt.Errorf("%w: %q has no trust domain", ErrBadSPIFFEID, id)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", fmt.Errorf("%w: trust domain %q has invalid character %q", ErrBadSPIFFEID, td, c)
		}
	}
	if len(rest) > len(td) { // there was a "/"
		if path == "" {
			return "", fmt.Errorf("%w: %q has a trailing slash", ErrBadSPIFFEID, id)
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return "", fmt.Errorf("%w: %q has an empty or dot path segment", ErrBadSPIFFEID, id)
			}
			for i := 0; i < len(seg); i++ {
				c := seg[i]
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
					return "", fmt.Errorf("%w: path of %q has invalid character %q", ErrBadSPIFFEID, id, c)
				}
			}
		}
	}
	return td, nil
}

// PeerSPIFFEID picks the SPIFFE ID out of the URI SANs Envoy reports for the
// peer certificate (connection.uri_san_peer_certificate holds the first URI
// SAN). It returns "" when the value is not a valid SPIFFE ID.
func PeerSPIFFEID(uriSAN string) string {
	if _, err := TrustDomain(uriSAN); err != nil {
		return ""
	}
	return uriSAN
}
