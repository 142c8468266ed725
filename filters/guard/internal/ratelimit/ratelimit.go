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
	"strconv"
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
	l.key = append(l.key[:0], l.prefix...)
	l.key = appendFold(l.key, key)
	ok, _, err := l.take(perSecond, burst, now)
	return ok, err
}

// Take is Allow for a key made of parts (joined with '/', each part
// length-prefixed so no two part lists share a key); a part is folded to
// lower case when fold says so. Refused, it also says how long until the
// bucket holds a token again.
func (l *Limiter) Take(parts []string, fold []bool, perSecond float64, burst uint32, now time.Time) (ok bool, wait time.Duration, err error) {
	l.key = append(l.key[:0], l.prefix...)
	for i, p := range parts {
		if i > 0 {
			l.key = append(l.key, '/')
		}
		l.key = strconv.AppendInt(l.key, int64(len(p)), 10)
		l.key = append(l.key, ':')
		if i < len(fold) && fold[i] {
			l.key = appendFold(l.key, p)
		} else {
			l.key = append(l.key, p...)
		}
	}
	return l.take(perSecond, burst, now)
}

func appendFold(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// take charges the bucket named l.key.
func (l *Limiter) take(perSecond float64, burst uint32, now time.Time) (bool, time.Duration, error) {
	if burst == 0 || perSecond <= 0 || math.IsNaN(perSecond) || math.IsInf(perSecond, 0) {
		return false, 0, nil
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
			return false, 0, fmt.Errorf("ratelimit: read %q: %w", k, err)
		} else {
			cas = 0
		}
		ok := tokens >= 1
		var wait time.Duration
		if ok {
			tokens--
		} else {
			wait = time.Duration(math.Ceil((1 - tokens) / perSecond * 1e9))
		}
		binary.LittleEndian.PutUint64(l.buf[0:8], math.Float64bits(tokens))
		binary.LittleEndian.PutUint64(l.buf[8:16], uint64(nowNs))
		err = l.store.Set(k, l.buf[:], cas)
		if err == nil {
			return ok, wait, nil
		}
		if !errors.Is(err, shared.ErrCASMismatch) {
			return false, 0, fmt.Errorf("ratelimit: write %q: %w", k, err)
		}
	}
	return false, 0, fmt.Errorf("ratelimit: %q: gave up after %d contended attempts", k, shared.MaxAttempts)
}

// RetryAfter is the Retry-After value (RFC 9110 §10.2.3, delay-seconds)
// for a wait: whole seconds rounded up, at least 1.
func RetryAfter(wait time.Duration) string {
	s := int64((wait + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
