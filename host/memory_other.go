//go:build !(linux || darwin || freebsd)

package host

// mappedMemory is not available here: linearMemory falls back to slices.
type mappedMemory struct{ sliceMemory }

func reserveMemory(uint64) *mappedMemory { return nil }
