package bundle

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Algorithm names accepted by GenerateKey (and the CLI's --alg).
const (
	AlgEd25519 = "ed25519"
	AlgES256   = "es256"
)

// keyAlg returns the only JWS algorithm a key of this type may sign with.
func keyAlg(k jwk.Key) (jwa.SignatureAlgorithm, error) {
	switch key := k.(type) {
	case jwk.OKPPublicKey:
		if key.Crv() == jwa.Ed25519 {
			return jwa.EdDSA, nil
		}
		return "", fmt.Errorf("unsupported OKP curve %q (want Ed25519)", key.Crv())
	case jwk.OKPPrivateKey:
		if key.Crv() == jwa.Ed25519 {
			return jwa.EdDSA, nil
		}
		return "", fmt.Errorf("unsupported OKP curve %q (want Ed25519)", key.Crv())
	case jwk.ECDSAPublicKey:
		if key.Crv() == jwa.P256 {
			return jwa.ES256, nil
		}
		return "", fmt.Errorf("unsupported EC curve %q (want P-256)", key.Crv())
	case jwk.ECDSAPrivateKey:
		if key.Crv() == jwa.P256 {
			return jwa.ES256, nil
		}
		return "", fmt.Errorf("unsupported EC curve %q (want P-256)", key.Crv())
	}
	return "", fmt.Errorf("unsupported key type %q (want OKP Ed25519 or EC P-256)", k.KeyType())
}

// checkKeyAlg validates the key's type and its optional alg member.
func checkKeyAlg(k jwk.Key) (jwa.SignatureAlgorithm, error) {
	alg, err := keyAlg(k)
	if err != nil {
		return "", err
	}
	if a := k.Algorithm(); a != nil && a.String() != "" && a.String() != alg.String() {
		return "", fmt.Errorf("key %q: alg %q does not match its key type (%s)", k.KeyID(), a, alg)
	}
	if u := k.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
		return "", fmt.Errorf("key %q: use %q is not sig", k.KeyID(), u)
	}
	return alg, nil
}

func isPrivate(k jwk.Key) bool {
	switch k.(type) {
	case jwk.OKPPrivateKey, jwk.ECDSAPrivateKey, jwk.RSAPrivateKey, jwk.SymmetricKey:
		return true
	}
	return false
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of k, base64url.
func Thumbprint(k jwk.Key) (string, error) {
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// ParseKeySet parses a public JWK Set (or a single public JWK) used to
// verify bundles. Every key must be a public Ed25519 or P-256 key with a
// unique kid; private or symmetric keys are refused so a signing key is never
// deployed as a verification key by mistake.
func ParseKeySet(data []byte) (jwk.Set, error) {
	set, err := jwk.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parsing JWK set: %w", err)
	}
	if set.Len() == 0 {
		return nil, errors.New("JWK set has no keys")
	}
	seen := map[string]bool{}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if isPrivate(k) {
			return nil, fmt.Errorf("JWK set key %d (kid %q) is a private or symmetric key; verification sets hold public keys only", i, k.KeyID())
		}
		if _, err := checkKeyAlg(k); err != nil {
			return nil, fmt.Errorf("JWK set key %d: %w", i, err)
		}
		kid := k.KeyID()
		if kid == "" {
			return nil, fmt.Errorf("JWK set key %d has no kid", i)
		}
		if seen[kid] {
			return nil, fmt.Errorf("JWK set has two keys with kid %q", kid)
		}
		seen[kid] = true
	}
	return set, nil
}

// ParseSigningKey parses a private Ed25519 or P-256 JWK. A key without kid
// gets its RFC 7638 thumbprint as kid.
func ParseSigningKey(data []byte) (jwk.Key, error) {
	k, err := jwk.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("parsing signing JWK: %w", err)
	}
	if !isPrivate(k) {
		return nil, errors.New("signing JWK is not a private key")
	}
	if _, err := checkKeyAlg(k); err != nil {
		return nil, fmt.Errorf("signing JWK: %w", err)
	}
	if k.KeyID() == "" {
		tp, err := Thumbprint(k)
		if err != nil {
			return nil, err
		}
		if err := k.Set(jwk.KeyIDKey, tp); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// GenerateKey creates a signing key (alg "ed25519" or "es256") whose kid is
// its RFC 7638 thumbprint, and the public JWK Set that verifies it.
func GenerateKey(alg string) (jwk.Key, jwk.Set, error) {
	var raw any
	var sigAlg jwa.SignatureAlgorithm
	switch strings.ToLower(alg) {
	case AlgEd25519, "eddsa":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		raw, sigAlg = priv, jwa.EdDSA
	case AlgES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		raw, sigAlg = priv, jwa.ES256
	default:
		return nil, nil, fmt.Errorf("unsupported algorithm %q (want ed25519 or es256)", alg)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, nil, err
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	kid, err := Thumbprint(pub)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range []jwk.Key{priv, pub} {
		for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: sigAlg, jwk.KeyUsageKey: jwk.ForSignature} {
			if err := k.Set(name, v); err != nil {
				return nil, nil, err
			}
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, nil, err
	}
	return priv, set, nil
}
