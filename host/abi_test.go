package host

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEnvHostcallsNamed checks the env module as wazero registered it: every
// Proxy-Wasm 0.2.1 hostcall Envoy provides, once, each parameter named and
// typed as declared in its family, one i32 status result.
func TestEnvHostcallsNamed(t *testing.T) {
	ctx := context.Background()
	r, err := NewRuntime(ctx, RuntimeConfig{})
	require.NoError(t, err)
	defer r.Close(ctx)
	defs := r.rt.Module("env").ExportedFunctionDefinitions()
	assert.Len(t, defs, 39, "the env functions of ABI 0.2.0 and 0.2.1 (36 + continue_stream, close_stream, get_log_level)")
	seen := map[string]bool{}
	for _, fam := range envFamilies {
		for _, f := range fam {
			t.Run(f.name, func(t *testing.T) {
				assert.False(t, seen[f.name], "declared twice")
				seen[f.name] = true
				d, ok := defs[f.name]
				require.True(t, ok, "not exported")
				names := map[string]bool{}
				require.Len(t, d.ParamNames(), len(f.params))
				for i, p := range f.params {
					assert.NotEmpty(t, p.name)
					assert.False(t, names[p.name], "parameter %q named twice", p.name)
					names[p.name] = true
					assert.Equal(t, p.name, d.ParamNames()[i])
					assert.Equal(t, p.typ, d.ParamTypes()[i])
				}
				assert.Equal(t, []string{"status"}, d.ResultNames())
				assert.Equal(t, []uint8{i32}, d.ResultTypes())
			})
		}
	}
}
