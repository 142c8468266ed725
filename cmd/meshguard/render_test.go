package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
)

// runFresh runs a newly built command so flag values never leak between runs.
func runFresh(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

const keysFile = "../../istio/testdata/verify-keys.json"

// TestRenderIstioKustomizeMatchesCheckedIn regenerates istio/base and
// istio/overlays through the CLI and compares them with the checked-in files.
func TestRenderIstioKustomizeMatchesCheckedIn(t *testing.T) {
	dir := t.TempDir()
	_, err := runFresh(t, newRenderIstioCmd(), "--kustomize", dir, "-n", "grid",
		"--url", "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.4.0",
		"--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
		"--priority", "10", "--image-pull-policy", "IfNotPresent", "--image-pull-secret", "meshguard-pull",
		"--env", "MESHGUARD_ZONE=north", "--host-env", "POD_NAME",
		"--verify-keys", keysFile, "--channel", "grid-prod",
		"--jwt-audience", "spiffe://grid.example/meshguard", "--jwt-trust-domain", "grid.example=../../istio/testdata/grid-jwt-bundle.json", "--audit",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--distributor-ca", "/etc/meshguard/distributor-ca.pem",
		"--canary-url", "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.5.0-rc.1",
		"--canary-sha256", "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0")
	require.NoError(t, err)
	for _, p := range []string{"base/kustomization.yaml", "base/wasmplugin.yaml", "base/distributor.yaml", "base/peerauthentication.yaml",
		"overlays/canary/kustomization.yaml", "overlays/canary/wasmplugin-canary.yaml"} {
		want, err := os.ReadFile(filepath.Join("../../istio", p))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, p))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), p)
	}
}

func TestRenderKumaMatchesExample(t *testing.T) {
	mod := filepath.Join(t.TempDir(), "guard.wasm")
	require.NoError(t, os.WriteFile(mod, []byte("\x00asm\x01\x00\x00\x00meshguard example module"), 0o644))
	out, err := runFresh(t, newRenderKumaCmd(), "--label", "app=meter-api",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--distributor-ca", "/var/run/secrets/meshguard/distributor-ca.pem",
		"--module-url", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443/modules/meshguard/guard/v1.4.0.wasm",
		"--module", mod, "--env", "MESHGUARD_ZONE=north",
		"--verify-keys", keysFile, "--channel", "grid-prod", "--audit")
	require.NoError(t, err)
	want, err := os.ReadFile("../../kuma/examples/remote-module.yaml")
	require.NoError(t, err)
	assert.Contains(t, string(want), out)
}

func TestRenderEnvoy(t *testing.T) {
	out, err := runFresh(t, newRenderEnvoyCmd(), "--distributor", "http://127.0.0.1:8080",
		"--module-url", "http://127.0.0.1:8080/modules/meshguard/guard/v1.wasm",
		"--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"--verify-keys", keysFile, "--channel", "dev")
	require.NoError(t, err)
	var doc struct {
		HTTPFilters []any `json:"http_filters"`
		Clusters    []any `json:"clusters"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(out), &doc))
	require.Len(t, doc.HTTPFilters, 2)
	require.Len(t, doc.Clusters, 1)
	ry, _ := yaml.Marshal(doc.HTTPFilters[0])
	_, err = envoy.DecodeOneURISANFilter(ry)
	require.NoError(t, err)
	fy, _ := yaml.Marshal(doc.HTTPFilters[1])
	_, _, err = envoy.DecodeHTTPFilter(fy)
	require.NoError(t, err)
	cy, _ := yaml.Marshal(doc.Clusters[0])
	_, err = envoy.DecodeCluster(cy)
	require.NoError(t, err)
}

func TestRenderExitCodes(t *testing.T) {
	tests := []struct {
		name string
		cmd  *cobra.Command
		args []string
		code int
	}{
		{"invalid options", newRenderIstioCmd(), []string{"--url", "ftp://x", "--verify-keys", keysFile, "--inline-bundle", keysFile}, 1},
		{"missing file", newRenderIstioCmd(), []string{"--url", "oci://r/g:v1", "--verify-keys", "/nonexistent"}, 2},
		{"bad target ref", newRenderIstioCmd(), []string{"--url", "oci://r/g:v1", "--target-ref", "x"}, 2},
		{"sha mismatch", newRenderKumaCmd(), []string{"--module", keysFile, "--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}, 2},
		{"no module", newRenderEnvoyCmd(), []string{"--verify-keys", keysFile, "--inline-bundle", keysFile}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runFresh(t, tc.cmd, tc.args...)
			var ee *exitError
			require.True(t, errors.As(err, &ee), "%v", err)
			assert.Equal(t, tc.code, ee.code, "%v", err)
		})
	}
}

func TestRenderKumaUniversal(t *testing.T) {
	args := []string{"--label", "app=meter-api", "--mesh", "grid",
		"--distributor", "https://meshguard-distributor.example:8443",
		"--module-url", "https://meshguard-distributor.example:8443/modules/meshguard/guard/v1.4.0.wasm",
		"--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"--verify-keys", keysFile, "--channel", "grid-prod"}
	k8s, err := runFresh(t, newRenderKumaCmd(), args...)
	require.NoError(t, err)
	uni, err := runFresh(t, newRenderKumaCmd(), append(args, "--universal")...)
	require.NoError(t, err)
	var kobj, uobj map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(k8s), &kobj))
	require.NoError(t, yaml.UnmarshalStrict([]byte(uni), &uobj))
	assert.Equal(t, map[string]any{"type": "MeshProxyPatch", "mesh": "grid", "name": "meshguard-guard", "spec": kobj["spec"]}, uobj)

	// A local module is a path on the dataplane's host: no ContainerPatch.
	uni, err = runFresh(t, newRenderKumaCmd(), "--universal", "--local-module", "/opt/meshguard/guard.wasm",
		"--verify-keys", keysFile, "--channel", "grid-prod", "--distributor", "https://d.example:8443")
	require.NoError(t, err)
	assert.NotContains(t, uni, "ContainerPatch")
	assert.NotContains(t, uni, "---")
	assert.Contains(t, uni, "/opt/meshguard/guard.wasm")
}
