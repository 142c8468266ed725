package server

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/policies/bundle"
)

// keyReloadInterval is how often the keys file is checked for changes.
const keyReloadInterval = 5 * time.Second

// KeyVerifier verifies signed bundles (policies/bundle) against the JWK Set
// in a file, reloading the file when it changes so keys can be rotated
// without a restart. A file that fails to parse keeps the last good keys.
type KeyVerifier struct {
	path string

	mu      sync.Mutex
	keys    jwk.Set
	mtime   time.Time
	checked time.Time
}

// NewKeyVerifier loads the JWK Set in path.
func NewKeyVerifier(path string) (*KeyVerifier, error) {
	v := &KeyVerifier{path: path}
	if err := v.load(); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *KeyVerifier) load() error {
	st, err := os.Stat(v.path)
	if err != nil {
		return fmt.Errorf("bundle keys: %w", err)
	}
	data, err := os.ReadFile(v.path)
	if err != nil {
		return fmt.Errorf("bundle keys: %w", err)
	}
	keys, err := bundle.ParseKeySet(data)
	if err != nil {
		return fmt.Errorf("bundle keys %s: %w", v.path, err)
	}
	if keys.Len() == 0 {
		return fmt.Errorf("bundle keys %s: the key set is empty", v.path)
	}
	v.keys, v.mtime, v.checked = keys, st.ModTime(), time.Now()
	return nil
}

func (v *KeyVerifier) current() jwk.Set {
	v.mu.Lock()
	defer v.mu.Unlock()
	if time.Since(v.checked) >= keyReloadInterval {
		v.checked = time.Now()
		if st, err := os.Stat(v.path); err == nil && !st.ModTime().Equal(v.mtime) {
			_ = v.load()
		}
	}
	return v.keys
}

// Verify implements bundles.Verifier with policies/bundle.Verify.
func (v *KeyVerifier) Verify(data []byte, scope string, minRevision uint64) (bundles.Verified, error) {
	// bundle.VerifyOptions.MinRevision is the last accepted revision.
	var last uint64
	if minRevision > 0 {
		last = minRevision - 1
	}
	b, err := bundle.Verify(data, bundle.VerifyOptions{Keys: v.current(), MinRevision: last, Scope: scope, Now: time.Now()})
	if err != nil {
		if errors.Is(err, bundle.ErrRollback) {
			return bundles.Verified{}, fmt.Errorf("%w: %w", bundles.ErrConflict, err)
		}
		return bundles.Verified{}, err
	}
	return bundles.Verified{Revision: b.Manifest.Revision, Created: b.Manifest.Created, Expires: b.Manifest.Expires, KeyID: b.Manifest.KeyID}, nil
}
