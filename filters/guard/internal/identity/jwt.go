package identity

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/meshguard/meshguard/internal/jose"
	"github.com/meshguard/meshguard/internal/jsonx"
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

// allowedAlgs are the JWT-SVID algorithms (RS, ES, PS 256/384/512); none,
// HMAC and EdDSA are refused.
var allowedAlgs = []string{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
}

// Claims are the registered claims plus the raw payload for private claims.
type Claims struct {
	Subject   string
	Issuer    string
	Audience  []string
	Expiry    time.Time
	NotBefore time.Time
	raw       map[string]*jsonx.Value
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
	if v.Kind == jsonx.String || v.Kind == jsonx.Number {
		s = v.Str
	}
	if c.strs == nil {
		c.strs = make(map[string]string, 4)
	}
	c.strs[name] = s
	return s
}

// split checks the compact serialisation and decodes header and payload.
// Signature verification happens later with the selected key.
func split(token string) (*jose.JWS, *Claims, error) {
	if len(token) == 0 || len(token) > MaxTokenBytes {
		return nil, nil, fmt.Errorf("%w: size %d", ErrMalformed, len(token))
	}
	j, err := jose.Parse(token)
	if err != nil {
		return nil, nil, joseError(err)
	}
	if !slices.Contains(allowedAlgs, j.Header.Alg) {
		return nil, nil, fmt.Errorf("%w: %q", ErrAlgorithm, j.Header.Alg)
	}
	if t := j.Header.Typ; t != "" && t != "JWT" && t != "JOSE" {
		return nil, nil, fmt.Errorf("%w: typ %q", ErrHeader, t)
	}
	if j.Header.Kid == "" {
		return nil, nil, fmt.Errorf("%w: kid missing", ErrUnknownKey)
	}
	c, err := parseClaims(j.Payload)
	if err != nil {
		return nil, nil, err
	}
	return j, c, nil
}

// joseError maps jose's reasons onto this package's sentinels.
func joseError(err error) error {
	for _, m := range []struct{ from, to error }{
		{jose.ErrMalformed, ErrMalformed}, {jose.ErrHeader, ErrHeader}, {jose.ErrAlgorithm, ErrAlgorithm},
		{jose.ErrUnknownKey, ErrUnknownKey}, {jose.ErrSignature, ErrSignature},
	} {
		if errors.Is(err, m.from) {
			return fmt.Errorf("%w: %v", m.to, err)
		}
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

func parseClaims(b []byte) (*Claims, error) {
	c := &Claims{}
	top, err := jsonx.Parse(b)
	if err != nil || top.Kind != jsonx.Object {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	c.raw = make(map[string]*jsonx.Value, len(top.Members))
	for i := range top.Members {
		c.raw[top.Members[i].Name] = &top.Members[i].Value
	}
	str := func(name string) (string, error) {
		v, ok := c.raw[name]
		if !ok {
			return "", nil
		}
		if v.Kind != jsonx.String && v.Kind != jsonx.Null {
			return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, name)
		}
		return v.Str, nil
	}
	num := func(name string) (time.Time, bool, error) {
		v, ok := c.raw[name]
		if !ok {
			return time.Time{}, false, nil
		}
		f, err := v.Float()
		if err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
			return time.Time{}, false, fmt.Errorf("%w: %s is not a NumericDate", ErrMalformed, name)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), true, nil
	}
	if c.Subject, err = str("sub"); err != nil {
		return nil, err
	}
	if c.Issuer, err = str("iss"); err != nil {
		return nil, err
	}
	if v, ok := c.raw["aud"]; ok {
		switch v.Kind {
		case jsonx.String, jsonx.Null:
			c.Audience = []string{v.Str}
		case jsonx.Array:
			c.Audience = make([]string, len(v.Items))
			for i, a := range v.Items {
				if a.Kind != jsonx.String && a.Kind != jsonx.Null {
					return nil, fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformed)
				}
				c.Audience[i] = a.Str
			}
		default:
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

// verifySignature verifies the token with the key named by its kid in set.
func verifySignature(j *jose.JWS, set *jose.KeySet) error {
	if set.Len() == 0 {
		return fmt.Errorf("%w: no key set", ErrUnknownKey)
	}
	if _, err := j.Verify(set, allowedAlgs...); err != nil {
		return joseError(err)
	}
	return nil
}
