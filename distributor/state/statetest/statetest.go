// Package statetest is the conformance suite every state.Channels
// implementation passes (the filesystem and PostgreSQL backends): commit
// and load, retention, the anti-rollback check under concurrency, and
// missing channels and revisions.
package statetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/state"
)

// Rev is revision n of a test bundle with its bytes.
func Rev(n uint64) (state.Revision, []byte) {
	data := fmt.Appendf(nil, "bundle %d", n)
	sum := sha256.Sum256(data)
	at := time.Date(2026, 12, 1, 0, 0, int(n%60), 0, time.UTC)
	return state.Revision{Revision: n, Digest: "sha256:" + hex.EncodeToString(sum[:]), Created: at,
		Expires: at.Add(24 * time.Hour), Published: at, Size: int64(len(data)), KeyID: "k1"}, data
}

// Channels runs the suite; open returns a fresh, empty store, and a second
// call with the same t another handle on the same store when shared.
func Channels(t *testing.T, open func(t *testing.T) (state.Channels, func() state.Channels)) {
	ctx := context.Background()
	t.Run("empty", func(t *testing.T) {
		st, _ := open(t)
		names, err := st.List(ctx)
		require.NoError(t, err)
		assert.Empty(t, names)
		revs, data, err := st.Load(ctx, "prod")
		require.NoError(t, err)
		assert.Empty(t, revs)
		assert.Nil(t, data)
		_, ok, err := st.Latest(ctx, "prod")
		require.NoError(t, err)
		assert.False(t, ok)
		_, err = st.Bundle(ctx, "prod", 1)
		assert.ErrorIs(t, err, state.ErrNotFound)
		require.NoError(t, st.Check(ctx))
	})
	t.Run("commit, load, retain", func(t *testing.T) {
		st, _ := open(t)
		for n := uint64(1); n <= 5; n++ {
			ri, data := Rev(n)
			require.NoError(t, st.Commit(ctx, "prod", ri, data, 3))
		}
		revs, data, err := st.Load(ctx, "prod")
		require.NoError(t, err)
		require.Len(t, revs, 3)
		want, wantData := Rev(5)
		assert.Equal(t, want, revs[2])
		assert.Equal(t, wantData, data)
		assert.Equal(t, []uint64{3, 4, 5}, []uint64{revs[0].Revision, revs[1].Revision, revs[2].Revision})
		latest, ok, err := st.Latest(ctx, "prod")
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, want, latest)
		_, err = st.Bundle(ctx, "prod", 2)
		assert.ErrorIs(t, err, state.ErrNotFound, "pruned")
		b, err := st.Bundle(ctx, "prod", 4)
		require.NoError(t, err)
		_, d4 := Rev(4)
		assert.Equal(t, d4, b)
		names, err := st.List(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{"prod"}, names)
	})
	t.Run("rollback and replay refused", func(t *testing.T) {
		st, _ := open(t)
		ri, data := Rev(8)
		require.NoError(t, st.Commit(ctx, "prod", ri, data, 10))
		for _, n := range []uint64{8, 7, 1} {
			ri, data := Rev(n)
			assert.ErrorIs(t, st.Commit(ctx, "prod", ri, data, 10), state.ErrConflict, "revision %d", n)
		}
		revs, _, err := st.Load(ctx, "prod")
		require.NoError(t, err)
		assert.Len(t, revs, 1, "a refused commit stores nothing")
	})
	t.Run("concurrent commits", func(t *testing.T) {
		st, other := open(t)
		stores := []state.Channels{st, other()}
		for round := uint64(0); round < 10; round++ {
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ri, data := Rev(10 + 2*round + uint64(i))
					errs[i] = stores[i].Commit(ctx, "prod", ri, data, 100)
				}()
			}
			wg.Wait()
			require.NoError(t, errs[1], "the higher revision always commits")
			if errs[0] != nil {
				require.ErrorIs(t, errs[0], state.ErrConflict)
			}
			latest, _, err := stores[0].Latest(ctx, "prod")
			require.NoError(t, err)
			require.Equal(t, 11+2*round, latest.Revision)
		}
	})
}
