package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
)

// Public returns the key as the standard library's type, for tests that
// compare this package with crypto/* and jwx.
func (k *Key) Public() crypto.PublicKey {
	switch p := k.pub.(type) {
	case *ecKey:
		c := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[p.c.name]
		return &ecdsa.PublicKey{Curve: c, X: p.x, Y: p.y}
	case edKey:
		return ed25519.PublicKey(p)
	case *rsaKey:
		return &rsa.PublicKey{N: p.n, E: p.e}
	}
	return nil
}
