package fs_test

import (
	"testing"

	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/distributor/state/fs"
	"github.com/meshguard/meshguard/distributor/state/statetest"
)

func TestConformance(t *testing.T) {
	statetest.Channels(t, func(t *testing.T) (state.Channels, func() state.Channels) {
		st, err := fs.Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		// One directory has one writer: the second handle is the same store.
		return st, func() state.Channels { return st }
	})
}
