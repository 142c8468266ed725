package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Sentinel errors; every rejection wraps one of them so callers and tests can
// tell the reasons apart.
var (
	ErrMalformed   = errors.New("malformed token")
	ErrAlgorithm   = errors.New("algorithm not allowed")
	ErrHeader      = errors.New("header not allowed")
	ErrUnknownKey  = errors.New("unknown signing key")
	ErrSignature   = errors.New("bad signature")
	ErrExpired     = errors.New("token expired")
	ErrNotYetValid = errors.New("token not yet valid")
	ErrMissingExp  = errors.New("exp claim required")
	ErrAudience    = errors.New("audience mismatch")
	ErrSubject     = errors.New("subject not allowed")
	ErrIssuer      = errors.New("issuer not allowed")
)

// MaxTokenBytes bounds the token size accepted for verification.
const MaxTokenBytes = 16 << 10

// Leeway is the clock skew tolerated on exp and nbf.
const Leeway = 30 * time.Second

var allowedAlgs = map[string]jwa.SignatureAlgorithm{
	"RS256": jwa.RS256, "RS384": jwa.RS384, "RS512": jwa.RS512,
	"ES256": jwa.ES256, "ES384": jwa.ES384, "ES512": jwa.ES512,
	"PS256": jwa.PS256, "PS384": jwa.PS384, "PS512": jwa.PS512,
}

// header is the decoded JOSE header; only alg, kid and typ are allowed.
type header struct {
	alg, kid, typ string
}

// Claims are the registered claims plus the raw payload for private claims.
type Claims struct {
	Subject   string
	Issuer    string
	Audience  []string
	Expiry    time.Time
	NotBefore time.Time
	raw       map[string]json.RawMessage
	// strs memoises String: verified claims are cached and read on every
	// request, and decoding JSON each time would dominate a cache hit.
	strs map[string]string
}

// String returns a private claim as a string: JSON strings as-is, numbers in
// their JSON text, anything else "".
func (c *Claims) String(name string) string {
	if s, ok := c.strs[name]; ok {
		return s
	}
	v, ok := c.raw[name]
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(v, &n); err == nil {
			s = n.String()
		}
	}
	if c.strs == nil {
		c.strs = make(map[string]string, 4)
	}
	c.strs[name] = s
	return s
}

// split checks the compact serialisation and decodes header and payload.
// Signature verification happens later with the selected key.
func split(token string) (header, *Claims, error) {
	var h header
	if len(token) == 0 || len(token) > MaxTokenBytes {
		return h, nil, fmt.Errorf("%w: size %d", ErrMalformed, len(token))
	}
	if strings.Count(token, ".") != 2 {
		return h, nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hs, rest, _ := strings.Cut(token, ".")
	ps, sig, _ := strings.Cut(rest, ".")
	if sig == "" {
		return h, nil, fmt.Errorf("%w: unsigned token", ErrAlgorithm)
	}
	hb, err := base64.RawURLEncoding.DecodeString(hs)
	if err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	var hm map[string]json.RawMessage
	if err := strictUnmarshal(hb, &hm); err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	for k, v := range hm {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return h, nil, fmt.Errorf("%w: header %q is not a string", ErrHeader, k)
		}
		switch k {
		case "alg":
			h.alg = s
		case "kid":
			h.kid = s
		case "typ":
			h.typ = s
		default:
			return h, nil, fmt.Errorf("%w: %q", ErrHeader, k)
		}
	}
	if _, ok := allowedAlgs[h.alg]; !ok {
		return h, nil, fmt.Errorf("%w: %q", ErrAlgorithm, h.alg)
	}
	if h.typ != "" && h.typ != "JWT" && h.typ != "JOSE" {
		return h, nil, fmt.Errorf("%w: typ %q", ErrHeader, h.typ)
	}
	if h.kid == "" {
		return h, nil, fmt.Errorf("%w: kid missing", ErrUnknownKey)
	}
	pb, err := base64.RawURLEncoding.DecodeString(ps)
	if err != nil {
		return h, nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	c, err := parseClaims(pb)
	if err != nil {
		return h, nil, err
	}
	return h, c, nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func parseClaims(b []byte) (*Claims, error) {
	c := &Claims{}
	if err := strictUnmarshal(b, &c.raw); err != nil || c.raw == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	str := func(name string) (string, error) {
		v, ok := c.raw[name]
		if !ok {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, name)
		}
		return s, nil
	}
	num := func(name string) (time.Time, bool, error) {
		v, ok := c.raw[name]
		if !ok {
			return time.Time{}, false, nil
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
			return time.Time{}, false, fmt.Errorf("%w: %s is not a NumericDate", ErrMalformed, name)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), true, nil
	}
	var err error
	if c.Subject, err = str("sub"); err != nil {
		return nil, err
	}
	if c.Issuer, err = str("iss"); err != nil {
		return nil, err
	}
	if v, ok := c.raw["aud"]; ok {
		var one string
		if json.Unmarshal(v, &one) == nil {
			c.Audience = []string{one}
		} else if err := json.Unmarshal(v, &c.Audience); err != nil {
			return nil, fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformed)
		}
	}
	var has bool
	if c.Expiry, has, err = num("exp"); err != nil {
		return nil, err
	} else if !has {
		return nil, ErrMissingExp
	}
	if c.NotBefore, _, err = num("nbf"); err != nil {
		return nil, err
	}
	return c, nil
}

// checkTimes enforces exp and nbf with Leeway.
func (c *Claims) checkTimes(now time.Time) error {
	if !now.Before(c.Expiry.Add(Leeway)) {
		return fmt.Errorf("%w at %s", ErrExpired, c.Expiry.UTC().Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Add(Leeway).Before(c.NotBefore) {
		return fmt.Errorf("%w before %s", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkAudience requires a non-empty aud that shares a non-empty value with
// accepted. An empty accepted list rejects everything: it never disables the check.
func (c *Claims) checkAudience(accepted []string) error {
	for _, a := range c.Audience {
		if a == "" {
			continue
		}
		for _, want := range accepted {
			if want != "" && a == want {
				return nil
			}
		}
	}
	if len(c.Audience) == 0 {
		return fmt.Errorf("%w: aud claim missing or empty", ErrAudience)
	}
	return fmt.Errorf("%w: %q", ErrAudience, c.Audience)
}

// verifySignature verifies the compact token with the key named by kid in set.
func verifySignature(token string, h header, set jwk.Set) error {
	if set == nil {
		return fmt.Errorf("%w: no key set", ErrUnknownKey)
	}
	key, ok := set.LookupKeyID(h.kid)
	if !ok {
		return fmt.Errorf("%w: kid %q", ErrUnknownKey, h.kid)
	}
	if ka := key.Algorithm().String(); ka != "" && ka != h.alg {
		return fmt.Errorf("%w: key %q is for %s, token uses %s", ErrAlgorithm, h.kid, ka, h.alg)
	}
	if _, err := jws.Verify([]byte(token), jws.WithKey(allowedAlgs[h.alg], key)); err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}
