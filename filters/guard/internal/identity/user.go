package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/jose"
	"github.com/meshguard/meshguard/internal/jsonx"
	"github.com/meshguard/meshguard/policies"
)

// End-user access tokens (RFC 9068 JWT profile for OAuth 2.0 access
// tokens), verified against the Issuers of the policy bundle.

// ErrType is wrapped when a token's typ is not the access-token type.
var ErrType = errors.New("not an access token (typ)")

// ErrIssuedInFuture is wrapped when iat lies beyond the leeway ahead.
var ErrIssuedInFuture = errors.New("token issued in the future")

// UserToken is a verified end-user access token.
type UserToken struct {
	// Issuer is the name of the Issuer document that verified it.
	Issuer string
	User   *policies.User
	Expiry time.Time
	// Forwarded are the header values to set upstream (Issuer
	// forwardedClaims), computed once per token.
	Forwarded [][2]string

	nbf, iat time.Time
	leeway   time.Duration
	header   string
}

// check enforces exp, nbf and iat with the Issuer's leeway.
func (t *UserToken) check(now time.Time) error {
	if !now.Before(t.Expiry.Add(t.leeway)) {
		return fmt.Errorf("%w at %s", ErrExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	if !t.nbf.IsZero() && now.Add(t.leeway).Before(t.nbf) {
		return fmt.Errorf("%w before %s", ErrNotYetValid, t.nbf.UTC().Format(time.RFC3339))
	}
	if !t.iat.IsZero() && now.Add(t.leeway).Before(t.iat) {
		return fmt.Errorf("%w: iat %s", ErrIssuedInFuture, t.iat.UTC().Format(time.RFC3339))
	}
	return nil
}

// userIssuer is a compiled Issuer with its key set.
type userIssuer struct {
	cfg  policies.IssuerConfig
	keys *jose.KeySet
}

// UserVerifier verifies end-user access tokens for a set of Issuers.
type UserVerifier struct {
	byURL   map[string]*userIssuer
	headers []string // distinct token headers, in Issuer order
	cache   *Cache[*UserToken]
	// notOwned remembers tokens whose iss no Issuer declares (see Owns).
	notOwned *Cache[struct{}]
	// Signatures counts signature verifications.
	Signatures uint64
}

// NewUserVerifier compiles the Issuers (their JWKS parsed once).
func NewUserVerifier(issuers []policies.IssuerConfig, cacheSize int) (*UserVerifier, error) {
	v := &UserVerifier{byURL: map[string]*userIssuer{}, cache: NewCache[*UserToken](cacheSize),
		notOwned: NewCache[struct{}](cacheSize)}
	for _, is := range issuers {
		set, err := jose.ParseKeySet(is.JWKS)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: jwks: %w", is.Name, err)
		}
		if _, dup := v.byURL[is.URL]; dup {
			return nil, fmt.Errorf("issuer %q: %q is declared twice", is.Name, is.URL)
		}
		v.byURL[is.URL] = &userIssuer{cfg: is, keys: set}
		if !contains(v.headers, is.Header) {
			v.headers = append(v.headers, is.Header)
		}
	}
	return v, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// NotOwned exposes the cache of tokens no Issuer owns (for sweeping).
func (v *UserVerifier) NotOwned() *Cache[struct{}] { return v.notOwned }

// Headers returns the request headers that carry end-user tokens.
func (v *UserVerifier) Headers() []string { return v.headers }

// Cache exposes the verified-token cache.
func (v *UserVerifier) Cache() *Cache[*UserToken] { return v.cache }

// Verify checks an end-user access token that arrived in header at time
// now: its iss selects the Issuer (whose header it must have arrived in),
// then typ, alg, kid, signature, aud, exp, nbf and iat are checked. A
// cached token costs a hash, a lookup and the time checks.
func (v *UserVerifier) Verify(token, header string, now time.Time) (*UserToken, error) {
	if t, ok := v.cache.Get(token); ok {
		return v.Accept(token, t, header, now)
	}
	if len(token) == 0 || len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: size %d", ErrMalformed, len(token))
	}
	j, err := jose.Parse(token)
	if err != nil {
		return nil, joseError(err)
	}
	payload, err := decodePayload(j.Payload)
	if err != nil {
		return nil, err
	}
	iss, _ := payload["iss"].(string)
	is, ok := v.byURL[iss]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, iss)
	}
	c := &is.cfg
	if c.Header != header {
		return nil, fmt.Errorf("%w: a token of %q arrived in header %s", ErrIssuer, iss, header)
	}
	if c.StrictType && !strings.EqualFold(j.Header.Typ, "at+jwt") && !strings.EqualFold(j.Header.Typ, "application/at+jwt") {
		return nil, fmt.Errorf("%w: typ %q, want at+jwt", ErrType, j.Header.Typ)
	}
	if !contains(c.Algorithms, j.Header.Alg) {
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, j.Header.Alg)
	}
	if err := checkUserClaims(payload, c); err != nil {
		return nil, err
	}
	u := policies.NewUser(payload)
	if u.Subject == "" {
		return nil, fmt.Errorf("%w: sub claim missing or empty", ErrMalformed)
	}
	t := &UserToken{Issuer: c.Name, User: u, Expiry: claimTime(u, "exp"), nbf: claimTime(u, "nbf"), iat: claimTime(u, "iat"),
		leeway: c.Leeway, header: c.Header}
	if err := t.check(now); err != nil {
		return nil, err
	}
	v.Signatures++
	if _, err := j.Verify(is.keys, c.Algorithms...); err != nil {
		return nil, joseError(err)
	}
	for _, f := range c.ForwardedClaims {
		if cl, ok := u.Claims[f.Claim]; ok {
			if s, ok := cl.String(); ok && headerSafe(s) {
				t.Forwarded = append(t.Forwarded, [2]string{f.Header, s})
			}
		}
	}
	v.cache.Put(token, t, t.Expiry.Add(c.Leeway))
	return t, nil
}

// OwnsUncached is Owns for a token Lookup did not find.
func (v *UserVerifier) OwnsUncached(token string, now time.Time) bool { return v.owns(token, now) }

// Lookup returns the cached verification of token, which Accept must
// still check for this request (a cache hit of Verify in two steps, so a
// caller that looked the token up already does not hash it twice).
func (v *UserVerifier) Lookup(token string) (*UserToken, bool) { return v.cache.Get(token) }

// Accept checks a cached token t (from Lookup) for a request at now that
// presented it in header: its times with the Issuer's leeway (an expired
// token leaves the cache) and its Issuer's header.
func (v *UserVerifier) Accept(token string, t *UserToken, header string, now time.Time) (*UserToken, error) {
	if err := t.check(now); err != nil {
		v.cache.Remove(token)
		return nil, err
	}
	if t.header != header {
		return nil, fmt.Errorf("%w: a token of %q arrived in header %s", ErrIssuer, t.User.Issuer, header)
	}
	return t, nil
}

// headerSafe reports whether s can be a header value as it is: no control
// characters (CR, LF, NUL, ...), and no leading or trailing whitespace.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return strings.TrimSpace(s) == s
}

// decodePayload decodes the JSON object of the payload strictly: one
// object, no duplicate member names at any depth, numbers kept exact.
func decodePayload(b []byte) (map[string]any, error) {
	v, err := jsonx.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if v.Kind != jsonx.Object {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	m, err := toAny(&v, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return m.(map[string]any), nil
}

// toAny converts a parsed value to what policies reads: maps, slices,
// strings, bools, json.Number (exact) and nil.
func toAny(v *jsonx.Value, depth int) (any, error) {
	if depth > 32 {
		return nil, errors.New("nested too deeply")
	}
	switch v.Kind {
	case jsonx.Object:
		m := make(map[string]any, len(v.Members))
		for i := range v.Members {
			e, err := toAny(&v.Members[i].Value, depth+1)
			if err != nil {
				return nil, err
			}
			m[v.Members[i].Name] = e
		}
		return m, nil
	case jsonx.Array:
		l := make([]any, len(v.Items))
		for i := range v.Items {
			e, err := toAny(&v.Items[i], depth+1)
			if err != nil {
				return nil, err
			}
			l[i] = e
		}
		return l, nil
	case jsonx.String:
		return v.Str, nil
	case jsonx.Number:
		return json.Number(v.Str), nil
	case jsonx.Bool:
		return v.True, nil
	}
	return nil, nil
}

// checkUserClaims applies RFC 9068 §2.2 and §4 to the registered claims:
// iss (already matched), aud (string or array; one must be an accepted
// audience), exp required, nbf and iat NumericDates when present (iat
// required when the Issuer is strict), sub, scope and scp typed.
func checkUserClaims(p map[string]any, c *policies.IssuerConfig) error {
	if err := policies.CheckUserClaims(p); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var auds []string
	switch a := p["aud"].(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformed)
			}
			auds = append(auds, s)
		}
	case nil:
	default:
		return fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformed)
	}
	ok := false
	for _, a := range auds {
		if a != "" && contains(c.Audiences, a) {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrAudience, auds)
	}
	for _, name := range []string{"exp", "nbf", "iat"} {
		v, present := p[name]
		if !present {
			switch {
			case name == "exp":
				return ErrMissingExp
			case name == "iat" && c.StrictType:
				return fmt.Errorf("%w: iat claim required", ErrMalformed)
			}
			continue
		}
		n, isNum := v.(json.Number)
		f, err := n.Float64()
		if !isNum || err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
			return fmt.Errorf("%w: %s is not a NumericDate", ErrMalformed, name)
		}
	}
	return nil
}

// claimTime reads a NumericDate claim (zero when absent).
func claimTime(u *policies.User, name string) time.Time {
	c, ok := u.Claims[name]
	if !ok || c.Kind != policies.ClaimNumber {
		return time.Time{}
	}
	sec, frac := math.Modf(c.Num)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// Owns reports whether an Issuer declares the token's (unverified) iss,
// so a header shared with JWT-SVIDs can be read as an end-user token.
// Tokens found not to be owned are remembered (bounded, until their exp
// or notOwnedFor at most), so a cached JWT-SVID in the shared header is
// not decoded again on every request.
func (v *UserVerifier) Owns(token string, now time.Time) bool {
	if _, ok := v.cache.Get(token); ok {
		return true
	}
	return v.owns(token, now)
}

// owns is Owns after a cache miss.
func (v *UserVerifier) owns(token string, now time.Time) bool {
	if _, ok := v.notOwned.Get(token); ok {
		return false
	}
	j, err := jose.Parse(token)
	if err != nil {
		return false
	}
	var p struct {
		Iss string
		Exp float64
	}
	pv, err := jsonx.Parse(j.Payload)
	if err != nil || pv.Kind != jsonx.Object {
		return false
	}
	if iss, ok := pv.Get("iss"); ok {
		if iss.Kind != jsonx.String && iss.Kind != jsonx.Null {
			return false
		}
		p.Iss = iss.Str
	}
	if exp, ok := pv.Get("exp"); ok && exp.Kind != jsonx.Null {
		if p.Exp, err = exp.Float(); err != nil {
			return false
		}
	}
	if _, ok := v.byURL[p.Iss]; ok {
		return true
	}
	until := now.Add(notOwnedFor)
	if e := time.Unix(int64(p.Exp), 0); p.Exp > 0 && e.Before(until) {
		until = e
	}
	v.notOwned.Put(token, struct{}{}, until)
	return false
}

// notOwnedFor bounds how long a token is remembered as not an end-user
// token (the Issuers change only with the policy, which rebuilds the
// verifier).
const notOwnedFor = 5 * time.Minute
