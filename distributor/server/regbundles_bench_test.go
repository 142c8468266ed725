package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

// seedDevices writes n registered devices into the registry store under
// data before the distributor starts.
func seedDevices(b *testing.B, data string, n int) {
	st, err := registry.OpenFS(filepath.Join(data, "registry"))
	require.NoError(b, err)
	jwk := json.RawMessage(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`)
	now := time.Now()
	for i := range n {
		d := registry.Device{ID: fmt.Sprintf("inv-%06d", i), Class: "inverter", Vendor: "acme", Organisation: "grid-op", Firmware: ">=1.0.0",
			Credential: registry.Credential{JWK: jwk}, Writers: []string{"spiffe://grid.example/ns/der/sa/controller"},
			WriteLimit: &registry.WriteLimit{PerSecond: 2, Burst: 5}}
		spec, err := json.Marshal(d)
		require.NoError(b, err)
		require.NoError(b, st.Put(context.Background(), registry.Record{Kind: registry.KindDevice, ID: d.ID, Organisation: "grid-op",
			Generation: 1, Created: now, Updated: now, Spec: spec}, 0))
	}
}

// BenchmarkRegistryChangePublish: one registry change (register a device)
// through the API with 10k registered devices, answered after the new
// registry bundle revision is published.
//
//	go test -run '^$' -bench RegistryChangePublish -benchtime 20x ./distributor/server/
func BenchmarkRegistryChangePublish(b *testing.B) {
	cfg := testConfig(b)
	cfg.Bundles.Channels = map[string]ChannelConfig{"prod": {}}
	seedDevices(b, cfg.Data, 10_000)
	tokens := filepath.Join(b.TempDir(), "tokens")
	require.NoError(b, os.WriteFile(tokens, []byte("grid-op:secret-a\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow[auth.ActionRegistry] = []string{"token:grid-op"}
	cfg.Registry.Organisations = []registry.Organisation{{Name: "grid-op", Members: []string{"token:grid-op"}, DevicePrefixes: []string{"inv-"}}}
	cfg.Registry.DeviceClasses = map[string]registry.DeviceAccess{"inverter": {TargetPaths: []string{"/v1/inverters/{id}/**"},
		ControlPaths: []string{"/v1/inverters/{id}/setpoint"}, WritePaths: []string{"/v1/inverters/{id}/**"}}}
	ts := startServer(b, cfg, Options{})
	before, err := ts.Registry().Latest("prod.registry")
	require.NoError(b, err)
	b.ResetTimer()
	for i := range b.N {
		body := fmt.Sprintf(`{"id":"inv-new-%d","class":"inverter","vendor":"acme","credential":{"jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},"writers":["spiffe://grid.example/ns/der/sa/controller"]}`, i)
		r := do(b, nil, http.MethodPost, ts.URL+"/v1/registry/devices", []byte(body), "Authorization", "Bearer secret-a", "Content-Type", "application/json")
		if r.Code != http.StatusCreated {
			b.Fatalf("%d %s", r.Code, r.Body)
		}
	}
	b.StopTimer()
	after, err := ts.Registry().Latest("prod.registry")
	require.NoError(b, err)
	require.Greater(b, after.Info.Revision, before.Info.Revision)
	b.ReportMetric(float64(after.Info.Size), "bundle-bytes")
}
