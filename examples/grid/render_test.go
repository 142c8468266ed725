package grid

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
)

var update = flag.Bool("update", false, "rewrite the rendered grid resources")

// exampleDigest stands for the manifest digest `meshguard push module` prints
// for the release being deployed; replace it with yours.
const exampleDigest = "sha256:5044028be9a9a6398b8a5f97453faaa9dd48d8d7c5593b66f1876d7760e425e1"

// renders are the mesh resources of the grid scenario, rendered by the CLI
// from the checked-in example keys.
var renders = map[string][]string{
	"deploy/istio.yaml": {"render", "istio", "--namespace", "grid", "--selector", "meshguard.io/guard=stable",
		"--url", "oci://registry.grid.example/meshguard/guard:v1", "--sha256", exampleDigest,
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443", "--distributor-tls", "ISTIO_MUTUAL",
		"--channel", "grid", "--scope", "grid", "--poll-interval", "10s", "--verify-keys", "deploy/verify-keys.json",
		"--jwt-trust-domain", "grid.example=deploy/grid-jwt-bundle.json",
		"--istio-peer-metadata", "--audit", "--log-allows"},
	"deploy/kuma.yaml": {"render", "kuma", "--mesh", "grid", "--label", "app=meter-api",
		"--module-url", "https://meshguard-distributor.meshguard-system.svc:8443/modules/meshguard/guard/v1.wasm",
		"--sha256", "6b5f8b197898701b2fc84759750421a065303eae96c633225b55c299abdb44de",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc:8443",
		"--channel", "grid", "--scope", "grid", "--verify-keys", "deploy/verify-keys.json",
		"--jwt-trust-domain", "grid.example=deploy/grid-jwt-bundle.json",
		"--audit"},
	// The controller's outbound guard (the caller's side): the same bundle
	// channel, direction outbound, no caller identity.
	"deploy/istio-outbound.yaml": {"render", "istio", "--namespace", "grid", "--name", "meshguard-outbound", "--selector", "app=der-controller",
		"--url", "oci://registry.grid.example/meshguard/guard:v1", "--sha256", exampleDigest,
		"--distributor", "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443", "--distributor-tls", "ISTIO_MUTUAL",
		"--channel", "grid", "--scope", "grid", "--poll-interval", "10s", "--verify-keys", "deploy/verify-keys.json",
		"--direction", "outbound", "--no-peer-authentication", "--audit", "--log-allows"},
	"deploy/kuma-outbound.yaml": {"render", "kuma", "--mesh", "grid", "--name", "meshguard-outbound", "--label", "app=der-controller",
		"--module-url", "https://meshguard-distributor.meshguard-system.svc:8443/modules/meshguard/guard/v1.wasm",
		"--sha256", "6b5f8b197898701b2fc84759750421a065303eae96c633225b55c299abdb44de",
		"--distributor", "https://meshguard-distributor.meshguard-system.svc:8443",
		"--channel", "grid", "--scope", "grid", "--verify-keys", "deploy/verify-keys.json",
		"--direction", "outbound", "--audit"},
}

// TestRenderedResources keeps deploy/*.yaml equal to what `meshguard render`
// writes today (go test ./examples/grid -update rewrites them). The render
// packages' own tests validate the same output against the Istio and Kuma
// CRD schemas and go-control-plane.
func TestRenderedResources(t *testing.T) {
	root, err := wasmbuild.ModuleRoot()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "meshguard")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meshguard")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for file, args := range renders {
		t.Run(file, func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			got, err := cmd.Output()
			require.NoError(t, err, "meshguard %v", args)
			if *update {
				require.NoError(t, os.WriteFile(file, got, 0o644))
			}
			want, err := os.ReadFile(file)
			require.NoError(t, err, "run go test ./examples/grid -update")
			assert.Equal(t, string(want), string(got), "%s is stale: go test ./examples/grid -update", file)
		})
	}
}
