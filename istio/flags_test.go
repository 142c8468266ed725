package istio

import (
	"fmt"
	"io"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// files is a ReadFunc over named contents.
func files(m map[string]string) func(what, path string) ([]byte, error) {
	return func(what, path string) ([]byte, error) {
		b, ok := m[path]
		if !ok {
			return nil, fmt.Errorf("%s: open %s: no such file", what, path)
		}
		return []byte(b), nil
	}
}

func TestFlagsOptions(t *testing.T) {
	read := files(map[string]string{"keys.jwk": `{"keys":[]}`, "m.wasm": "\x00asm", "c.wasm": "\x00asm2"})
	tr, st := true, false
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, o Options, c *Canary)
		err   string
	}{
		{"defaults", nil, func(t *testing.T, o Options, c *Canary) {
			assert.Equal(t, DefaultName, o.Name)
			assert.Equal(t, DefaultNamespace, o.Namespace)
			assert.Nil(t, o.Priority, "unset, not 0")
			assert.Nil(t, o.Distributor)
			assert.Nil(t, c)
			assert.True(t, o.Guard.PeerCertificate)
		}, ""},
		{"everything", []string{"-n", "grid", "--url", "oci://r.example/g:v1", "--sha256", "abc", "--priority", "0", "--fail-open",
			"--target-ref", "Gateway/gw", "--target-ref", "gateway.networking.k8s.io/Gateway/gw2", "--port", "8080",
			"--env", "B=2", "--env", "A=1", "--host-env", "POD_NAME", "--verify-keys", "keys.jwk", "--channel", "grid",
			"--distributor", "https://d:8443", "--distributor-tls", "SIMPLE", "--distributor-ca", "/ca.pem", "--service-entry",
			"--module", "m.wasm", "--canary-url", "http://x/c.wasm", "--canary-module", "c.wasm"},
			func(t *testing.T, o Options, c *Canary) {
				assert.Equal(t, "grid", o.Namespace)
				require.NotNil(t, o.Priority)
				assert.Equal(t, int32(0), *o.Priority, "--priority 0 is set")
				assert.Equal(t, "FAIL_OPEN", o.FailStrategy)
				assert.Equal(t, []TargetRef{{Kind: "Gateway", Name: "gw"}, {Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "gw2"}}, o.TargetRefs)
				assert.Equal(t, []uint32{8080}, o.Ports)
				assert.Equal(t, []EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "POD_NAME", FromHost: true}}, o.Env)
				assert.Equal(t, `{"keys":[]}`, string(o.Guard.VerifyKeys))
				assert.Equal(t, &Distributor{URL: "https://d:8443", TLSMode: "SIMPLE", CACertificates: "/ca.pem", ServiceEntry: &tr}, o.Distributor)
				assert.Equal(t, "\x00asm", string(o.ModuleFile))
				assert.Equal(t, &Canary{URL: "http://x/c.wasm", ModuleFile: []byte("\x00asm2")}, c)
			}, ""},
		{"no service entry", []string{"--distributor", "http://d.svc", "--no-service-entry"}, func(t *testing.T, o Options, _ *Canary) {
			assert.Equal(t, &st, o.Distributor.ServiceEntry)
		}, ""},
		{"both service entry flags", []string{"--distributor", "http://d", "--no-service-entry", "--service-entry"}, nil, "contradict"},
		{"fail-open against fail-strategy", []string{"--fail-open", "--fail-strategy", "FAIL_RELOAD"}, nil, "--fail-open contradicts --fail-strategy FAIL_RELOAD"},
		{"target ref", []string{"--target-ref", "gw"}, nil, "want [GROUP/]KIND/NAME"},
		{"port out of range", []string{"--port", "70000"}, nil, "not a port"},
		{"env without =", []string{"--env", "A"}, nil, "want NAME=VALUE"},
		{"missing file", []string{"--verify-keys", "nope.jwk"}, nil, "--verify-keys: open nope.jwk"},
		{"missing trust domain bundle", []string{"--jwt-trust-domain", "grid.example=nope.json"}, nil, "--jwt-trust-domain grid.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Flags
			fs := pflag.NewFlagSet("istio", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f.AddFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			o, err := f.Options(read)
			if err == nil {
				var c *Canary
				c, err = f.Canary(read)
				if tc.err == "" {
					require.NoError(t, err)
					tc.check(t, o, c)
					return
				}
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
	// Enum flags refuse unknown words when parsed.
	for _, args := range [][]string{{"--fail-strategy", "FAIL_CLOSED"}, {"--phase", "authz"}, {"--match-mode", "BOTH"},
		{"--image-pull-policy", "Never"}, {"--distributor-tls", "MUTUAL"}, {"--mode", "audit"}} {
		var f Flags
		fs := pflag.NewFlagSet("istio", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.AddFlags(fs)
		assert.ErrorContains(t, fs.Parse(args), "is not one of", args)
	}
}
