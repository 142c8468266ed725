package envoy

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStandaloneFlags(t *testing.T) {
	contents := map[string]string{"cfg.yaml": "mode: dry-run\n", "keys": `{"keys":[]}`, "tok": " secret \n", "td.json": `{"keys":[]}`}
	read := func(what, path string) ([]byte, error) {
		b, ok := contents[path]
		if !ok {
			return nil, errors.New(what + ": no such file")
		}
		return []byte(b), nil
	}
	parse := func(args ...string) *StandaloneFlags {
		var f StandaloneFlags
		fs := pflag.NewFlagSet("envoy", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.AddFlags(fs)
		require.NoError(t, fs.Parse(args))
		return &f
	}
	s, err := parse("--verify-keys", "keys", "--token-file", "tok", "--channel", "grid", "--poll-interval", "5s", "--mode", "dry-run",
		"--expiry-grace", "1h", "--jwt-audience", "a", "--jwt-trust-domain", "grid.example=td.json", "--jwt-trust-domain", "other.example",
		"--audit", "--log-allows", "--istio-peer-metadata", "--distributor", "http://127.0.0.1:8080", "--distributor-ca", "/ca",
		"--module-url", "http://127.0.0.1:8080/modules/g/v1.wasm", "--sha256", "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
		"--env", "A=1", "--host-env", "POD", "--fail-open", "--plugin-name", "p", "--root-id", "r", "--vm-id", "v").Standalone(read)
	require.NoError(t, err)
	g := s.Guard
	assert.Equal(t, `{"keys":[]}`, string(g.VerifyKeys))
	assert.Equal(t, "secret", g.Token)
	assert.Equal(t, "grid", g.Channel)
	assert.Equal(t, 5*time.Second, g.PollInterval)
	assert.Equal(t, "dry-run", g.Mode)
	assert.Equal(t, time.Hour, g.ExpiryGrace)
	assert.Equal(t, map[string][]byte{"grid.example": []byte(`{"keys":[]}`), "other.example": nil}, g.JWTTrustDomains)
	assert.True(t, g.AuditSink && g.LogAllows && g.IstioPeerMetadata && g.PeerCertificate)
	assert.Equal(t, &Upstream{Host: "127.0.0.1", Port: 8080, CAFile: "/ca"}, s.Distributor)
	assert.Equal(t, "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", s.Filter.Module.SHA256, "normalised by the renderer")
	assert.Equal(t, map[string]string{"A": "1"}, s.Filter.Env)
	assert.Equal(t, []string{"POD"}, s.Filter.HostEnv)
	assert.True(t, s.Filter.FailOpen)
	assert.Equal(t, Filter{PluginName: "p", RootID: "r", VMID: "v"}, Filter{PluginName: s.Filter.PluginName, RootID: s.Filter.RootID, VMID: s.Filter.VMID})

	// A configuration file turns the peer-certificate default off (the file says).
	s, err = parse("--config", "cfg.yaml").Standalone(read)
	require.NoError(t, err)
	assert.Equal(t, "mode: dry-run\n", string(s.Guard.File))
	assert.False(t, s.Guard.PeerCertificate)

	for args, msg := range map[string][]string{
		"--verify-keys: no such file": {"--verify-keys", "none"},
		"want NAME=VALUE":             {"--env", "=1"},
		"does not match":              {"--module", "keys", "--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		"--module: no such file":      {"--module", "none.wasm"},
	} {
		_, err := parse(msg...).Standalone(read)
		assert.ErrorContains(t, err, args)
	}
	sum, err := FileSHA256([]byte{}, "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
	require.NoError(t, err)
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sum)
}
