package abi

import "unsafe"

// scratchSize covers the request headers and properties of ordinary
// requests; bigger ones fall back to the heap.
const scratchSize = 32 << 10

// scratch is the arena behind Scratch. A Proxy-Wasm VM is single-threaded,
// so one arena per module is enough.
var scratch struct {
	buf    []byte
	off    int
	active bool
}

func scratchBegin() bool {
	if scratch.active {
		return false
	}
	if scratch.buf == nil {
		scratch.buf = make([]byte, scratchSize)
	}
	scratch.active, scratch.off = true, 0
	return true
}

func scratchEnd() {
	scratch.active = false
	// Stale host data must not linger for a later reader to trust.
	clear(scratch.buf[:scratch.off])
	scratch.off = 0
}

// scratchAlloc returns size bytes of the arena, 8-byte aligned, or nil when
// no scope is active or the arena is full.
func scratchAlloc(size uint32) unsafe.Pointer {
	if !scratch.active {
		return nil
	}
	n := (int(size) + 7) &^ 7
	if scratch.off+n > len(scratch.buf) {
		return nil
	}
	p := unsafe.Pointer(&scratch.buf[scratch.off])
	scratch.off += n
	return p
}
