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
}

// Verify checks a bundle file and returns its verified contents with
// verify.Verify, the checks the guard filter runs. Errors wrap one of the
// package's sentinel errors (ErrFormat, ErrSignature, ErrFileSet,
// ErrExpired, ErrNotYetValid, ErrScope, ErrRollback).
func Verify(data []byte, opts VerifyOptions) (*Bundle, error) {
	if opts.Keys == nil || opts.Keys.Len() == 0 {
		return nil, fmt.Errorf("%w: no verification keys", ErrSignature)
	}
	// The set goes through JSON so the one strict key parser decides (a
	// private key in the set is refused there).
	raw, err := json.Marshal(opts.Keys)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the key set: %v", ErrSignature, err)
	}
	keys, err := verify.ParseKeySet(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return verify.Verify(data, verify.Options{Keys: keys, MinRevision: opts.MinRevision, Scope: opts.Scope,
		Now: opts.Now, Limits: opts.Limits, ClockSkew: opts.ClockSkew, Subset: opts.Subset})
}
