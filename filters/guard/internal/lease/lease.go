// Package lease elects one worker VM of a proxy to do a periodic job (the
// bundle poll) through a lease in Proxy-Wasm shared data: holder id and expiry,
// taken or renewed with compare-and-swap.
package lease

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// Lease is one worker's view of a named lease.
type Lease struct {
	store shared.Store
	key   string
	owner uint64
	ttl   time.Duration
	buf   [16]byte
}

// New returns a lease handle for owner (unique per VM, e.g. random).
func New(store shared.Store, key string, owner uint64, ttl time.Duration) *Lease {
	return &Lease{store: store, key: key, owner: owner, ttl: ttl}
}

// Acquire takes the lease if it is free, expired or already ours, and
// extends it to now+ttl. It reports whether this worker holds the lease.
func (l *Lease) Acquire(now time.Time) (bool, error) {
	for range shared.MaxAttempts {
		val, cas, err := l.store.Get(l.key)
		switch {
		case errors.Is(err, shared.ErrNotFound):
			cas = 0
		case err != nil:
			return false, err
		case len(val) == 16:
			holder := binary.LittleEndian.Uint64(val[0:8])
			exp := int64(binary.LittleEndian.Uint64(val[8:16]))
			if holder != l.owner && now.UnixNano() < exp {
				return false, nil
			}
		}
		binary.LittleEndian.PutUint64(l.buf[0:8], l.owner)
		binary.LittleEndian.PutUint64(l.buf[8:16], uint64(now.Add(l.ttl).UnixNano()))
		err = l.store.Set(l.key, l.buf[:], cas)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, shared.ErrCASMismatch) {
			return false, err
		}
	}
	return false, nil
}
