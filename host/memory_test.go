package host

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero/experimental"
)

func TestLinearMemoryGrowsInPlace(t *testing.T) {
	for name, m := range map[string]experimental.LinearMemory{
		"allocator": linearMemory().Allocate(0, 16<<16),
		"slice":     &sliceMemory{},
	} {
		t.Run(name, func(t *testing.T) {
			defer m.Free()
			if _, mapped := m.(*mappedMemory); name == "allocator" && runtime.GOOS == "linux" {
				require.True(t, mapped, "linux reserves address space")
			}
			b := m.Reallocate(1 << 16)
			require.Len(t, b, 1<<16)
			assert.Equal(t, make([]byte, 1<<16), b, "new memory reads as zero")
			b[0], b[len(b)-1] = 1, 2
			g := m.Reallocate(5 << 16)
			require.Len(t, g, 5<<16)
			assert.Equal(t, byte(1), g[0])
			assert.Equal(t, byte(2), g[1<<16-1])
			assert.Equal(t, make([]byte, 4<<16), g[1<<16:], "grown pages read as zero")
			g[len(g)-1] = 3
			if _, mapped := m.(*mappedMemory); mapped {
				assert.Equal(t, unsafe.Pointer(&b[0]), unsafe.Pointer(&g[0]), "the base address never moves")
				assert.Nil(t, m.Reallocate(17<<16), "beyond the reservation")
			}
		})
	}
}
