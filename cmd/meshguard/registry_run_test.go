package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/policies/bundle"
)

// A device registered through the API becomes writable through meshguard
// run (2 workers) with no bundle step, with the token it attested for;
// deregistered, its next write is denied on every worker within 2 s of
// the API's answer.
func TestRegistryThroughRun(t *testing.T) {
	data := t.TempDir()
	keysDir, sign := keyPair(t)
	cfg := server.DefaultConfig()
	cfg.Data, cfg.Listen, cfg.InsecureHTTP = data, "127.0.0.1:0", true
	cfg.Keys = filepath.Join(keysDir, "verify.jwk")
	cfg.Bundles.Channels = map[string]server.ChannelConfig{"grid": {}}
	cfg.Registry.Organisations = []registry.Organisation{{Name: "grid-op", Members: []string{"loopback"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}}}
	cfg.Registry.DeviceClasses = map[string]registry.DeviceAccess{"inverter": {TargetPaths: []string{"/v1/inverters/{id}/**"},
		ControlPaths: []string{"/v1/inverters/{id}/setpoint"}, WritePaths: []string{"/v1/inverters/{id}/**"}}}
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	dist := "http://" + ln.Addr().String()

	// The authors' bundle: every workload request, no device write.
	resp, err := http.Post(dist+"/v1/bundles/grid", bundle.MediaType, strings.NewReader(string(sign(1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), "grid"))))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	// The controller's JWT-SVIDs.
	svidKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	svidJWK, err := jwk.FromRaw(&svidKey.PublicKey)
	require.NoError(t, err)
	require.NoError(t, svidJWK.Set(jwk.KeyIDKey, "grid-1"))
	svidSet := jwk.NewSet()
	require.NoError(t, svidSet.AddKey(svidJWK))
	claims, err := json.Marshal(map[string]any{"sub": "spiffe://grid.example/ns/der/sa/controller", "aud": "grid", "exp": time.Now().Add(time.Hour).Unix()})
	require.NoError(t, err)
	hdr := jws.NewHeaders()
	require.NoError(t, hdr.Set(jws.KeyIDKey, "grid-1"))
	require.NoError(t, hdr.Set(jws.TypeKey, "JWT"))
	svid, err := jws.Sign(claims, jws.WithKey(jwa.ES256, svidKey, jws.WithProtectedHeaders(hdr)))
	require.NoError(t, err)

	verifyKeys, err := os.ReadFile(cfg.Keys)
	require.NoError(t, err)
	regKeys, err := os.ReadFile(filepath.Join(data, "registry-bundle.key.pub"))
	require.NoError(t, err)
	resp, err = http.Get(dist + "/v1/registry/attest/jwks.json")
	require.NoError(t, err)
	attestKeys, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	guardCfg, err := json.Marshal(map[string]any{
		"policy": map[string]any{"verifyKeys": json.RawMessage(verifyKeys), "registryKeys": json.RawMessage(regKeys),
			"distributor": map[string]any{"cluster": "distributor", "channel": "grid", "pollInterval": "1s"}},
		"identity": map[string]any{
			"jwtSvid": map[string]any{"audiences": []string{"grid"}, "trustDomains": map[string]any{"grid.example": svidSet}},
			"device":  map[string]any{"issuers": map[string]any{"meshguard-registry": json.RawMessage(attestKeys)}, "audiences": []string{"meshguard"}},
		},
	})
	require.NoError(t, err)
	cfgFile := filepath.Join(t.TempDir(), "guard.json")
	require.NoError(t, os.WriteFile(cfgFile, guardCfg, 0o644))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "up") }))
	t.Cleanup(upstream.Close)
	wasm, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/guard"))
	require.NoError(t, err)
	rctx, rcancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(rctx, []string{"run", "--module", "-", "--plugin-config", cfgFile, "--insecure-http", "--listen", "127.0.0.1:0",
			"--route", "/v1=" + upstream.URL, "--cluster", "distributor=" + dist, "--workers", "2", "--log-level", "error"},
			strings.NewReader(string(wasm)), pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() { rcancel(); <-code })
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base := strings.Fields(strings.TrimPrefix(line, "meshguard dev proxy listening on "))[0]

	// Register the device (its key is the test's) and attest.
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	dk, err := jwk.FromRaw(devKey)
	require.NoError(t, err)
	dkb, err := json.Marshal(dk)
	require.NoError(t, err)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "inv.jwk")
	require.NoError(t, os.WriteFile(keyFile, dkb, 0o600))
	pub, err := dk.PublicKey()
	require.NoError(t, err)
	pb, err := json.Marshal(pub)
	require.NoError(t, err)
	devFile := filepath.Join(dir, "inv.json")
	require.NoError(t, os.WriteFile(devFile, []byte(`{"id":"inv-9","class":"inverter","vendor":"acme","firmware":">=1.0.0","credential":{"jwk":`+string(pb)+
		`},"writers":["spiffe://grid.example/ns/der/sa/controller"]}`), 0o600))
	runCLI(t, "registry", "register", "device", devFile, "--server", dist).ok(t)
	r := runCLI(t, "registry", "attest", "inv-9", "--device-key", keyFile, "--firmware", "1.4.0", "--server", dist, "-o", "json").ok(t)
	var att struct {
		Token string `json:"token"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &att))

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // connections spread over the workers
	write := func() int {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/inverters/inv-9/setpoint", strings.NewReader(`{"w":1}`))
		require.NoError(t, err)
		req.Header.Set("authorization", "Bearer "+string(svid))
		req.Header.Set("x-device-token", att.Token)
		resp, err := client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Writable with no bundle step, on every worker.
	require.Eventually(t, func() bool { return write() == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
	for range 8 {
		assert.Equal(t, http.StatusOK, write())
	}

	runCLI(t, "registry", "deregister", "device", "inv-9", "--server", dist).ok(t)
	answered := time.Now()
	// Every request from 2 s after the API's answer on is denied, on
	// every worker (8 fresh connections).
	require.Eventually(t, func() bool { return write() == http.StatusForbidden }, 2*time.Second, 20*time.Millisecond)
	t.Logf("denied %s after the API answered", time.Since(answered).Round(time.Millisecond))
	time.Sleep(time.Until(answered.Add(2 * time.Second)))
	for range 8 {
		assert.Equal(t, http.StatusForbidden, write())
	}
}
