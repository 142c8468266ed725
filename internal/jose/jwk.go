// Package jose verifies compact JWS signatures (RFC 7515) with public JWKs
// (RFC 7517, 7518, 8037) with its own ECDSA, RSA and Ed25519 verification
// on math/big and a small Montgomery field (ecdsa.go, rsa.go, ed25519.go,
// field.go; the standard library's FIPS module would add 2.3 MB to a
// Proxy-Wasm module), held to crypto/* by differential fuzz tests. It
// is what Proxy-Wasm filters use instead of a general JOSE library, whose
// HTTP key fetching would link net/http and file access into the module.
//
// It is deliberately narrow and strict: public signature keys only (EC
// P-256/P-384/P-521, OKP Ed25519, RSA of at least 2048 bits), compact
// serialisation only, a protected header of alg, kid and typ only, no
// "none", no HMAC, and every algorithm bound to exactly one key type and
// curve, so a key is never used with an algorithm it was not made for.
// Signing stays with the CLI and the distributor (jwx).
package jose

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/meshguard/meshguard/internal/jsonx"
)

// Errors wrapped by ParseKeySet and ParseKey.
var (
	// ErrKey: a JWK or JWK Set is malformed, private, or of an unsupported type.
	ErrKey = errors.New("invalid JWK")
)

// Limits on key material.
const (
	// MinRSABits is the smallest RSA modulus accepted.
	MinRSABits = 2048
	// MaxRSABits bounds the modulus so a hostile key cannot make every
	// verification expensive.
	MaxRSABits = 8192
	// MaxKeys bounds the keys of one set.
	MaxKeys = 256
	// MaxSetBytes bounds the JSON of one set.
	MaxSetBytes = 1 << 20
)

// Key is a public signature key from a JWK.
type Key struct {
	// KID is the key's kid ("" when the JWK has none).
	KID string
	// Alg is the JWK's optional alg member ("" when absent). When set, it is
	// the only algorithm the key verifies.
	Alg string
	// Use is the JWK's optional use member: "", "sig" or "jwt-svid".
	Use string
	// pub is *ecKey, edKey or *rsaKey.
	pub any
	// fp identifies the key material (see Fingerprint).
	fp [32]byte
	// algs are the algorithms the key's type and curve allow.
	algs []string
}

// Fingerprint is a SHA-256 over the key's type, curve and public
// parameters: equal for the same public key, whatever its kid or JSON
// formatting, so a result cached under one key is never honoured for
// another key that reuses its kid.
func (k *Key) Fingerprint() [32]byte { return k.fp }

// Allows reports whether the key may verify signatures made with alg.
func (k *Key) Allows(alg string) bool {
	if k.Alg != "" && k.Alg != alg {
		return false
	}
	for _, a := range k.algs {
		if a == alg {
			return true
		}
	}
	return false
}

// KeySet is a parsed JWK Set.
type KeySet struct {
	keys []*Key
}

// Len returns the number of keys.
func (s *KeySet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// Keys returns the keys in set order.
func (s *KeySet) Keys() []*Key {
	if s == nil {
		return nil
	}
	return s.keys
}

// Lookup returns the key with kid.
func (s *KeySet) Lookup(kid string) (*Key, bool) {
	if s == nil || kid == "" {
		return nil, false
	}
	for _, k := range s.keys {
		if k.KID == kid {
			return k, true
		}
	}
	return nil, false
}

// ParseKeySet parses a JWK Set ({"keys":[...]}) or a single JWK. Every key
// must be a public signature key with a kid unique in the set; keys marked
// "use":"x509-svid" (the X.509 authorities of a SPIFFE bundle) are skipped.
// Members of the set other than "keys" (such as spiffe_sequence) are ignored.
func ParseKeySet(data []byte) (*KeySet, error) {
	if len(data) > MaxSetBytes {
		return nil, fmt.Errorf("%w: key set of %d bytes exceeds %d", ErrKey, len(data), MaxSetBytes)
	}
	top, err := members(data)
	if err != nil {
		return nil, fmt.Errorf("%w: key set: %v", ErrKey, err)
	}
	var raws [][]byte
	if keys, ok := top["keys"]; ok {
		if keys.Kind != jsonx.Array {
			return nil, fmt.Errorf("%w: key set: keys is not an array", ErrKey)
		}
		for i := range keys.Items {
			raws = append(raws, keys.Items[i].Raw)
		}
	} else if _, ok := top["kty"]; ok {
		raws = [][]byte{data}
	} else {
		return nil, fmt.Errorf("%w: neither a JWK Set (keys) nor a JWK (kty)", ErrKey)
	}
	if len(raws) > MaxKeys {
		return nil, fmt.Errorf("%w: %d keys, at most %d", ErrKey, len(raws), MaxKeys)
	}
	set := &KeySet{}
	for i, raw := range raws {
		k, err := ParseKey(raw)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if k.KID == "" {
			return nil, fmt.Errorf("%w: key %d has no kid", ErrKey, i)
		}
		if _, dup := set.Lookup(k.KID); dup {
			return nil, fmt.Errorf("%w: two keys with kid %q", ErrKey, k.KID)
		}
		set.keys = append(set.keys, k)
	}
	return set, nil
}

// errSkip marks a key that is valid but not for JWS verification.
var errSkip = errors.New("not a signature key")

// privateMembers are the JWK members of private or symmetric keys.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ParseKey parses one public JWK.
func ParseKey(data []byte) (*Key, error) {
	m, err := members(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	str := func(name string) (string, error) {
		v, ok := m[name]
		if !ok {
			return "", nil
		}
		if v.Kind != jsonx.String {
			return "", fmt.Errorf("%w: %s is not a string", ErrKey, name)
		}
		return v.Str, nil
	}
	use, err := str("use")
	if err != nil {
		return nil, err
	}
	switch use {
	case "", "sig", "jwt-svid":
	case "x509-svid":
		return nil, errSkip
	default:
		return nil, fmt.Errorf("%w: use %q is not a signature use", ErrKey, use)
	}
	for _, p := range privateMembers {
		if _, ok := m[p]; ok {
			return nil, fmt.Errorf("%w: has private member %q; verification keys must be public", ErrKey, p)
		}
	}
	k := &Key{Use: use}
	if k.KID, err = str("kid"); err != nil {
		return nil, err
	}
	if k.Alg, err = str("alg"); err != nil {
		return nil, err
	}
	kty, err := str("kty")
	if err != nil {
		return nil, err
	}
	crv, err := str("crv")
	if err != nil {
		return nil, err
	}
	b64 := func(name string) ([]byte, error) {
		s, err := str(name)
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, fmt.Errorf("%w: %s key lacks %s", ErrKey, kty, name)
		}
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not unpadded base64url: %v", ErrKey, name, err)
		}
		return b, nil
	}
	switch kty {
	case "EC":
		var curve *curve
		var alg string
		switch crv {
		case "P-256":
			curve, alg = p256, ES256
		case "P-384":
			curve, alg = p384, ES384
		case "P-521":
			curve, alg = p521, ES512
		default:
			return nil, fmt.Errorf("%w: EC curve %q (want P-256, P-384 or P-521)", ErrKey, crv)
		}
		x, err := b64("x")
		if err != nil {
			return nil, err
		}
		y, err := b64("y")
		if err != nil {
			return nil, err
		}
		if len(x) != curve.bytes || len(y) != curve.bytes {
			return nil, fmt.Errorf("%w: %s coordinates must be %d bytes", ErrKey, crv, curve.bytes)
		}
		// Points off the curve (invalid-curve attacks) and unreduced
		// coordinates are refused here, once, not at every verification.
		pub, err := newECKey(curve, x, y)
		if err != nil {
			return nil, fmt.Errorf("%w: %s point: %v", ErrKey, crv, err)
		}
		k.pub, k.algs, k.fp = pub, []string{alg}, fingerprint(kty, crv, x, y)
	case "OKP":
		if crv != "Ed25519" {
			return nil, fmt.Errorf("%w: OKP curve %q (want Ed25519)", ErrKey, crv)
		}
		x, err := b64("x")
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 x must be %d bytes", ErrKey, ed25519PublicKeySize)
		}
		k.pub, k.algs, k.fp = edKey(x), []string{EdDSA}, fingerprint(kty, crv, x)
	case "RSA":
		if crv != "" {
			return nil, fmt.Errorf("%w: RSA key with crv", ErrKey)
		}
		n, err := b64("n")
		if err != nil {
			return nil, err
		}
		e, err := b64("e")
		if err != nil {
			return nil, err
		}
		if n[0] == 0 || e[0] == 0 {
			return nil, fmt.Errorf("%w: RSA n and e must not have leading zero bytes", ErrKey)
		}
		modulus := new(big.Int).SetBytes(n)
		if bits := modulus.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("%w: RSA modulus of %d bits (want %d to %d)", ErrKey, bits, MinRSABits, MaxRSABits)
		}
		if modulus.Bit(0) == 0 {
			return nil, fmt.Errorf("%w: RSA modulus is even", ErrKey)
		}
		if len(e) > 4 {
			return nil, fmt.Errorf("%w: RSA exponent too large", ErrKey)
		}
		var exp int
		for _, c := range e {
			exp = exp<<8 | int(c)
		}
		if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
			return nil, fmt.Errorf("%w: RSA exponent %d", ErrKey, exp)
		}
		k.pub = &rsaKey{n: modulus, e: exp}
		k.algs = []string{RS256, RS384, RS512, PS256, PS384, PS512}
		k.fp = fingerprint(kty, "", n, e)
	case "":
		return nil, fmt.Errorf("%w: kty missing", ErrKey)
	default:
		return nil, fmt.Errorf("%w: kty %q (want EC, OKP or RSA)", ErrKey, kty)
	}
	if k.Alg != "" && !k.Allows(k.Alg) {
		return nil, fmt.Errorf("%w: alg %q does not fit a %s %s key", ErrKey, k.Alg, kty, crv)
	}
	return k, nil
}

// fingerprint hashes length-prefixed fields, so no two field lists collide.
func fingerprint(kty, crv string, params ...[]byte) [32]byte {
	h := sha256.New()
	for _, f := range append([][]byte{[]byte(kty), []byte(crv)}, params...) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// members decodes a JSON object into its members. jsonx refuses
// duplicate names (RFC 7493): with duplicates, two parsers could read
// different keys.
func members(data []byte) (map[string]*jsonx.Value, error) {
	v, err := jsonx.Parse(data)
	if err != nil {
		return nil, err
	}
	if v.Kind != jsonx.Object {
		return nil, errors.New("not a JSON object")
	}
	m := make(map[string]*jsonx.Value, len(v.Members))
	for i := range v.Members {
		m[v.Members[i].Name] = &v.Members[i].Value
	}
	return m, nil
}
