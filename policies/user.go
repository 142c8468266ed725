package policies

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// End-user access tokens: Issuer documents declare the authorisation
// servers whose tokens the guard verifies (RFC 9068 access tokens), and
// access rules add conditions on the verified token (issuers, scopes,
// claims) to their workload conditions. policies/README.md ("End-user
// access tokens") specifies both.

// KindIssuer declares an authorisation server for end-user access tokens.
const KindIssuer = "Issuer"

// Issuer limits.
const (
	// DefaultIssuerLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultIssuerLeeway = 30 * time.Second
	// MaxIssuerLeeway bounds an Issuer's leeway.
	MaxIssuerLeeway = 5 * time.Minute
	// DefaultUserHeader carries end-user tokens as "Bearer <token>".
	DefaultUserHeader = "authorization"
)

// IssuerAlgorithms are the JWS algorithms an Issuer may allow: asymmetric
// only (no none, no HMAC).
var IssuerAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

// Issuer is an authorisation server whose access tokens the guard verifies.
type Issuer struct {
	Meta
	// URL is the iss value, compared exactly.
	URL        string
	Audiences  []string // aud must contain one of them
	Algorithms []string // subset of IssuerAlgorithms
	JWKS       []byte   // the JWK Set (canonical JSON)
	// Header carries the token (lower-case): DefaultUserHeader holds
	// "Bearer <token>", any other header the bare token.
	Header string
	// StrictType requires the RFC 9068 typ "at+jwt" (or
	// "application/at+jwt"), compared case-insensitively; default true.
	StrictType bool
	Leeway     time.Duration
	// ForwardedClaims are claims copied into request headers after
	// verification (any such header the request carried is removed).
	ForwardedClaims []ForwardedClaim
}

// ForwardedClaim copies a verified claim into a request header.
type ForwardedClaim struct {
	Claim  string
	Header string // lower-case
	Pos    Pos
}

// ClaimOp is a claim condition's operator.
type ClaimOp uint8

// Claim condition operators (see policies/README.md for their semantics
// on string, number, boolean and array claims).
const (
	ClaimEquals ClaimOp = iota + 1
	ClaimContains
	ClaimIn
)

func (o ClaimOp) String() string {
	switch o {
	case ClaimEquals:
		return "equals"
	case ClaimContains:
		return "contains"
	case ClaimIn:
		return "in"
	}
	return "unknown"
}

// ClaimCondition is one condition on an end-user token claim.
type ClaimCondition struct {
	Name   string
	Op     ClaimOp
	Values []string // one for equals and contains
	Pos    Pos
}

// ClaimKind is the JSON type of a claim value.
type ClaimKind uint8

// Claim kinds; ClaimOther is null, an object, or an array that holds
// anything but strings, numbers and booleans.
const (
	ClaimOther ClaimKind = iota
	ClaimString
	ClaimNumber
	ClaimBool
	ClaimArray
)

// Claim is a verified claim value, decoded once per token.
type Claim struct {
	Kind  ClaimKind
	Str   string  // strings; booleans as "true" or "false"; numbers in their JSON text
	Num   float64 // numbers
	Elems []Claim // arrays (scalar elements only)
}

// User is a verified end-user access token. The guard builds it once per
// token and caches it, so decisions read it without allocating.
type User struct {
	Issuer  string // the iss claim
	Subject string // the sub claim
	// Scopes are the scope claim's space-separated values and the scp
	// claim's values (an array of strings, or one space-separated string).
	Scopes []string
	Claims map[string]Claim
}

// HasScope reports whether the token grants scope s.
func (u *User) HasScope(s string) bool {
	for _, x := range u.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// NewUser builds a User from a token's decoded JSON payload (numbers as
// json.Number or float64).
func NewUser(payload map[string]any) *User {
	u := &User{Claims: make(map[string]Claim, len(payload))}
	for k, v := range payload {
		u.Claims[k] = claimOf(v, true)
	}
	u.Issuer, _ = payload["iss"].(string)
	u.Subject, _ = payload["sub"].(string)
	add := func(s string) {
		for _, f := range strings.Split(s, " ") {
			if f != "" && !u.HasScope(f) {
				u.Scopes = append(u.Scopes, f)
			}
		}
	}
	if s, ok := payload["scope"].(string); ok {
		add(s)
	}
	switch v := payload["scp"].(type) {
	case string:
		add(v)
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" && !strings.Contains(s, " ") && !u.HasScope(s) {
				u.Scopes = append(u.Scopes, s)
			}
		}
	}
	return u
}

func claimOf(v any, top bool) Claim {
	switch x := v.(type) {
	case string:
		return Claim{Kind: ClaimString, Str: x}
	case bool:
		return Claim{Kind: ClaimBool, Str: strconv.FormatBool(x)}
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsInf(f, 0) {
			return Claim{}
		}
		return Claim{Kind: ClaimNumber, Str: string(x), Num: f}
	case float64:
		return Claim{Kind: ClaimNumber, Str: strconv.FormatFloat(x, 'g', -1, 64), Num: x}
	case []any:
		if !top {
			return Claim{}
		}
		c := Claim{Kind: ClaimArray, Elems: make([]Claim, 0, len(x))}
		for _, e := range x {
			ec := claimOf(e, false)
			if ec.Kind == ClaimOther {
				return Claim{}
			}
			c.Elems = append(c.Elems, ec)
		}
		return c
	}
	return Claim{}
}

// String returns a claim as header text: strings, numbers and booleans
// as they are, arrays of those joined by ","; ok is false for other kinds.
func (c Claim) String() (string, bool) {
	switch c.Kind {
	case ClaimString, ClaimNumber, ClaimBool:
		return c.Str, true
	case ClaimArray:
		parts := make([]string, len(c.Elems))
		for i, e := range c.Elems {
			parts[i] = e.Str
		}
		return strings.Join(parts, ","), true
	}
	return "", false
}

// cvalue is a compiled claim condition value.
type cvalue struct {
	text  string
	num   float64
	isNum bool // text is a JSON number
}

func newCValue(s string) cvalue {
	v := cvalue{text: s}
	if jsonNumber(s) {
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
			v.num, v.isNum = f, true
		}
	}
	return v
}

// jsonNumber reports whether s follows the JSON number grammar (RFC 8259 §6).
func jsonNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// equal compares a scalar claim with a condition value: strings exactly,
// numbers numerically (both as IEEE 754 doubles), booleans by their text
// "true" or "false".
func (v *cvalue) equal(c *Claim) bool {
	switch c.Kind {
	case ClaimString, ClaimBool:
		return c.Str == v.text
	case ClaimNumber:
		return v.isNum && c.Num == v.num
	}
	return false
}

type cclaim struct {
	name   string
	op     ClaimOp
	values []cvalue
}

func (cc *cclaim) matches(u *User) bool {
	c, ok := u.Claims[cc.name]
	if !ok {
		return false
	}
	switch cc.op {
	case ClaimEquals:
		return cc.values[0].equal(&c)
	case ClaimContains:
		if c.Kind != ClaimArray {
			return cc.values[0].equal(&c)
		}
		for k := range c.Elems {
			if cc.values[0].equal(&c.Elems[k]) {
				return true
			}
		}
	case ClaimIn:
		for k := range cc.values {
			if cc.values[k].equal(&c) {
				return true
			}
		}
	}
	return false
}

// cuser is an access rule's compiled end-user conditions.
type cuser struct {
	issuers   []string
	scopes    []string
	scopeText string // scopes joined by " " (the 403's scope parameter)
	claims    []cclaim
}

func newCUser(r *AccessRule) *cuser {
	if len(r.Issuers) == 0 && len(r.Scopes) == 0 && len(r.Claims) == 0 {
		return nil
	}
	c := &cuser{scopes: r.Scopes, scopeText: strings.Join(r.Scopes, " ")}
	for _, i := range r.Issuers {
		c.issuers = append(c.issuers, i.Text)
	}
	for _, cl := range r.Claims {
		cc := cclaim{name: cl.Name, op: cl.Op}
		for _, v := range cl.Values {
			cc.values = append(cc.values, newCValue(v))
		}
		c.claims = append(c.claims, cc)
	}
	return c
}

// Why a rule's end-user conditions failed (see match).
const (
	userOK = iota
	userMissing
	userIssuer
	userClaim
	userScope
)

// check applies the conditions to the request's end user; scopes are
// checked last so a failure on them means everything else matched.
func (c *cuser) check(u *User) int {
	if u == nil {
		return userMissing
	}
	if len(c.issuers) > 0 && !in(c.issuers, u.Issuer) {
		return userIssuer
	}
	for k := range c.claims {
		if !c.claims[k].matches(u) {
			return userClaim
		}
	}
	for _, s := range c.scopes {
		if !u.HasScope(s) {
			return userScope
		}
	}
	return userOK
}

// cissuer is a compiled Issuer.
type cissuer struct {
	name, url  string
	audiences  []string
	algorithms []string
	jwks       []byte
	header     string
	strictType bool
	leeway     int64 // nanoseconds
	forwarded  []ForwardedClaim
}

// IssuerConfig is an Issuer as the engine holds it, for the guard's
// verifier.
type IssuerConfig struct {
	Name            string
	URL             string
	Audiences       []string
	Algorithms      []string
	JWKS            []byte
	Header          string
	StrictType      bool
	Leeway          time.Duration
	ForwardedClaims []ForwardedClaim
}

// Issuers returns the engine's Issuers in document order.
func (e *Engine) Issuers() []IssuerConfig {
	out := make([]IssuerConfig, len(e.issuers))
	for i := range e.issuers {
		c := &e.issuers[i]
		out[i] = IssuerConfig{Name: c.name, URL: c.url, Audiences: c.audiences, Algorithms: c.algorithms, JWKS: c.jwks,
			Header: c.header, StrictType: c.strictType, Leeway: time.Duration(c.leeway), ForwardedClaims: c.forwarded}
	}
	return out
}

// UsesUsers reports whether any rule has end-user conditions.
func (e *Engine) UsesUsers() bool {
	for i := range e.rules {
		if e.rules[i].user != nil {
			return true
		}
	}
	return false
}

// addIssuers compiles the Issuer documents: one per iss, algorithms from
// IssuerAlgorithms, a leeway within MaxIssuerLeeway.
func (e *Engine) addIssuers(l []*Issuer) error {
	seen := map[string]bool{}
	for _, is := range l {
		if is.URL == "" || len(is.Audiences) == 0 || len(is.Algorithms) == 0 || len(is.JWKS) == 0 {
			return fmt.Errorf("%s: issuer %q needs issuer, audiences, algorithms and jwks", is.Pos, is.Name)
		}
		if seen[is.URL] {
			return fmt.Errorf("%s: issuer %q: another Issuer declares %q", is.Pos, is.Name, is.URL)
		}
		seen[is.URL] = true
		for _, a := range is.Algorithms {
			if !in(IssuerAlgorithms, a) {
				return fmt.Errorf("%s: issuer %q: algorithm %q not allowed", is.Pos, is.Name, a)
			}
		}
		if is.Leeway < 0 || is.Leeway > MaxIssuerLeeway {
			return fmt.Errorf("%s: issuer %q: leeway out of range", is.Pos, is.Name)
		}
		h := is.Header
		if h == "" {
			h = DefaultUserHeader
		}
		e.issuers = append(e.issuers, cissuer{name: is.Name, url: is.URL, audiences: is.Audiences, algorithms: is.Algorithms,
			jwks: is.JWKS, header: strings.ToLower(h), strictType: is.StrictType, leeway: int64(is.Leeway), forwarded: is.ForwardedClaims})
	}
	e.counts.Issuers = len(e.issuers)
	return nil
}

// UserClaimNames returns the claim names the rules' claim conditions read.
func (e *Engine) UserClaimNames() []string {
	var out []string
	for i := range e.rules {
		if u := e.rules[i].user; u != nil {
			for _, c := range u.claims {
				if !in(out, c.name) {
					out = append(out, c.name)
				}
			}
		}
	}
	return out
}

// CheckUserClaims checks the registered claims of an input's end-user
// token: iss, sub and scope are strings when present, scp a string or an
// array of strings.
func CheckUserClaims(m map[string]any) error {
	for _, k := range []string{"iss", "sub", "scope"} {
		if v, ok := m[k]; ok {
			if _, ok := v.(string); !ok {
				return fmt.Errorf("claim %q must be a string", k)
			}
		}
	}
	switch v := m["scp"].(type) {
	case nil, string:
	case []any:
		for _, e := range v {
			if _, ok := e.(string); !ok {
				return errors.New("claim \"scp\" must be a string or an array of strings")
			}
		}
	default:
		return errors.New("claim \"scp\" must be a string or an array of strings")
	}
	return nil
}
