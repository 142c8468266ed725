package jose

import (
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"

	"github.com/meshguard/meshguard/internal/jsonx"
)

// JWS algorithm names (RFC 7518 §3.1, RFC 8037).
const (
	RS256 = "RS256"
	RS384 = "RS384"
	RS512 = "RS512"
	PS256 = "PS256"
	PS384 = "PS384"
	PS512 = "PS512"
	ES256 = "ES256"
	ES384 = "ES384"
	ES512 = "ES512"
	EdDSA = "EdDSA"
)

// Errors wrapped by Parse and Verify, so callers can tell the reasons apart.
var (
	// ErrMalformed: not a compact JWS with a well-formed header.
	ErrMalformed = errors.New("malformed JWS")
	// ErrHeader: the protected header has a member other than alg, kid, typ.
	ErrHeader = errors.New("JWS header member not allowed")
	// ErrAlgorithm: alg is not in the caller's allow-list or does not fit the key.
	ErrAlgorithm = errors.New("JWS algorithm not allowed")
	// ErrUnknownKey: kid missing or not in the key set.
	ErrUnknownKey = errors.New("unknown JWS signing key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("bad JWS signature")
)

// MaxJWSBytes bounds the compact serialisation Parse accepts.
const MaxJWSBytes = 1 << 20

// Header is a JWS protected header; only these members are accepted.
type Header struct {
	Alg, Kid, Typ string
}

// JWS is a parsed, not yet verified, compact JWS.
type JWS struct {
	Header Header
	// Payload is the decoded payload.
	Payload []byte
	// signingInput is "header.payload" as transmitted.
	signingInput string
	sig          []byte
}

var b64 = base64.RawURLEncoding.Strict()

// Parse splits a compact JWS and decodes its protected header and payload.
// It refuses anything but three unpadded base64url parts, a header other
// than a JSON object of string members alg, kid and typ (no crit, jku, x5u,
// b64, ...), an empty alg or "none", and an empty signature. Algorithm and
// key checks happen in Verify.
func Parse(compact string) (*JWS, error) {
	if len(compact) == 0 || len(compact) > MaxJWSBytes {
		return nil, fmt.Errorf("%w: size %d", ErrMalformed, len(compact))
	}
	hs, rest, ok1 := strings.Cut(compact, ".")
	ps, ss, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(ss, ".") {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hb, err := b64.DecodeString(hs)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	m, err := members(hb)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	j := &JWS{signingInput: compact[:len(hs)+1+len(ps)]}
	for name, v := range m {
		if v.Kind != jsonx.String {
			return nil, fmt.Errorf("%w: %q is not a string", ErrHeader, name)
		}
		s := v.Str
		switch name {
		case "alg":
			j.Header.Alg = s
		case "kid":
			j.Header.Kid = s
		case "typ":
			j.Header.Typ = s
		default:
			return nil, fmt.Errorf("%w: %q", ErrHeader, name)
		}
	}
	if j.Header.Alg == "" || strings.EqualFold(j.Header.Alg, "none") {
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, j.Header.Alg)
	}
	if ss == "" {
		return nil, fmt.Errorf("%w: unsigned", ErrAlgorithm)
	}
	if j.Payload, err = b64.DecodeString(ps); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if j.sig, err = b64.DecodeString(ss); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	return j, nil
}

// Verify checks the signature with the key named by the header's kid in
// set. alg must be in allowed and fit the key exactly (ES256 needs a P-256
// key, EdDSA an Ed25519 key, RS/PS an RSA key; a key's own alg narrows it
// further). It returns the key used.
func (j *JWS) Verify(set *KeySet, allowed ...string) (*Key, error) {
	alg := j.Header.Alg
	if !contains(allowed, alg) {
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	if j.Header.Kid == "" {
		return nil, fmt.Errorf("%w: kid missing", ErrUnknownKey)
	}
	key, ok := set.Lookup(j.Header.Kid)
	if !ok {
		return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, j.Header.Kid)
	}
	if !key.Allows(alg) {
		return nil, fmt.Errorf("%w: key %q does not verify %s", ErrAlgorithm, key.KID, alg)
	}
	if err := verify(key.pub, alg, j.signingInput, j.sig); err != nil {
		return nil, fmt.Errorf("%w: key %q: %v", ErrSignature, key.KID, err)
	}
	return key, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// verify checks sig over input; the caller has matched alg and key type.
func verify(pub any, alg, input string, sig []byte) error {
	if alg == EdDSA {
		k, ok := pub.(edKey)
		if !ok || !verifyEd25519(k, []byte(input), sig) {
			return errors.New("Ed25519 verification failed")
		}
		return nil
	}
	var h crypto.Hash
	switch alg[2:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	default:
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	digest := sum(h, input)
	switch k := pub.(type) {
	case *ecKey:
		// RFC 7518 §3.4: R and S as fixed-size big-endian integers.
		size := k.c.bytes
		if len(sig) != 2*size {
			return fmt.Errorf("ECDSA signature of %d bytes, want %d", len(sig), 2*size)
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !verifyECDSA(k, digest, r, s) {
			return errors.New("ECDSA verification failed")
		}
	case *rsaKey:
		var err error
		if alg[0] == 'P' {
			err = verifyPSS(k, h, hashFunc(h), digest, sig)
		} else {
			err = verifyPKCS1v15(k, h, digest, sig)
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("key type %T", pub)
	}
	return nil
}

func sum(h crypto.Hash, input string) []byte {
	d := hashFunc(h)()
	d.Write([]byte(input))
	return d.Sum(nil)
}

// hashFunc returns the constructor of SHA-256, SHA-384 or SHA-512 (the
// caller has checked h is one of them).
func hashFunc(h crypto.Hash) func() hash.Hash {
	switch h {
	case crypto.SHA256:
		return sha256.New
	case crypto.SHA384:
		return sha512.New384
	default:
		return sha512.New
	}
}
