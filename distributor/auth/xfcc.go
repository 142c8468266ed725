package auth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// HeaderXFCC is Envoy's x-forwarded-client-cert header: what the sidecar in
// front of the distributor learned from the mTLS handshake with the caller.
const HeaderXFCC = "X-Forwarded-Client-Cert"

// maxXFCCBytes bounds the header we parse; a sidecar's own element is a few
// hundred bytes (By, Hash, Subject, URI), a chain of hops a few more.
const maxXFCCBytes = 16 << 10

// DefaultSidecarAddrs are the source addresses Envoy sidecars use for
// inbound traffic they forward to the application: Istio's (and Kuma's)
// inbound passthrough addresses. Traffic from them came through the mesh,
// whoever the original caller was.
var DefaultSidecarAddrs = []string{"127.0.0.6", "::6"}

// XFCCConfig says whether and from whom the distributor accepts the
// caller's SPIFFE ID from x-forwarded-client-cert. Off by default: the
// header is only as trustworthy as the proxy that sets it, so it is
// honoured only from the sidecar's own addresses, only in its last element
// (the one that proxy appended), and only when that element names this
// distributor in By= when By is configured.
type XFCCConfig struct {
	// Trust enables the header.
	Trust bool `yaml:"trust" json:"trust"`
	// Proxies are the peer addresses allowed to send it (default
	// DefaultSidecarAddrs).
	Proxies []string `yaml:"proxies" json:"proxies"`
	// By, when set, is the distributor's own SPIFFE ID, which the sidecar
	// writes into By= (the identity it terminated mTLS as).
	By string `yaml:"by" json:"by"`
}

// XFCCElement is one element of an x-forwarded-client-cert header (one
// proxy hop).
type XFCCElement struct {
	// By is the URI SAN of the proxy's own certificate.
	By string
	// URI is the URI SAN of the client certificate it verified.
	URI string
	// Hash is the SHA-256 of the client certificate (hex).
	Hash string
}

// ErrXFCC is returned for an x-forwarded-client-cert header that cannot be
// trusted or parsed.
var ErrXFCC = errors.New("bad x-forwarded-client-cert")

// ParseXFCC parses an x-forwarded-client-cert value: elements separated by
// commas, each a list of key=value pairs separated by semicolons, values
// optionally double-quoted (quoted values may contain , ; = and \"). Keys
// are case-insensitive. An element with two By or two URI keys is refused:
// which one the proxy meant is ambiguous.
func ParseXFCC(v string) ([]XFCCElement, error) {
	if len(v) > maxXFCCBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds the limit of %d", ErrXFCC, len(v), maxXFCCBytes)
	}
	var out []XFCCElement
	var el XFCCElement
	seen := map[string]bool{}
	i := 0
	for {
		// key
		j := i
		for j < len(v) && v[j] != '=' && v[j] != ';' && v[j] != ',' && v[j] != '"' {
			j++
		}
		if j >= len(v) || v[j] != '=' {
			return nil, fmt.Errorf("%w: want key=value at offset %d", ErrXFCC, i)
		}
		key := strings.ToLower(strings.TrimSpace(v[i:j]))
		if key == "" {
			return nil, fmt.Errorf("%w: empty key at offset %d", ErrXFCC, i)
		}
		i = j + 1
		// value
		var val string
		if i < len(v) && v[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(v) {
				c := v[i]
				if c == '\\' && i+1 < len(v) {
					b.WriteByte(v[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("%w: unterminated quoted value", ErrXFCC)
			}
			val = b.String()
		} else {
			j = i
			for j < len(v) && v[j] != ';' && v[j] != ',' {
				if v[j] == '"' || v[j] == '=' {
					return nil, fmt.Errorf("%w: unquoted value contains %q at offset %d", ErrXFCC, v[j], j)
				}
				j++
			}
			val = strings.TrimSpace(v[i:j])
			i = j
		}
		if (key == "by" || key == "uri") && seen[key] {
			return nil, fmt.Errorf("%w: %s given twice in one element", ErrXFCC, key)
		}
		seen[key] = true
		switch key {
		case "by":
			el.By = val
		case "uri":
			el.URI = val
		case "hash":
			el.Hash = val
		}
		if i >= len(v) {
			out = append(out, el)
			return out, nil
		}
		switch v[i] {
		case ';':
		case ',':
			out = append(out, el)
			el, seen = XFCCElement{}, map[string]bool{}
		default:
			return nil, fmt.Errorf("%w: want ; or , after a value at offset %d", ErrXFCC, i)
		}
		i++
	}
}

// xfccTrust is a validated XFCCConfig.
type xfccTrust struct {
	proxies []net.IP
	by      string
}

func newXFCCTrust(c XFCCConfig) (*xfccTrust, error) {
	if !c.Trust {
		if len(c.Proxies) > 0 || c.By != "" {
			return nil, errors.New("auth: xfcc.proxies and xfcc.by need xfcc.trust: true")
		}
		return nil, nil
	}
	t := &xfccTrust{}
	addrs := c.Proxies
	if len(addrs) == 0 {
		addrs = DefaultSidecarAddrs
	}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("auth: xfcc.proxies: %q is not an IP address", a)
		}
		t.proxies = append(t.proxies, ip)
	}
	if c.By != "" {
		id, err := spiffeid.FromString(c.By)
		if err != nil {
			return nil, fmt.Errorf("auth: xfcc.by: %w", err)
		}
		t.by = id.String()
	}
	return t, nil
}

func (t *xfccTrust) fromProxy(ip net.IP) bool {
	for _, p := range t.proxies {
		if p.Equal(ip) {
			return true
		}
	}
	return false
}

// identify returns the caller's SPIFFE ID from the header the sidecar set:
// the last element, the one the nearest proxy appended. "" when the request
// carries no header (plain text inside the mesh).
func (t *xfccTrust) identify(h string) (string, error) {
	els, err := ParseXFCC(h)
	if err != nil {
		return "", err
	}
	el := els[len(els)-1]
	if t.by != "" && el.By != t.by {
		return "", fmt.Errorf("%w: By=%q is not this distributor (%s)", ErrXFCC, el.By, t.by)
	}
	if el.URI == "" {
		return "", fmt.Errorf("%w: the client certificate has no URI SAN", ErrXFCC)
	}
	id, err := spiffeid.FromString(el.URI)
	if err != nil {
		return "", fmt.Errorf("%w: URI %q: %w", ErrXFCC, el.URI, err)
	}
	return id.String(), nil
}

// proxiedHeaders are set by Envoy (and other proxies) on requests they
// forward. A loopback request carrying one came through a proxy in the pod
// (a sidecar with an older inbound source address, say), not from a process
// an operator runs next to the distributor.
var proxiedHeaders = []string{HeaderXFCC, "X-Forwarded-For", "Forwarded", "X-Forwarded-Proto",
	"X-Envoy-Peer-Metadata", "X-Envoy-Peer-Metadata-Id", "X-Envoy-Attempt-Count", "X-Envoy-Expected-Rq-Timeout-Ms"}

// directLoopback reports whether a request is from a process on this host
// talking to the distributor directly: the peer is exactly 127.0.0.1 or
// ::1 (sidecars forward inbound traffic from other loopback addresses, such
// as 127.0.0.6) and no proxy left its forwarding headers.
func directLoopback(ip net.IP, h http.Header) bool {
	if ip == nil || !(ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback)) {
		return false
	}
	for _, k := range proxiedHeaders {
		if _, ok := h[http.CanonicalHeaderKey(k)]; ok {
			return false
		}
	}
	return true
}
