package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
)

const keysFile = "../../istio/testdata/verify-keys.json"

// TestRenderIstioKustomizeMatchesCheckedIn regenerates istio/base and
// istio/overlays through the CLI and compares them with the checked-in files.
func TestRenderIstioKustomizeMatchesCheckedIn(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "render", "istio", "--kustomize", dir, "-n", "grid",
		"--url", "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.4.0",
		"--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
		"--priority", "10", "--image-pull-policy", "IfNotPresent", "--image-pull-secret", "meshguard-pull",
		"--env", "MESHGUARD_ZONE=north", "--host-env", "POD_NAME",
		"--verify-keys", keysFile, "--channel", "grid-prod",
		"--jwt-audience", "spiffe://grid.example/meshguard", "--jwt-trust-domain", "grid.example=../../istio/testdata/grid-jwt-bundle.json", "--audit",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--distributor-ca", "/etc/meshguard/distributor-ca.pem",
		"--canary-url", "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.5.0-rc.1",
		"--canary-sha256", "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0").ok(t)
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
	r := runCLI(t, "render", "kuma", "--label", "app=meter-api",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--distributor-ca", "/var/run/secrets/meshguard/distributor-ca.pem",
		"--module-url", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443/modules/meshguard/guard/v1.4.0.wasm",
		"--module", mod, "--env", "MESHGUARD_ZONE=north",
		"--verify-keys", keysFile, "--channel", "grid-prod", "--audit").ok(t)
	want, err := os.ReadFile("../../kuma/examples/remote-module.yaml")
	require.NoError(t, err)
	assert.Contains(t, string(want), r.stdout)
}

func TestRenderEnvoy(t *testing.T) {
	r := runCLI(t, "render", "envoy", "--distributor", "http://127.0.0.1:8080",
		"--module-url", "http://127.0.0.1:8080/modules/meshguard/guard/v1.wasm",
		"--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"--verify-keys", keysFile, "--channel", "dev").ok(t)
	var doc struct {
		HTTPFilters []any `json:"http_filters"`
		Clusters    []any `json:"clusters"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(r.stdout), &doc))
	require.Len(t, doc.HTTPFilters, 2)
	require.Len(t, doc.Clusters, 1)
	ry, _ := yaml.Marshal(doc.HTTPFilters[0])
	_, err := envoy.DecodeOneURISANFilter(ry)
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
		args []string
		code int
	}{
		{"inline bundle that is not a bundle", []string{"istio", "--url", "ftp://x", "--verify-keys", keysFile, "--inline-bundle", keysFile}, exitFailed},
		{"invalid options", []string{"istio", "--url", "ftp://x", "--verify-keys", keysFile, "--channel", "c"}, exitUsage},
		{"missing file", []string{"istio", "--url", "oci://r.example/g:v1", "--verify-keys", "/nonexistent"}, exitUsage},
		{"bad target ref", []string{"istio", "--url", "oci://r.example/g:v1", "--target-ref", "x"}, exitUsage},
		{"empty target ref part", []string{"istio", "--url", "oci://r.example/g:v1", "--target-ref", "Gateway/"}, exitUsage},
		{"unknown fail strategy", []string{"istio", "--url", "oci://r.example/g:v1", "--fail-strategy", "FAIL_SOMETIMES"}, exitUsage},
		{"fail-open against fail-strategy", []string{"istio", "--url", "oci://r.example/g:v1", "--fail-open", "--fail-strategy", "FAIL_CLOSE"}, exitUsage},
		{"sha mismatch", []string{"kuma", "--module", keysFile, "--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}, exitUsage},
		{"no module", []string{"envoy", "--verify-keys", keysFile, "--inline-bundle", keysFile}, exitFailed},
		{"unknown mode", []string{"envoy", "--mode", "audit-only"}, exitUsage},
		{"two stdin inputs", []string{"envoy", "--verify-keys", "-", "--inline-bundle", "-"}, exitUsage},
		{"kustomize with json", []string{"istio", "--url", "oci://r.example/g:v1", "--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
			"--verify-keys", keysFile, "--channel", "c", "--kustomize", "k", "-o", "json"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"render"}, tc.args...)...)
			assert.Equal(t, tc.code, r.code, "%s", r.stderr)
			assert.Empty(t, r.stdout)
		})
	}
}

func TestRenderKumaUniversal(t *testing.T) {
	args := []string{"render", "kuma", "--label", "app=meter-api", "--mesh", "grid",
		"--distributor", "https://meshguard-distributor.example:8443",
		"--module-url", "https://meshguard-distributor.example:8443/modules/meshguard/guard/v1.4.0.wasm",
		"--sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"--verify-keys", keysFile, "--channel", "grid-prod"}
	k8s := runCLI(t, args...).ok(t).stdout
	uni := runCLI(t, append(args, "--universal")...).ok(t).stdout
	var kobj, uobj map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(k8s), &kobj))
	require.NoError(t, yaml.UnmarshalStrict([]byte(uni), &uobj))
	assert.Equal(t, map[string]any{"type": "MeshProxyPatch", "mesh": "grid", "name": "meshguard-guard", "spec": kobj["spec"]}, uobj)

	// A local module is a path on the dataplane's host: no ContainerPatch.
	uni = runCLI(t, "render", "kuma", "--universal", "--local-module", "/opt/meshguard/guard.wasm",
		"--verify-keys", keysFile, "--channel", "grid-prod", "--distributor", "https://d.example:8443").ok(t).stdout
	assert.NotContains(t, uni, "ContainerPatch")
	assert.NotContains(t, uni, "---")
	assert.Contains(t, uni, "/opt/meshguard/guard.wasm")
}

// TestRenderOutput: -o is the format (yaml or json), files go to
// --output-file, - is stdout, and inputs may come from stdin.
func TestRenderOutput(t *testing.T) {
	keys, err := filepath.Abs(keysFile)
	require.NoError(t, err)
	args := func(extra ...string) []string {
		return append([]string{"render", "istio", "--url", "oci://r.example/g:v1", "--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
			"--verify-keys", keys, "--channel", "grid-prod", "--distributor", "https://d.example:8443"}, extra...)
	}
	dir := t.TempDir()
	t.Chdir(dir) // where the old -o json wrote a file named json
	yamlOut := runCLI(t, args()...).ok(t).stdout

	// -o json: a kubectl List of the same objects.
	jsonOut := runCLI(t, args("-o", "json")...).ok(t).stdout
	var list struct {
		Kind  string           `json:"kind"`
		Items []map[string]any `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(jsonOut), &list))
	assert.Equal(t, "List", list.Kind)
	require.Len(t, list.Items, 4)
	assert.Equal(t, "ServiceEntry", list.Items[0]["kind"])
	assert.Equal(t, "WasmPlugin", list.Items[3]["kind"])
	assert.NoFileExists(t, filepath.Join(dir, "json"))

	// --output-file writes the file (in the format -o asks for); - is stdout.
	file := filepath.Join(dir, "out.json")
	r := runCLI(t, args("-o", "json", "--output-file", file)...).ok(t)
	assert.Empty(t, r.stdout)
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.JSONEq(t, jsonOut, string(b))
	assert.Equal(t, yamlOut, runCLI(t, args("--output-file", "-")...).ok(t).stdout)
	assert.NoFileExists(t, filepath.Join(dir, "-"))

	// The old -o FILE is refused with where the file goes now, and writes nothing.
	r = runCLI(t, args("-o", "out.yaml")...)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `"out.yaml" is not one of yaml, json; -o is the output format; files go to --output-file`)
	assert.NoFileExists(t, filepath.Join(dir, "out.yaml"))
	r = runCLI(t, args("-o", "table")...)
	assert.Equal(t, exitUsage, r.code, "render prints resources: yaml or json")

	// The verification keys from stdin: the same resources.
	pub, err := os.ReadFile(keys)
	require.NoError(t, err)
	stdinArgs := args()
	for i := range stdinArgs {
		if stdinArgs[i] == keys {
			stdinArgs[i] = "-"
		}
	}
	assert.Equal(t, yamlOut, runCLIStdin(t, string(pub), stdinArgs...).ok(t).stdout)

	// Kuma and Envoy speak JSON too: one object each.
	var obj map[string]any
	kumaJSON := runCLI(t, "render", "kuma", "--local-module", "/opt/guard.wasm", "--verify-keys", keys, "--channel", "c", "--distributor", "https://d.example:8443", "-o", "json").ok(t).stdout
	require.NoError(t, json.Unmarshal([]byte(kumaJSON), &obj))
	assert.Equal(t, "List", obj["kind"], "MeshProxyPatch and ContainerPatch")
	envoyJSON := runCLI(t, "render", "envoy", "--local-module", "/opt/guard.wasm", "--verify-keys", keys, "--channel", "c", "--distributor", "http://127.0.0.1:1", "-o", "json").ok(t)
	obj = nil
	require.NoError(t, json.Unmarshal([]byte(envoyJSON.stdout), &obj))
	assert.Contains(t, obj, "http_filters")
	assert.Contains(t, obj, "clusters")
}

// TestRenderIstioGateway renders the guard for an ingress gateway with
// end-user tokens: the WasmPlugin selects the gateway's pods and its
// configuration enables identity.endUser.
func TestRenderIstioGateway(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "pseudonym.key")
	require.NoError(t, os.WriteFile(key, []byte("c2VjcmV0LXBzZXVkb255bS1rZXktMzItYnl0ZXMtbG9uZyEh\n"), 0o600))
	out := runCLI(t, "render", "istio", "-n", "istio-system", "--selector", "istio=ingressgateway",
		"--url", "oci://registry.example/meshguard/guard:v1.4.0",
		"--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
		"--verify-keys", keysFile, "--channel", "edge", "--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--end-user", "--end-user-pseudonym-key-file", key, "--no-peer-authentication", "-o", "json").ok(t).stdout
	var list struct {
		Items []map[string]any `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	var wp map[string]any
	for _, it := range list.Items {
		if it["kind"] == "WasmPlugin" {
			wp = it
		}
	}
	require.NotNil(t, wp)
	spec := wp["spec"].(map[string]any)
	assert.Equal(t, map[string]any{"matchLabels": map[string]any{"istio": "ingressgateway"}}, spec["selector"])
	cfg := spec["pluginConfig"].(map[string]any)
	eu := cfg["identity"].(map[string]any)["endUser"].(map[string]any)
	assert.Equal(t, "c2VjcmV0LXBzZXVkb255bS1rZXktMzItYnl0ZXMtbG9uZyEh", eu["pseudonymKey"])

	// Claims from Istio's RequestAuthentication instead.
	out = runCLI(t, "render", "istio", "-n", "istio-system", "--selector", "istio=ingressgateway",
		"--url", "oci://registry.example/meshguard/guard:v1.4.0",
		"--sha256", "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
		"--verify-keys", keysFile, "--channel", "edge", "--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		"--end-user-jwt-authn", "https://idp.utility.example", "--no-peer-authentication", "-o", "json").ok(t).stdout
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	for _, it := range list.Items {
		if it["kind"] == "WasmPlugin" {
			id := it["spec"].(map[string]any)["pluginConfig"].(map[string]any)["identity"].(map[string]any)
			assert.Equal(t, []any{"https://idp.utility.example"}, id["endUser"].(map[string]any)["jwtAuthn"])
		}
	}
}
