package host

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPairsRoundTrip(t *testing.T) {
	cases := []Headers{
		{},
		{{":path", "/v1/meters/7"}},
		{{"a", ""}, {"", "b"}, {"x-multi", "1"}, {"x-multi", "2"}},
	}
	for _, h := range cases {
		b := EncodePairs(nil, h)
		assert.Len(t, b, encodedPairsSize(h))
		got, ok := DecodePairs(b)
		require.True(t, ok)
		assert.Equal(t, len(h), len(got))
		for i := range h {
			assert.Equal(t, h[i], got[i])
		}
	}
}

func TestDecodePairsRejectsLikeEnvoy(t *testing.T) {
	valid := EncodePairs(nil, Headers{{"k", "v"}})
	tooMany := binary.LittleEndian.AppendUint32(nil, maxPairsCount+1)
	big := EncodePairs(nil, Headers{{"k", string(make([]byte, maxPairsBytes))}})
	cases := map[string][]byte{
		"empty":            nil,
		"short count":      {1, 0},
		"trailing byte":    append(append([]byte{}, valid...), 0),
		"truncated":        valid[:len(valid)-1],
		"missing NUL":      append(append([]byte{}, valid[:len(valid)-1]...), 'x'),
		"count over limit": tooMany,
		"over 1 MiB":       big,
		"sizes beyond end": {1, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, ok := DecodePairs(b)
			assert.False(t, ok)
		})
	}
	// Exactly 1024 pairs is allowed.
	h := make(Headers, maxPairsCount)
	for i := range h {
		h[i] = [2]string{"k", "v"}
	}
	_, ok := DecodePairs(EncodePairs(nil, h))
	assert.True(t, ok)
}

func TestHeadersEdit(t *testing.T) {
	h := Headers{{"a", "1"}, {"b", "2"}, {"a", "3"}}
	h.replace("A", "9")
	assert.Equal(t, Headers{{"a", "9"}, {"b", "2"}}, h)
	h.add("C", "x")
	h.remove("b")
	assert.Equal(t, Headers{{"a", "9"}, {"c", "x"}}, h)
	v, ok := h.Get("C")
	assert.True(t, ok)
	assert.Equal(t, "x", v)
}

func FuzzDecodePairs(f *testing.F) {
	f.Add(EncodePairs(nil, Headers{{":method", "GET"}, {"x", "y"}}))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := DecodePairs(b)
		if !ok {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		assert.Equal(t, b, EncodePairs(nil, h))
	})
}
