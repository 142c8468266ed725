package shared

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemoryCAS(t *testing.T) {
	s := NewMemory()
	_, _, err := s.Get("k")
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, s.Set("k", []byte("x"), 7), ErrCASMismatch, "a cas for a missing key")
	require.NoError(t, s.Set("k", []byte("a"), 0))
	v, cas, err := s.Get("k")
	require.NoError(t, err)
	assert.Equal(t, "a", string(v))
	v[0] = 'z' // values are copies
	require.NoError(t, s.Set("k", []byte("b"), cas))
	assert.ErrorIs(t, s.Set("k", []byte("c"), cas), ErrCASMismatch, "stale cas")
	v, cas2, _ := s.Get("k")
	assert.Equal(t, "b", string(v))
	assert.Greater(t, cas2, cas)
	require.NoError(t, s.Set("k", []byte("d"), 0), "cas 0 overwrites")
	assert.Equal(t, 1, s.Len())
}
