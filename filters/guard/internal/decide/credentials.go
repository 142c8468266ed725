package decide

import (
	"time"

	"strings"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
)

// Credentials are read before anything is verified, and every way of
// presenting one that could be read two ways is refused (401, RFC 6750
// §3.1 invalid_request): two values of a credential header (or two
// different tokens in two headers), a value that is not exactly one token,
// a Bearer scheme without a token or with a tab for the space. So no
// decision depends on which of two credentials a reader takes first.

// credError is why a request's credentials are ambiguous. Its text goes
// into the WWW-Authenticate error_description, so it never contains a
// quote or a backslash (RFC 6750 §3).
type credError struct{ msg string }

func (e *credError) Error() string { return e.msg }

func ambiguous(parts ...string) *credError { return &credError{strings.Join(parts, "")} }

// presented is what a request presents, unverified: the JWT-SVID (and
// which configured headers carried it) and the device token.
type presented struct {
	jwt     string
	jwtFrom uint16 // bit k: jwtSvid.headers[k] (config.MaxJWTHeaders)
	device  string
	// user is the end-user access token and userFrom its header;
	// userHit its cached verification, when the lookup found one.
	user, userFrom string
	userHit        *identity.UserToken
}

// tokenChars marks the bytes of an RFC 6750 b64token before its padding:
// ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/". A table, because a
// token is scanned byte by byte on every request that carries one.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
	}
	return t
}()

// b64token reports whether s is exactly one RFC 6750 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func b64token(s string) bool {
	i := 0
	for i < len(s) && tokenChars[s[i]] {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

// bearerToken reads `Bearer 1*SP b64token` (RFC 6750 §2.1; the scheme in
// any case). ours is false for another scheme, which is not a credential
// the guard verifies (unless it hides a Bearer credential after a comma,
// as a proxy joining two Authorization headers writes them).
func bearerToken(name, v string) (tok string, ours bool, err error) {
	i := 0
	for i < len(v) && v[i] != ' ' && v[i] != '\t' && v[i] != ',' {
		i++
	}
	if !strings.EqualFold(v[:i], "bearer") {
		if i == 0 {
			return "", true, ambiguous("the ", name, " header has no scheme")
		}
		if containsFold(v[i:], "bearer") {
			return "", true, ambiguous("the ", name, " header joins another scheme and a Bearer credential")
		}
		return "", false, nil
	}
	j := i
	for j < len(v) && v[j] == ' ' {
		j++
	}
	switch {
	case j == len(v):
		return "", true, ambiguous("the ", name, " header has the Bearer scheme but no token")
	case j == i:
		return "", true, ambiguous("the Bearer scheme in the ", name, " header is not followed by a space")
	case !b64token(v[j:]):
		return "", true, ambiguous("the ", name, " header does not hold exactly one bearer token")
	}
	return v[j:], true, nil
}

// containsFold reports whether s contains the lower-case ASCII word w in
// any case.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// one returns the only value of name, or why the request is ambiguous.
func (h *Headers) one(name string) (string, bool, error) {
	v, n := "", 0
	for _, kv := range *h {
		if kv[0] == name {
			if n++; n == 1 {
				v = kv[1]
			}
		}
	}
	if n > 1 {
		return "", false, ambiguous("the request carries the ", name, " header more than once")
	}
	return v, n == 1, nil
}

// credentials reads the JWT-SVID and device token the request presents,
// refusing ambiguous ones. Nothing is verified yet.
func (g *Guard) credentials(x *Exchange, now time.Time) error {
	idc := &g.cfg.Identity
	x.creds = presented{}
	if j := idc.JWTSVID; j != nil {
		from := ""
		for k, name := range j.Headers {
			v, ok, err := x.hdrs.one(name)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if v == "" {
				return ambiguous("the ", name, " header is empty")
			}
			tok := v
			if name == config.DefaultJWTHeader {
				var ours bool
				if tok, ours, err = bearerToken(name, v); err != nil {
					return err
				} else if !ours {
					continue
				}
			} else if !b64token(v) {
				return ambiguous("the ", name, " header does not hold exactly one token")
			}
			switch {
			case x.creds.jwt == "":
				x.creds.jwt, from = tok, name
			case tok != x.creds.jwt:
				return ambiguous("the request presents two different JWT-SVIDs (", from, " and ", name, ")")
			}
			x.creds.jwtFrom |= 1 << k
		}
	}
	if d := idc.Device; d != nil {
		v, ok, err := x.hdrs.one(d.Header)
		if err != nil {
			return err
		}
		if ok {
			if v == "" {
				return ambiguous("the ", d.Header, " header is empty")
			}
			tok, ours, err := bearerToken(d.Header, v)
			if err != nil {
				return err
			}
			if !ours {
				if !b64token(v) {
					return ambiguous("the ", d.Header, " header does not hold exactly one token")
				}
				tok = v
			}
			x.creds.device = tok
		}
	}
	return g.userCredentials(x, now)
}

// dropCredentials removes the verified credential headers before the
// request goes upstream (unless identity.keepCredentialHeaders keeps
// one): the application never sees a token it could replay elsewhere.
func (g *Guard) dropCredentials(x *Exchange, r Request) {
	idc := &g.cfg.Identity
	if x.caller.Token != nil {
		for k, name := range idc.JWTSVID.Headers {
			if x.creds.jwtFrom&(1<<k) != 0 && !idc.KeepsCredential(name) {
				x.hdrs.remove(name)
				r.RemoveHeader(name)
			}
		}
	}
	if x.caller.User != nil && x.creds.userFrom != "" && !idc.KeepsCredential(x.creds.userFrom) {
		x.hdrs.remove(x.creds.userFrom)
		r.RemoveHeader(x.creds.userFrom)
	}
	if x.caller.Device != nil && !idc.KeepsCredential(idc.Device.Header) {
		x.hdrs.remove(idc.Device.Header)
		r.RemoveHeader(idc.Device.Header)
	}
}
