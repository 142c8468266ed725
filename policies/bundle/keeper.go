package bundle

import (
	"sync"
)

// Keeper holds the last good bundle. A new bundle replaces it only when it
// verifies and its revision is above the current one; any failure keeps the
// last good bundle. Safe for concurrent use.
type Keeper struct {
	mu   sync.RWMutex
	opts VerifyOptions
	cur  *Bundle
}

// NewKeeper returns an empty Keeper verifying with opts. opts.MinRevision is
// the floor before the first bundle (e.g. a persisted last revision).
func NewKeeper(opts VerifyOptions) *Keeper { return &Keeper{opts: opts} }

// Current returns the last good bundle, or nil before the first one.
func (k *Keeper) Current() *Bundle {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cur
}

// Revision returns the current bundle's revision (or the configured
// MinRevision before the first bundle).
func (k *Keeper) Revision() uint64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.cur == nil {
		return k.opts.MinRevision
	}
	return k.cur.Manifest.Revision
}

// Offer verifies data and makes it current when it verifies with a revision
// above the current one. It reports whether the bundle was replaced; offering
// the current bundle's exact bytes again is not an error (changed is false).
func (k *Keeper) Offer(data []byte) (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	opts := k.opts
	if k.cur != nil {
		if k.cur.Digest == digestOf(data) {
			return false, nil
		}
		opts.MinRevision = k.cur.Manifest.Revision
	}
	b, err := Verify(data, opts)
	if err != nil {
		return false, err
	}
	k.cur = b
	return true, nil
}
