package decide

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/policies"
)

// End-user access tokens: read from the Issuers' headers and verified with
// the bundle's Issuers, or (identity.endUser.jwtAuthn) taken from the
// claims Envoy's jwt_authn filter verified. A presented token that does
// not verify is a 401 invalid_token (RFC 6750 §3.1), never an anonymous
// request.

// JWTAuthnFilter is the jwt_authn filter's dynamic metadata namespace.
const JWTAuthnFilter = "envoy.filters.http.jwt_authn"

// MetadataReader is implemented by Requests that read dynamic metadata:
// Metadata returns the property metadata.filter_metadata[filter][key]
// [claim] as Envoy encodes it (strings raw), ok false when absent.
type MetadataReader interface {
	Metadata(filter, key, claim string) (string, bool)
}

// endUser is the guard's end-user token state for one policy.
type endUser struct {
	verify *identity.UserVerifier // nil in jwtAuthn mode
	// forwarded are every Issuer's forwardedClaims headers: removed from
	// every request, set from a verified token only.
	forwarded []string
	// claims are the claim names the policy's rules read (jwtAuthn mode).
	claims []string
	key    []byte // pseudonym key (nil: record the subject as is)
}

// setupUsers prepares end-user tokens for a newly enforced engine.
func (g *Guard) setupUsers(eng *policies.Engine) error {
	e := g.cfg.Identity.EndUser
	if e == nil {
		return nil
	}
	u := &endUser{claims: eng.UserClaimNames()}
	var err error
	if u.key, err = e.PseudonymKeyBytes(); err != nil {
		return err
	}
	for _, is := range eng.Issuers() {
		for _, f := range is.ForwardedClaims {
			if !contains(u.forwarded, f.Header) {
				u.forwarded = append(u.forwarded, f.Header)
			}
		}
	}
	if len(e.JWTAuthn) == 0 {
		if u.verify, err = identity.NewUserVerifier(eng.Issuers(), e.CacheSize); err != nil {
			return err
		}
	}
	g.users = u
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// userCredentials reads the end-user token from the Issuers' headers. A
// token in a header the JWT-SVID configuration also reads is an end-user
// token when an Issuer owns its iss, else it stays a JWT-SVID.
func (g *Guard) userCredentials(x *Exchange, now time.Time) error {
	if g.users == nil || g.users.verify == nil {
		return nil
	}
	for _, name := range g.users.verify.Headers() {
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
		if name == policies.DefaultUserHeader {
			var ours bool
			if tok, ours, err = bearerToken(name, v); err != nil {
				return err
			} else if !ours {
				continue
			}
		} else if !b64token(v) {
			return ambiguous("the ", name, " header does not hold exactly one token")
		}
		hit, cached := g.users.verify.Lookup(tok)
		if k := g.jwtHeader(name); k >= 0 && x.creds.jwtFrom&(1<<k) != 0 {
			if !cached && !g.users.verify.OwnsUncached(tok, now) {
				continue // a JWT-SVID
			}
			x.creds.jwtFrom &^= 1 << k
			if x.creds.jwtFrom == 0 {
				x.creds.jwt = ""
			}
		}
		if x.creds.user != "" {
			return ambiguous("the request presents end-user tokens in two headers (", x.creds.userFrom, " and ", name, ")")
		}
		x.creds.user, x.creds.userFrom, x.creds.userHit = tok, name, hit
	}
	return nil
}

// jwtHeader returns the index of name in jwtSvid.headers, or -1.
func (g *Guard) jwtHeader(name string) int {
	if j := g.cfg.Identity.JWTSVID; j != nil {
		for k, h := range j.Headers {
			if h == name {
				return k
			}
		}
	}
	return -1
}

// resolveUser verifies the end-user token (or reads the jwt_authn claims)
// into x.caller.User.
func (g *Guard) resolveUser(x *Exchange, r Request, now time.Time) error {
	u := g.users
	if u == nil {
		return nil
	}
	if u.verify == nil {
		return g.jwtAuthnUser(x, r)
	}
	if x.creds.user == "" {
		return nil
	}
	var t *identity.UserToken
	var err error
	if hit := x.creds.userHit; hit != nil {
		t, err = u.verify.Accept(x.creds.user, hit, x.creds.userFrom, now)
		g.countTokens(1, 0)
	} else {
		c := u.verify.Cache()
		h0, m0 := c.Hits, c.Misses
		t, err = u.verify.Verify(x.creds.user, x.creds.userFrom, now)
		g.countTokens(c.Hits-h0, c.Misses-m0)
	}
	if err != nil {
		return err
	}
	x.caller.User, x.caller.UserForward = t.User, t.Forwarded
	return nil
}

// jwtAuthnUser builds the end user from the payload jwt_authn verified:
// iss, sub and scope and every claim the rules read, each as a string
// property; scp is not read (Envoy's list encoding carries no types).
func (g *Guard) jwtAuthnUser(x *Exchange, r Request) error {
	mr, ok := r.(MetadataReader)
	if !ok {
		return nil
	}
	found := ""
	for _, key := range g.cfg.Identity.EndUser.JWTAuthn {
		iss, ok := mr.Metadata(JWTAuthnFilter, key, "iss")
		if !ok {
			continue
		}
		if found != "" {
			return fmt.Errorf("jwt_authn verified two payloads (%s and %s); one request has one end user", found, key)
		}
		found = key
		payload := map[string]any{"iss": strings.Clone(iss)}
		for _, name := range append([]string{"sub", "scope"}, g.users.claims...) {
			if v, ok := mr.Metadata(JWTAuthnFilter, key, name); ok {
				payload[name] = strings.Clone(v)
			}
		}
		x.caller.User = policies.NewUser(payload)
	}
	return nil
}

// userRecord returns the user and issuer an audit record names.
func (u *endUser) userRecord(user *policies.User) (string, string) {
	if user == nil {
		return "", ""
	}
	if u == nil || u.key == nil {
		return user.Subject, user.Issuer
	}
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte(user.Issuer))
	m.Write([]byte{0})
	m.Write([]byte(user.Subject))
	return "hmac-sha256:" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), user.Issuer
}

// forwardClaims removes every forwardedClaims header the request carried
// and sets those of the verified token.
func (g *Guard) forwardClaims(x *Exchange, r Request) {
	if g.users == nil {
		return
	}
	for _, h := range g.users.forwarded {
		if x.hdrs.remove(h) {
			r.RemoveHeader(h)
		}
	}
	for _, kv := range x.caller.UserForward {
		r.ReplaceHeader(kv[0], kv[1])
		x.hdrs.set(kv[0], kv[1])
	}
}

// challengeText makes s safe inside a quoted WWW-Authenticate parameter
// (RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E).
func challengeText(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '\''
		}
	}
	return string(b)
}
