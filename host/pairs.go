package host

import (
	"encoding/binary"
	"strings"
)

// Envoy's limits for header pairs handed in by a module (proxy-wasm-cpp-host
// PROXY_WASM_HOST_PAIRS_MAX_BYTES / _MAX_COUNT).
const (
	maxPairsBytes = 1 << 20
	maxPairsCount = 1024
)

// Headers is an ordered header map; keys are lower case as in Envoy.
type Headers [][2]string

// Get returns the first value of key (case-insensitive) and whether it exists.
func (h Headers) Get(key string) (string, bool) {
	for _, kv := range h {
		if strings.EqualFold(kv[0], key) {
			return kv[1], true
		}
	}
	return "", false
}

// Clone returns a copy that shares no backing array with h.
func (h Headers) Clone() Headers { return append(Headers(nil), h...) }

func (h *Headers) add(k, v string) { *h = append(*h, [2]string{strings.ToLower(k), v}) }

func (h *Headers) replace(k, v string) {
	k = strings.ToLower(k)
	for i, kv := range *h {
		if kv[0] == k {
			(*h)[i][1] = v
			h.removeFrom(k, i+1)
			return
		}
	}
	h.add(k, v)
}

func (h *Headers) remove(k string) { h.removeFrom(strings.ToLower(k), 0) }

func (h *Headers) removeFrom(k string, from int) {
	out := (*h)[:from]
	for _, kv := range (*h)[from:] {
		if kv[0] != k {
			out = append(out, kv)
		}
	}
	*h = out
}

func (h Headers) byteSize() int {
	n := 0
	for _, kv := range h {
		n += len(kv[0]) + len(kv[1])
	}
	return n
}

// encodedPairsSize is the wire size of h in the Proxy-Wasm pairs format.
func encodedPairsSize(h Headers) int {
	n := 4
	for _, kv := range h {
		n += 8 + len(kv[0]) + 1 + len(kv[1]) + 1
	}
	return n
}

// EncodePairs writes h in the Proxy-Wasm pairs format: little-endian u32
// count, count × (u32 key length, u32 value length), then every key and value
// followed by a NUL byte.
func EncodePairs(dst []byte, h Headers) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, 4+8*len(h))...)
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(h)))
	for i, kv := range h {
		binary.LittleEndian.PutUint32(dst[start+4+8*i:], uint32(len(kv[0])))
		binary.LittleEndian.PutUint32(dst[start+8+8*i:], uint32(len(kv[1])))
	}
	for _, kv := range h {
		dst = append(dst, kv[0]...)
		dst = append(dst, 0)
		dst = append(dst, kv[1]...)
		dst = append(dst, 0)
	}
	return dst
}

// DecodePairs parses the Proxy-Wasm pairs format the way Envoy does: input
// over 1 MiB, over 1024 pairs, truncated, missing NUL terminators or with
// trailing bytes yields ok=false (Envoy then treats it as no pairs at all).
func DecodePairs(b []byte) (h Headers, ok bool) {
	if len(b) > maxPairsBytes || len(b) < 4 {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxPairsCount {
		return nil, false
	}
	sizesEnd := 4 + 8*int(n)
	if sizesEnd > len(b) {
		return nil, false
	}
	h = make(Headers, n)
	pos := sizesEnd
	for i := range int(n) {
		kl := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if kl > len(b)-pos-1 || b[pos+kl] != 0 {
			return nil, false
		}
		k := string(b[pos : pos+kl])
		pos += kl + 1
		if vl > len(b)-pos-1 || b[pos+vl] != 0 {
			return nil, false
		}
		h[i] = [2]string{k, string(b[pos : pos+vl])}
		pos += vl + 1
	}
	if pos != len(b) {
		return nil, false
	}
	return h, true
}
