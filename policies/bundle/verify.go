package bundle

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// VerifyOptions say which keys, audience, time and revision floor a bundle
// is verified against.
type VerifyOptions struct {
	// Keys is the public key set (see ParseKeySet).
	Keys jwk.Set
	// MinRevision, when above 0, is the last accepted revision: the bundle's
	// revision must be strictly greater.
	MinRevision uint64
	// Scope, when set, must be one of the manifest's scope entries.
	Scope string
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// Limits bound the bundle's size; zero fields take the defaults.
	Limits Limits
	// ClockSkew is how far in the future Created may be (default 5m).
	ClockSkew time.Duration
	// Subset, when set, names path prefixes (such as "compiled/") that
	// are all the caller needs (see verify.Options).
	Subset []string
	// Grace still accepts a bundle that expired less than Grace ago.
	Grace time.Duration
}

// options converts o for package verify. The set goes through JSON so the
// one strict key parser decides (a private key in the set is refused
// there).
func (o VerifyOptions) options() (verify.Options, error) {
	if o.Keys == nil || o.Keys.Len() == 0 {
		return verify.Options{}, fmt.Errorf("%w: no verification keys", ErrSignature)
	}
	raw, err := json.Marshal(o.Keys)
	if err != nil {
		return verify.Options{}, fmt.Errorf("%w: encoding the key set: %v", ErrSignature, err)
	}
	keys, err := verify.ParseKeySet(raw)
	if err != nil {
		return verify.Options{}, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return verify.Options{Keys: keys, MinRevision: o.MinRevision, Scope: o.Scope, Now: o.Now,
		Limits: o.Limits, ClockSkew: o.ClockSkew, Subset: o.Subset, Grace: o.Grace}, nil
}

// Verify checks a bundle file and returns its verified contents with
// verify.Verify, the checks the guard filter runs. Errors wrap one of the
// package's sentinel errors (ErrFormat, ErrSignature, ErrFileSet,
// ErrExpired, ErrNotYetValid, ErrScope, ErrRollback).
func Verify(data []byte, opts VerifyOptions) (*Bundle, error) {
	o, err := opts.options()
	if err != nil {
		return nil, err
	}
	return verify.Verify(data, o)
}

// Open verifies every file of a bundle (opts.Subset is ignored) and checks
// that its engine image is what its policy sources compile to: what the
// distributor accepts for publishing and `meshguard policy verify` passes.
func Open(data []byte, opts VerifyOptions) (*Bundle, error) {
	opts.Subset = nil
	b, err := Verify(data, opts)
	if err != nil {
		return nil, err
	}
	if err := CheckImage(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Load verifies a bundle and returns the engine its image holds, exactly
// as the guard filter does (verify.Load).
func Load(data []byte, opts VerifyOptions) (*Policy, error) {
	o, err := opts.options()
	if err != nil {
		return nil, err
	}
	return verify.Load(data, o)
}
