package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a token bucket per identity key. Idle buckets are dropped.
type Limiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter allows perSecond units per identity with the given burst.
// perSecond <= 0 disables limiting.
func NewLimiter(perSecond float64, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	return &Limiter{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*bucket{}}
}

// Burst is the bucket size.
func (l *Limiter) Burst() int { return l.burst }

// Allow takes n units from key's bucket. When they are not available it
// takes nothing and says how long to wait; n above the burst can never pass.
func (l *Limiter) Allow(key string, n int) (bool, time.Duration) {
	if l == nil || l.limit <= 0 {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	if now.Sub(l.lastSweep) > time.Minute {
		l.lastSweep = now
		for k, v := range l.buckets {
			if now.Sub(v.seen) > 10*time.Minute {
				delete(l.buckets, k)
			}
		}
	}
	l.mu.Unlock()
	r := b.lim.ReserveN(now, n)
	if !r.OK() {
		return false, time.Duration(float64(n)/float64(l.limit)*float64(time.Second)) + time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
