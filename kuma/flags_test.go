package kuma

import (
	"io"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

func TestFlagsOptionsAndUniversal(t *testing.T) {
	read := func(what, path string) ([]byte, error) { return []byte("\x00asm"), nil }
	var f Flags
	fs := pflag.NewFlagSet("kuma", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--mesh", "grid", "--label", "app=meter", "--module", "m.wasm", "--module-url", "https://d:8443/modules/g/v1.wasm",
		"--distributor", "https://d:8443", "--distributor-ca", "/ca.pem", "--fail-open", "--env", "A=1", "--universal",
		"--verify-keys", "k", "--channel", "grid"}))
	o, err := f.Options(read)
	require.NoError(t, err)
	assert.Equal(t, "grid", o.Mesh)
	assert.Equal(t, map[string]string{"app": "meter"}, o.Labels)
	assert.Equal(t, "cd5d4935a48c0672cb06407bb443bc0087aff947c6b864bac886982c73b3027f", o.ModuleSHA256, "computed from --module")
	assert.Equal(t, "https://d:8443", o.Distributor)
	assert.Equal(t, "/ca.pem", o.DistributorCA)
	assert.True(t, o.FailOpen)
	assert.Equal(t, map[string]string{"A": "1"}, o.Env)
	assert.True(t, f.Universal)

	// A --sha256 that the module file contradicts.
	require.NoError(t, fs.Parse([]string{"--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}))
	_, err = f.Options(read)
	assert.ErrorContains(t, err, "does not match the module file's")

	o.Guard.VerifyKeys = []byte(`{"keys":[]}`)
	r, err := Render(o)
	require.NoError(t, err)
	y, err := r.UniversalYAML()
	require.NoError(t, err)
	var u map[string]any
	require.NoError(t, yaml.UnmarshalStrict(y, &u))
	assert.Equal(t, "MeshProxyPatch", u["type"])
	assert.Equal(t, "grid", u["mesh"])
	assert.Equal(t, DefaultName, u["name"])
	assert.Equal(t, r.MeshProxyPatch["spec"], u["spec"])
}
