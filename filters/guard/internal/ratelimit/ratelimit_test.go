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
