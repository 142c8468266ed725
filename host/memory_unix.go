//go:build linux || darwin || freebsd

package host

import (
	"golang.org/x/sys/unix"
)

// mappedMemory reserves max bytes of address space (PROT_NONE, no swap
// reservation) and makes pages readable and writable as the memory grows:
// the base address never changes and nothing is copied.
type mappedMemory struct {
	buf       []byte // the whole reservation
	committed uint64
}

func reserveMemory(max uint64) *mappedMemory {
	if max == 0 || max > 1<<32 {
		return nil
	}
	buf, err := unix.Mmap(-1, 0, int(max), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return &mappedMemory{buf: buf}
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	if size > m.committed {
		// Commit whole OS pages; fresh anonymous pages read as zero, as
		// memory.grow requires.
		page := uint64(unix.Getpagesize())
		end := min((size+page-1)/page*page, uint64(len(m.buf)))
		if err := unix.Mprotect(m.buf[m.committed:end], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil
		}
		m.committed = end
	}
	return m.buf[:size:size]
}

func (m *mappedMemory) Free() {
	if m.buf != nil {
		_ = unix.Munmap(m.buf)
		m.buf, m.committed = nil, 0
	}
}
