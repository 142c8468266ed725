package server

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

// registryBundle fetches and loads the latest registry bundle of channel.
func registryBundle(t *testing.T, ts *testServer, channel string) *bundle.Policy {
	t.Helper()
	snap, err := ts.Registry().Latest(channel)
	require.NoError(t, err)
	pubs, err := os.ReadFile(filepath.Join(ts.Server.cfg.Data, "registry-bundle.key.pub"))
	require.NoError(t, err)
	keys, err := bundle.ParseKeySet(pubs)
	require.NoError(t, err)
	pol, err := bundle.Load(snap.Data, bundle.VerifyOptions{Keys: keys, Scope: channel})
	require.NoError(t, err)
	require.NoError(t, pol.Engine.RegistryScope())
	return pol
}

func TestRegistryChangesPublishBundles(t *testing.T) {
	ts := registryServerWith(t, func(cfg *Config) {
		cfg.Registry.DeviceClasses = map[string]registry.DeviceAccess{"inverter": {
			TargetPaths: []string{"/v1/inverters/{id}/**"}, ControlPaths: []string{"/v1/inverters/{id}/setpoint"},
			ReadPaths: []string{"/v1/inverters/{id}/status"}, WritePaths: []string{"/v1/inverters/{id}/**"}}}
	})
	c := newRegClient(t, ts, "secret-a")
	first := registryBundle(t, ts, "prod.registry")
	registryBundle(t, ts, "edge.registry")

	r := c.do(http.MethodPost, "/v1/registry/devices", device(t, "inv-7"), nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	// Published before the API answered.
	pol := registryBundle(t, ts, "prod.registry")
	require.Greater(t, pol.Revision(), first.Revision())
	write := policies.Request{SPIFFEID: "spiffe://grid.example/ns/der/sa/controller", Method: "POST", Path: "/v1/inverters/inv-7/setpoint",
		DeviceID: "inv-7", DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: "3.2.0"}
	var d policies.Decision
	pol.Engine.Decide(&write, &d)
	assert.True(t, d.Allow, d.Reason)
	assert.Equal(t, policies.RateLimit{PerSecond: 2, Burst: 5}, d.RateLimit)

	r = c.do(http.MethodDelete, "/v1/registry/devices/inv-7", nil, nil)
	require.Equal(t, http.StatusNoContent, r.code, string(r.body))
	pol = registryBundle(t, ts, "prod.registry")
	pol.Engine.Decide(&write, &d)
	assert.False(t, d.Allow)
	assert.Equal(t, policies.ReasonRevokedDevice, d.Reason)

	// A restart keeps the deregistered device revoked.
	ts.stop()
	ts2 := startServer(t, ts.Server.cfg, Options{})
	pol = registryBundle(t, ts2, "prod.registry")
	pol.Engine.Decide(&write, &d)
	assert.Equal(t, policies.ReasonRevokedDevice, d.Reason)
	// Registered again: no longer revoked.
	c2 := newRegClient(t, ts2, "secret-a")
	r = c2.do(http.MethodPost, "/v1/registry/devices", device(t, "inv-7"), nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	pol = registryBundle(t, ts2, "prod.registry")
	pol.Engine.Decide(&write, &d)
	assert.True(t, d.Allow, d.Reason)
}

// A bundle signed by the registry key that holds more than registry-derived
// content is refused at publish (422), and neither key publishes to the
// other's channels.
func TestRegistryKeyTryingMore(t *testing.T) {
	ts := registryServerWith(t, nil)
	kb, err := os.ReadFile(filepath.Join(ts.Server.cfg.Data, "registry-bundle.key"))
	require.NoError(t, err)
	regKey, err := bundle.ParseSigningKey(kb)
	require.NoError(t, err)
	authorsKey, _, err := bundle.GenerateKey(bundle.AlgEd25519)
	require.NoError(t, err)
	more := map[string]string{
		"workload rule": `{apiVersion: meshguard.io/v1, kind: WorkloadPolicy, metadata: {name: w}, spec: {rules: [{name: r, effect: allow, subjects: ["spiffe://grid.example/**"], paths: ["/**"]}]}}`,
		"trust domain":  `{apiVersion: meshguard.io/v1, kind: TrustDomain, metadata: {name: grid.example}, spec: {}}`,
	}
	post := func(channel string, data []byte) resp {
		return do(t, http.DefaultClient, http.MethodPost, ts.URL+"/v1/bundles/"+url.PathEscape(channel), data,
			"Authorization", "Bearer secret-a", "Content-Type", bundle.MediaType)
	}
	for name, src := range more {
		data, err := bundle.Pack(map[string][]byte{"policies/x.yaml": []byte(src)}, bundle.PackOptions{BuildOptions: bundle.BuildOptions{
			Revision: uint64(time.Now().UnixMilli()) + 1000, Expires: time.Now().Add(time.Hour), Scope: []string{"prod.registry"}, Key: regKey}})
		require.NoError(t, err)
		r := post("prod.registry", data)
		assert.Equal(t, http.StatusUnprocessableEntity, r.Code, name)
		assert.Contains(t, string(r.Body), "registry", name)
		// And PackRegistry refuses it before signing.
		_, err = bundle.PackRegistry(map[string][]byte{"policies/x.yaml": []byte(src)}, bundle.PackOptions{BuildOptions: bundle.BuildOptions{
			Revision: 1, Expires: time.Now().Add(time.Hour), Scope: []string{"prod.registry"}, Key: regKey}})
		require.ErrorIs(t, err, bundle.ErrRegistryScope, name)
	}
	// Registry-derived content signed by another key: refused on the registry channel.
	ok := `{apiVersion: meshguard.io/v1, kind: Revocations, metadata: {name: r}, spec: {deviceIDs: [inv-1]}}`
	data, err := bundle.Pack(map[string][]byte{"policies/x.yaml": []byte(ok)}, bundle.PackOptions{BuildOptions: bundle.BuildOptions{
		Revision: uint64(time.Now().UnixMilli()) + 2000, Expires: time.Now().Add(time.Hour), Scope: []string{"prod.registry"}, Key: authorsKey}})
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnprocessableEntity, post("prod.registry", data).Code)
	// The registry key on the authors' channel: refused.
	data, err = bundle.Pack(map[string][]byte{"policies/x.yaml": []byte(ok)}, bundle.PackOptions{BuildOptions: bundle.BuildOptions{
		Revision: 5, Expires: time.Now().Add(time.Hour), Scope: []string{"prod"}, Key: regKey}})
	require.NoError(t, err)
	assert.NotEqual(t, http.StatusCreated, post("prod", data).Code)
}

func registryServerWith(t *testing.T, edit func(*Config)) *testServer {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("grid-op:secret-a\nmetering:secret-b\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow[auth.ActionRegistry] = []string{"token:grid-op"}
	cfg.Allow[auth.ActionPublish] = []string{"token:grid-op"}
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"token:grid-op"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}},
	}
	if edit != nil {
		edit(&cfg)
	}
	return startServer(t, cfg, Options{})
}
