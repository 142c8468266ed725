package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/server"
)

// serveRegistry runs a distributor whose loopback callers act for
// organisation grid-op (devices inv-*, trust domain grid.example).
func serveRegistry(t *testing.T) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Data, cfg.Listen, cfg.InsecureHTTP = t.TempDir(), "127.0.0.1:0", true
	cfg.Registry.Organisations = []registry.Organisation{{Name: "grid-op", Members: []string{"loopback"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}}}
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func deviceYAML(t *testing.T, id, firmware string) []byte {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := jwk.FromRaw(pub)
	require.NoError(t, err)
	kj, err := json.Marshal(k)
	require.NoError(t, err)
	var km map[string]any
	require.NoError(t, json.Unmarshal(kj, &km))
	b, err := yaml.Marshal(map[string]any{"id": id, "class": "inverter", "vendor": "voltwerk", "firmware": firmware,
		"credential": map[string]any{"jwk": km}, "writers": []string{"spiffe://grid.example/ns/der/sa/controller"}})
	require.NoError(t, err)
	return b
}

func TestRegistryCLI(t *testing.T) {
	url := serveRegistry(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "inv.yaml")
	require.NoError(t, os.WriteFile(f, deviceYAML(t, "inv-0001", ">=3.1.0"), 0o600))

	r := runCLI(t, "registry", "register", "device", f, "--server", url, "-o", "json").ok(t)
	var rec registry.Record
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rec))
	assert.Equal(t, "inv-0001", rec.ID)
	assert.Equal(t, "grid-op", rec.Organisation)

	// Registering it again is a conflict (3); an invalid entry a usage error
	// (2) naming the field.
	assert.Equal(t, exitConflict, runCLI(t, "registry", "register", "device", f, "--server", url).code)
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, deviceYAML(t, "inv-0002", "not a range"), 0o600))
	r = runCLI(t, "registry", "register", "device", bad, "--server", url)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "firmware:")
	// Another organisation's namespace: 403 (exit 6).
	require.NoError(t, os.WriteFile(bad, deviceYAML(t, "mtr-1", ">=1.0.0"), 0o600))
	assert.Equal(t, exitError, runCLI(t, "registry", "register", "device", bad, "--server", url).code)

	r = runCLI(t, "registry", "get", "device", "inv-0001", "--server", url).ok(t)
	assert.Contains(t, r.stdout, "inv-0001")
	assert.Contains(t, r.stdout, `"1"`)
	assert.Contains(t, r.stdout, "class=inverter")
	r = runCLI(t, "registry", "get", "device", "inv-0001", "--server", url, "-o", "yaml").ok(t)
	assert.Contains(t, r.stdout, "generation: 1")

	require.NoError(t, os.WriteFile(f, deviceYAML(t, "inv-0001", ">=3.2.0"), 0o600))
	assert.Equal(t, exitUsage, runCLI(t, "registry", "update", "device", "inv-0001", f, "--server", url).code, "--if-match is required")
	runCLI(t, "registry", "update", "device", "inv-0001", f, "--if-match", `"1"`, "--server", url).ok(t)
	assert.Equal(t, exitConflict, runCLI(t, "registry", "update", "device", "inv-0001", f, "--if-match", "1", "--server", url).code)

	for i := range 3 {
		g := filepath.Join(dir, "g.yaml")
		require.NoError(t, os.WriteFile(g, deviceYAML(t, "inv-1"+string(rune('0'+i)), ">=1.0.0"), 0o600))
		runCLI(t, "registry", "register", "device", g, "--server", url).ok(t)
	}
	r = runCLI(t, "registry", "list", "device", "--server", url, "-o", "json").ok(t)
	var list []registry.Record
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	assert.Len(t, list, 4)
	r = runCLI(t, "registry", "list", "device", "--prefix", "inv-1", "--limit", "2", "--server", url, "-o", "json").ok(t)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	assert.Len(t, list, 2)

	w := filepath.Join(dir, "w.json")
	require.NoError(t, os.WriteFile(w, []byte(`{"spiffe_id":"spiffe://grid.example/ns/der/sa/controller","versions":{"range":">=2.0.0"}}`), 0o600))
	runCLI(t, "registry", "register", "workload", w, "--server", url).ok(t)
	r = runCLI(t, "registry", "list", "workload", "--server", url, "-o", "csv").ok(t)
	assert.Contains(t, r.stdout, "spiffe://grid.example/ns/der/sa/controller")
	runCLI(t, "registry", "get", "workload", "spiffe://grid.example/ns/der/sa/controller", "--server", url).ok(t)

	r = runCLI(t, "registry", "deregister", "device", "inv-0001", "--server", url).ok(t)
	assert.Equal(t, "deregistered device inv-0001\n", r.stdout)
	assert.Equal(t, exitError, runCLI(t, "registry", "get", "device", "inv-0001", "--server", url).code)
	assert.Equal(t, exitUsage, runCLI(t, "registry", "get", "thing", "x", "--server", url).code)
}

func TestRegistryAttestCLI(t *testing.T) {
	url := serveRegistry(t)
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := jwk.FromRaw(priv)
	require.NoError(t, err)
	pk, err := k.PublicKey()
	require.NoError(t, err)
	kb, err := json.Marshal(k)
	require.NoError(t, err)
	keyFile := filepath.Join(dir, "inv.jwk")
	require.NoError(t, os.WriteFile(keyFile, kb, 0o600))
	pb, err := json.Marshal(pk)
	require.NoError(t, err)
	dev := filepath.Join(dir, "inv.json")
	require.NoError(t, os.WriteFile(dev, []byte(`{"id":"inv-42","class":"inverter","vendor":"voltwerk","firmware":">=3.0.0","credential":{"jwk":`+string(pb)+`}}`), 0o600))
	runCLI(t, "registry", "register", "device", dev, "--server", url).ok(t)

	r := runCLI(t, "registry", "attest", "inv-42", "--device-key", keyFile, "--firmware", "3.4.0", "--server", url, "-o", "json").ok(t)
	var a struct {
		Token string `json:"token"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &a))
	assert.Regexp(t, `^[\w-]+\.[\w-]+\.[\w-]+$`, a.Token)
	// Firmware outside the approved range: refused (403, exit 6).
	assert.Equal(t, exitError, runCLI(t, "registry", "attest", "inv-42", "--device-key", keyFile, "--firmware", "2.0.0", "--server", url).code)
	// A public key is not a device's key.
	pubFile := filepath.Join(dir, "pub.jwk")
	require.NoError(t, os.WriteFile(pubFile, pb, 0o600))
	assert.Equal(t, exitUsage, runCLI(t, "registry", "attest", "inv-42", "--device-key", pubFile, "--firmware", "3.4.0", "--server", url).code)
}
