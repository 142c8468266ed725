package host

import "github.com/tetratelabs/wazero/experimental"

// Linear memory. Without an allocator, wazero backs a linear memory with a
// Go slice and grows it by reallocation, copying the whole memory each time
// the guest's heap grows (tens of MB for a large policy set) and leaving the
// old copy to the host's GC. Envoy's engines reserve the address range once
// and commit pages as the guest grows, so growth costs no copy. The host
// does the same where it can map memory (see memory_unix.go) and falls back
// to a slice that grows by doubling elsewhere.

// linearMemory returns the allocator VMs use.
func linearMemory() experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capacity, max uint64) experimental.LinearMemory {
		if m := reserveMemory(max); m != nil {
			return m
		}
		return &sliceMemory{buf: make([]byte, 0, capacity)}
	})
}

// sliceMemory grows a Go slice, doubling its capacity.
type sliceMemory struct{ buf []byte }

func (m *sliceMemory) Reallocate(size uint64) []byte {
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	nb := make([]byte, size, max(size, 2*uint64(cap(m.buf))))
	copy(nb, m.buf)
	m.buf = nb
	return m.buf
}

func (m *sliceMemory) Free() { m.buf = nil }
