// Package ratelimit implements per-key token buckets kept in Proxy-Wasm shared
// data, updated with a compare-and-swap loop so every worker VM of a proxy
// draws from the same budget. It is pure Go; the filter supplies the
// shared.Store.
package ratelimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// Limiter charges buckets in a Store. It reuses one buffer: not for
// concurrent use (each VM is single-threaded).
type Limiter struct {
	store  shared.Store
	prefix string
	buf    [16]byte
	key    []byte
}

// New returns a limiter whose keys start with prefix.
func New(store shared.Store, prefix string) *Limiter { return &Limiter{store: store, prefix: prefix} }

// Allow takes one token from the bucket named key with the given refill rate
// and burst at time now. It returns whether the request fits the budget.
// Keys are device ids, which compare ASCII-case-insensitively: INV-7 and
// inv-7 share one bucket.
func (l *Limiter) Allow(key string, perSecond float64, burst uint32, now time.Time) (bool, error) {
	if burst == 0 || perSecond <= 0 || math.IsNaN(perSecond) {
		return false, nil
	}
	l.key = append(l.key[:0], l.prefix...)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		l.key = append(l.key, c)
	}
	k := string(l.key)
	nowNs := now.UnixNano()
	for range shared.MaxAttempts {
		val, cas, err := l.store.Get(k)
		tokens := float64(burst)
		if err == nil && len(val) == 16 {
			tokens = math.Float64frombits(binary.LittleEndian.Uint64(val[0:8]))
			last := int64(binary.LittleEndian.Uint64(val[8:16]))
			if dt := nowNs - last; dt > 0 {
				tokens += float64(dt) / 1e9 * perSecond
			}
			if tokens > float64(burst) || math.IsNaN(tokens) {
				tokens = float64(burst)
			}
		} else if err != nil && !errors.Is(err, shared.ErrNotFound) {
			return false, fmt.Errorf("ratelimit: read %q: %w", k, err)
		} else {
			cas = 0
		}
		ok := tokens >= 1
		if ok {
			tokens--
		}
		binary.LittleEndian.PutUint64(l.buf[0:8], math.Float64bits(tokens))
		binary.LittleEndian.PutUint64(l.buf[8:16], uint64(nowNs))
		err = l.store.Set(k, l.buf[:], cas)
		if err == nil {
			return ok, nil
		}
		if !errors.Is(err, shared.ErrCASMismatch) {
			return false, fmt.Errorf("ratelimit: write %q: %w", k, err)
		}
	}
	return false, fmt.Errorf("ratelimit: %q: gave up after %d contended attempts", k, shared.MaxAttempts)
}
