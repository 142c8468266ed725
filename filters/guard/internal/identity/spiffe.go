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
	td, bad, c := parseID(id)
	switch bad {
	case idOK:
		return td, nil
	case idTooLong:
		return "", fmt.Errorf("%w: longer than 2048 bytes", ErrBadSPIFFEID)
	case idNoScheme:
		return "", fmt.Errorf("%w: %q lacks the spiffe:// scheme", ErrBadSPIFFEID, id)
	case idNoTrustDomain:
		return "", fmt.Errorf("%w: %q has no trust domain", ErrBadSPIFFEID, id)
	case idTrustDomainChar:
		return "", fmt.Errorf("%w: trust domain %q has invalid character %q", ErrBadSPIFFEID, td, c)
	case idTrailingSlash:
		return "", fmt.Errorf("%w: %q has a trailing slash", ErrBadSPIFFEID, id)
	case idSegment:
		return "", fmt.Errorf("%w: %q has an empty or dot path segment", ErrBadSPIFFEID, id)
	default:
		return "", fmt.Errorf("%w: path of %q has invalid character %q", ErrBadSPIFFEID, id, c)
	}
}

// What parseID found wrong.
const (
	idOK = iota
	idTooLong
	idNoScheme
	idNoTrustDomain
	idTrustDomainChar
	idTrailingSlash
	idSegment
	idPathChar
)

// parseID checks the SPIFFE ID grammar without allocating (it runs for
// every mTLS request): the trust domain, or what is wrong and the
// offending character.
func parseID(id string) (td string, bad int, char byte) {
	const scheme = "spiffe://"
	if len(id) > 2048 {
		return "", idTooLong, 0
	}
	rest, ok := strings.CutPrefix(id, scheme)
	if !ok {
		return "", idNoScheme, 0
	}
	td, path, slash := strings.Cut(rest, "/")
	if td == "" {
		return "", idNoTrustDomain, 0
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return td, idTrustDomainChar, c
		}
	}
	if !slash {
		return td, idOK, 0
	}
	if path == "" {
		return "", idTrailingSlash, 0
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", idSegment, 0
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return "", idPathChar, c
			}
		}
	}
	return td, idOK, 0
}

// PeerSPIFFEID picks the SPIFFE ID out of the URI SANs Envoy reports for the
// peer certificate (connection.uri_san_peer_certificate holds the first URI
// SAN). It returns "" when the value is not a valid SPIFFE ID.
func PeerSPIFFEID(uriSAN string) string {
	if _, bad, _ := parseID(uriSAN); bad != idOK {
		return ""
	}
	return uriSAN
}
