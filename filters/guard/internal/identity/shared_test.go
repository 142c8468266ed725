package identity

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// twoWorkers returns two verifiers for the same trust domain sharing store,
// as two worker VMs of one proxy would.
func twoWorkers(t *testing.T, store *shared.Memory, slots int, s *signer) (*SVIDVerifier, *SVIDVerifier) {
	var out [2]*SVIDVerifier
	for i := range out {
		v, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(t, s)}, []string{"a"}, false, 16)
		require.NoError(t, err)
		v.Share(NewSharedCache(store, "tok/svid/", slots))
		out[i] = v
	}
	return out[0], out[1]
}

func TestSharedCache(t *testing.T) {
	grid := newEC(t, "grid-1")
	sub := "spiffe://grid.example/w"
	tok := grid.sign(t, claims(sub, "a", now.Add(time.Minute)), nil)

	t.Run("second worker does not verify again", func(t *testing.T) {
		store := shared.NewMemory()
		w1, w2 := twoWorkers(t, store, 8, grid)
		s1, err := w1.Verify(tok, now)
		require.NoError(t, err)
		s2, err := w2.Verify(tok, now)
		require.NoError(t, err)
		assert.Equal(t, s1.ID, s2.ID)
		assert.Equal(t, uint64(1), w1.Signatures())
		assert.Equal(t, uint64(0), w2.Signatures())
		assert.Equal(t, uint64(1), w2.sig.shared.Hits)
		assert.Equal(t, 1, store.Len())
	})
	t.Run("bounded by slots", func(t *testing.T) {
		store := shared.NewMemory()
		w1, _ := twoWorkers(t, store, 4, grid)
		for i := range 50 {
			_, err := w1.Verify(grid.sign(t, withClaim(claims(sub, "a", now.Add(time.Minute)), "n", i), nil), now)
			require.NoError(t, err)
		}
		assert.LessOrEqual(t, store.Len(), 4)
	})
	t.Run("a different token in the same slot never hits", func(t *testing.T) {
		store := shared.NewMemory()
		w1, w2 := twoWorkers(t, store, 1, grid) // one slot: every token collides
		_, err := w1.Verify(tok, now)
		require.NoError(t, err)
		forged := swapSig(grid.sign(t, claims("spiffe://grid.example/admin", "a", now.Add(time.Minute)), nil), tok)
		_, err = w2.Verify(forged, now)
		require.ErrorIs(t, err, ErrSignature)
		assert.Equal(t, uint64(1), w2.Signatures())
	})
	t.Run("other audience still checked on a shared hit", func(t *testing.T) {
		store := shared.NewMemory()
		w1, _ := twoWorkers(t, store, 8, grid)
		_, err := w1.Verify(tok, now)
		require.NoError(t, err)
		strict, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(t, grid)}, []string{"other"}, false, 16)
		require.NoError(t, err)
		strict.Share(NewSharedCache(store, "tok/svid/", 8))
		_, err = strict.Verify(tok, now)
		require.ErrorIs(t, err, ErrAudience)
	})
	t.Run("rotated key: entry not honoured", func(t *testing.T) {
		store := shared.NewMemory()
		w1, _ := twoWorkers(t, store, 8, grid)
		_, err := w1.Verify(tok, now)
		require.NoError(t, err)
		// Same kid, different key material: the entry's fingerprint differs.
		other := newEC(t, "grid-1")
		w3, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(t, other)}, []string{"a"}, false, 16)
		require.NoError(t, err)
		w3.Share(NewSharedCache(store, "tok/svid/", 8))
		_, err = w3.Verify(tok, now)
		require.ErrorIs(t, err, ErrSignature)
		assert.Equal(t, uint64(1), w3.Signatures())
	})
	t.Run("expiry honoured", func(t *testing.T) {
		store := shared.NewMemory()
		w1, w2 := twoWorkers(t, store, 8, grid)
		_, err := w1.Verify(tok, now)
		require.NoError(t, err)
		_, err = w2.Verify(tok, now.Add(time.Hour))
		require.ErrorIs(t, err, ErrExpired)
		// A stale entry (exp in the past) is ignored even if claims were to pass.
		sum := sha256.Sum256([]byte(tok))
		key, _ := w1.trustDomains["grid.example"].Lookup("grid-1")
		w1.sig.shared.record(&sum, key, now.Add(-time.Hour))
		assert.False(t, w2.sig.shared.verified(&sum, key, now))
	})
	t.Run("malformed entries are misses", func(t *testing.T) {
		store := shared.NewMemory()
		w1, w2 := twoWorkers(t, store, 1, grid)
		for _, v := range [][]byte{nil, {sharedVersion}, make([]byte, sharedHeader+6)} {
			require.NoError(t, store.Set(w1.sig.shared.prefix+"0", v, 0))
			_, err := w2.Verify(tok, now)
			require.NoError(t, err)
			w2.cache.Clear()
		}
		assert.Equal(t, uint64(3), w2.Signatures())
	})
}
