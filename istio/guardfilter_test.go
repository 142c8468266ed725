package istio

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/kuma"
)

// TestGuardFilterAcceptsRenderedConfig hands the configurations the renderers
// produce to the real guard filter (built to wasm, run in the meshguard host)
// and requires proxy_on_configure to accept them (no critical "configuration
// rejected" log), with the callout clusters the platform provides.
func TestGuardFilterAcceptsRenderedConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the guard filter")
	}
	wasm := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/guard")

	t.Run("istio pluginConfig", func(t *testing.T) {
		r, err := Render(exampleOptions(t))
		require.NoError(t, err)
		pc, err := json.Marshal(r.WasmPlugin["spec"].(map[string]any)["pluginConfig"])
		require.NoError(t, err)
		cluster := ClusterName("meshguard-distributor.meshguard-system.svc.cluster.local", 8443)
		h := hosttest.New(t, wasm, hosttest.PluginConfig(pc), hosttest.Cluster(cluster))
		require.Empty(t, h.LogMessages(host.LogCritical))
	})

	t.Run("kuma StringValue", func(t *testing.T) {
		r, err := kuma.Render(kuma.Options{
			Distributor: "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
			LocalModule: "/var/lib/meshguard/guard.wasm",
			Guard:       envoy.GuardInput{VerifyKeys: verifyKeys(t), Channel: "grid-prod", PeerCertificate: true, AuditSink: true},
		})
		require.NoError(t, err)
		mods := r.MeshProxyPatch["spec"].(map[string]any)["default"].(map[string]any)["appendModifications"].([]any)
		_, w, err := envoy.DecodeHTTPFilter([]byte(mods[len(mods)-1].(map[string]any)["httpFilter"].(map[string]any)["value"].(string)))
		require.NoError(t, err)
		var sv wrapperspb.StringValue
		require.NoError(t, w.GetConfig().GetConfiguration().UnmarshalTo(&sv))
		h := hosttest.New(t, wasm, hosttest.PluginConfig([]byte(sv.GetValue())), hosttest.Cluster(envoy.DefaultClusterName))
		require.Empty(t, h.LogMessages(host.LogCritical))
	})

	t.Run("the check can fail", func(t *testing.T) {
		// The filter never refuses to start (that would hand the outcome to the
		// mesh's fail-open setting); it logs the rejection and fails closed.
		h := hosttest.New(t, wasm, hosttest.PluginConfig([]byte(`{"policy":{"inline":"AAAA","verifyKeys":{"keys":[{"kty":"bogus"}]}},"identity":{"peerCertificate":true}}`)))
		require.NotEmpty(t, h.LogMessages(host.LogCritical))
		h.ExpectLog("configuration rejected")
	})
}
