package policies

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestGoldenErrors loads each bad file alone and compares every reported
// problem (file:line:col: message) with its .golden file.
func TestGoldenErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			_, err = Load(map[string][]byte{filepath.Base(f): data})
			require.Error(t, err)
			var list ErrorList
			require.True(t, errors.As(err, &list))
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -run TestGoldenErrors -update")
			require.Equal(t, string(want), got)
			for _, e := range list {
				require.Regexp(t, `^[a-z_]+\.yaml:[0-9]+:[0-9]+: .+`, e.Error())
			}
		})
	}
}
