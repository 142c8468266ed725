package verify

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/jose"
)

// KeySet is a set of public bundle verification keys: Ed25519 (EdDSA) or
// P-256 (ES256), each with a unique kid.
type KeySet struct {
	set *jose.KeySet
}

// Len returns the number of keys.
func (s *KeySet) Len() int {
	if s == nil {
		return 0
	}
	return s.set.Len()
}

// ParseKeySet parses a public JWK Set (or a single public JWK) used to
// verify bundles. Every key must be a public Ed25519 or P-256 key with a
// unique kid and, when set, alg matching its type and use "sig"; private or
// symmetric keys are refused so a signing key is never deployed as a
// verification key by mistake.
func ParseKeySet(data []byte) (*KeySet, error) {
	set, err := jose.ParseKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("parsing JWK set: %w", err)
	}
	if set.Len() == 0 {
		return nil, fmt.Errorf("parsing JWK set: %w: no keys", jose.ErrKey)
	}
	for i, k := range set.Keys() {
		if !k.Allows(jose.EdDSA) && !k.Allows(jose.ES256) {
			return nil, fmt.Errorf("JWK set key %d (kid %q): not an Ed25519 or P-256 key (or its alg does not fit)", i, k.KID)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("JWK set key %d (kid %q): use %q is not sig", i, k.KID, k.Use)
		}
	}
	return &KeySet{set: set}, nil
}

// SharedKID returns a kid both sets hold ("" when none): a key trusted in
// two roles (the authors' and the registry's) would let one pass as the
// other.
func (s *KeySet) SharedKID(o *KeySet) string {
	if s.Len() == 0 || o.Len() == 0 {
		return ""
	}
	kids := map[string]bool{}
	for _, k := range s.set.Keys() {
		kids[k.KID] = true
	}
	for _, k := range o.set.Keys() {
		if kids[k.KID] {
			return k.KID
		}
	}
	return ""
}
