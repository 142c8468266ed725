package lease

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

func TestLease(t *testing.T) {
	st := shared.NewMemory()
	a := New(st, "lease", 1, 10*time.Second)
	b := New(st, "lease", 2, 10*time.Second)
	t0 := time.Unix(1000, 0)
	ok, err := a.Acquire(t0)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, _ = b.Acquire(t0.Add(time.Second))
	assert.False(t, ok, "held by a")
	ok, _ = a.Acquire(t0.Add(5 * time.Second))
	assert.True(t, ok, "a renews")
	ok, _ = b.Acquire(t0.Add(14 * time.Second))
	assert.False(t, ok, "renewal extended the lease")
	ok, _ = b.Acquire(t0.Add(16 * time.Second))
	assert.True(t, ok, "expired lease is taken over")
	ok, _ = a.Acquire(t0.Add(17 * time.Second))
	assert.False(t, ok)

	// Concurrent contenders: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := New(st, "lease2", uint64(10+i), time.Minute).Acquire(t0); ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, wins)
}
