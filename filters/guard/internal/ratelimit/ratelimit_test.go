package ratelimit

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// racyStore is shared data where, once, another worker writes between a
// Get and the next Set.
type racyStore struct {
	*shared.Memory
	race func()
}

func (s *racyStore) Set(k string, v []byte, cas uint32) error {
	if r := s.race; r != nil {
		s.race = nil
		r()
	}
	return s.Memory.Set(k, v, cas)
}

func TestBucket(t *testing.T) {
	st := &racyStore{Memory: shared.NewMemory()}
	l := New(st, "rl/")
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		ok, err := l.Allow("inv-1", 1, 3, t0)
		require.NoError(t, err)
		assert.True(t, ok, "token %d", i)
	}
	ok, err := l.Allow("inv-1", 1, 3, t0)
	require.NoError(t, err)
	assert.False(t, ok, "burst exhausted")
	ok, _ = l.Allow("inv-2", 1, 3, t0)
	assert.True(t, ok, "other device has its own bucket")
	ok, _ = l.Allow("inv-1", 1, 3, t0.Add(1100*time.Millisecond))
	assert.True(t, ok, "refilled one token")
	ok, _ = l.Allow("inv-1", 1, 3, t0.Add(1200*time.Millisecond))
	assert.False(t, ok)
	ok, _ = l.Allow("inv-1", 0, 3, t0)
	assert.False(t, ok, "zero rate never allows")
}

func TestCASRetry(t *testing.T) {
	st := &racyStore{Memory: shared.NewMemory()}
	a, b := New(st, "rl/"), New(st, "rl/")
	t0 := time.Unix(1000, 0)
	_, err := a.Allow("d", 1, 2, t0) // 1 left
	require.NoError(t, err)
	// b's write lands between a's read and a's write: a must retry and see it.
	st.race = func() {
		ok, err := b.Allow("d", 1, 2, t0)
		require.NoError(t, err)
		require.True(t, ok)
	}
	ok, err := a.Allow("d", 1, 2, t0)
	require.NoError(t, err)
	assert.False(t, ok, "a must see b's spend after retrying")
}

func TestSharedAcrossWorkers(t *testing.T) {
	st := &racyStore{Memory: shared.NewMemory()}
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := New(st, "rl/")
			for range 50 {
				ok, err := l.Allow("d", 1, 20, t0)
				assert.NoError(t, err)
				if ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 20, allowed)
}

func TestTake(t *testing.T) {
	st := shared.NewMemory()
	l := New(st, "cl/")
	t0 := time.Unix(1000, 0)
	take := func(parts []string, fold []bool, at time.Time) (bool, time.Duration) {
		ok, wait, err := l.Take(parts, fold, 0.5, 2, at)
		require.NoError(t, err)
		return ok, wait
	}
	id := []string{"r1", "workload", "spiffe://td/ns/A"}
	for range 2 {
		ok, _ := take(id, nil, t0)
		assert.True(t, ok)
	}
	ok, wait := take(id, nil, t0)
	assert.False(t, ok)
	assert.Equal(t, 2*time.Second, wait, "one token at 0.5/s")
	assert.Equal(t, "2", RetryAfter(wait))
	ok, _ = take([]string{"r1", "workload", "spiffe://td/ns/a"}, nil, t0)
	assert.True(t, ok, "SPIFFE IDs are case-sensitive: another caller")
	ok, _ = take([]string{"r2", "workload", "spiffe://td/ns/A"}, nil, t0)
	assert.True(t, ok, "another rule's bucket")
	// Parts are length-prefixed: "a/b"+"c" and "a"+"b/c" are two keys.
	ok, _ = take([]string{"a/b", "c"}, nil, t0)
	assert.True(t, ok)
	ok, _ = take([]string{"a/b", "c"}, nil, t0)
	assert.True(t, ok)
	ok, _ = take([]string{"a", "b/c"}, nil, t0)
	assert.True(t, ok, "a different key from a/b + c")
	// Folded parts share a bucket however they are spelt.
	dev := []bool{false, false, true}
	take([]string{"r3", "device", "INV-1"}, dev, t0)
	take([]string{"r3", "device", "inv-1"}, dev, t0)
	ok, wait = take([]string{"r3", "device", "Inv-1"}, dev, t0)
	assert.False(t, ok)
	// After 1.5 s the bucket holds 0.75 tokens: half a second to wait.
	ok, wait = take(id, nil, t0.Add(1500*time.Millisecond))
	assert.False(t, ok)
	assert.Equal(t, 500*time.Millisecond, wait.Round(time.Millisecond))
	assert.Equal(t, "1", RetryAfter(wait))
	assert.Equal(t, "1", RetryAfter(0))
	assert.Equal(t, "3", RetryAfter(2*time.Second+time.Nanosecond))
}
