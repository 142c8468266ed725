package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

func attestServer(t *testing.T, nonceLife time.Duration) *testServer {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("grid-op:secret-a\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow[auth.ActionRegistry] = []string{"token:grid-op"}
	cfg.Allow[auth.ActionAttest] = []string{"anonymous"}
	cfg.Registry.Organisations = []registry.Organisation{{Name: "grid-op", Members: []string{"token:grid-op"}, DevicePrefixes: []string{"inv-"}}}
	cfg.Registry.Attestation.NonceLifetime = nonceLife
	cfg.Registry.Attestation.TokenLifetime = 5 * time.Minute
	cfg.Registry.Attestation.Rate = 0 // the benchmark attests as fast as it can
	return startServer(t, cfg, Options{})
}

func registerWithKey(t *testing.T, c *regClient, id string) *ecdsa.PrivateKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	jk, err := jwk.FromRaw(&priv.PublicKey)
	require.NoError(t, err)
	b, _ := json.Marshal(jk)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	d := map[string]any{"id": id, "class": "inverter", "vendor": "voltwerk", "firmware": ">=3.1.0, <4.0.0", "credential": map[string]any{"jwk": m}}
	r := c.do(http.MethodPost, "/v1/registry/devices", d, nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	return priv
}

// keepAlive reuses connections however many requests run at once.
var keepAlive = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

func post(t *testing.T, url, body string) (int, []byte) {
	resp, err := keepAlive.Post(url, "application/json", bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func getNonce(t *testing.T, ts *testServer, id string) string {
	code, b := post(t, ts.URL+registry.AttestNoncePath, `{"device_id":"`+id+`"}`)
	require.Equal(t, http.StatusOK, code, string(b))
	var n registry.NonceResponse
	require.NoError(t, json.Unmarshal(b, &n))
	return n.Nonce
}

func signAttest(t *testing.T, key any, alg jwa.SignatureAlgorithm, typ string, p registry.AttestPayload) string {
	hdr := jws.NewHeaders()
	require.NoError(t, hdr.Set(jws.TypeKey, typ))
	b, _ := json.Marshal(p)
	out, err := jws.Sign(b, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	require.NoError(t, err)
	return string(out)
}

func TestAttestation(t *testing.T) {
	ts := attestServer(t, 300*time.Millisecond)
	c := &regClient{t: t, base: ts.URL, token: "secret-a"}
	key := registerWithKey(t, c, "inv-7")
	other := registerWithKey(t, c, "inv-8")

	// The attestation endpoints as the OpenAPI document describes them.
	oc := newRegClient(t, ts, "secret-a")
	r := oc.do(http.MethodPost, registry.AttestNoncePath, map[string]string{"device_id": "inv-7"}, nil)
	require.Equal(t, http.StatusOK, r.code)
	var nr registry.NonceResponse
	require.NoError(t, json.Unmarshal(r.body, &nr))
	r = oc.do(http.MethodPost, registry.AttestPath, signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: nr.Nonce, Firmware: "3.2.0"}),
		map[string]string{"Content-Type": "application/jose"})
	require.Equal(t, http.StatusOK, r.code, string(r.body))
	require.Equal(t, http.StatusOK, oc.do(http.MethodGet, registry.AttestKeysPath, nil, nil).code)

	n := getNonce(t, ts, "inv-7")
	jwsOK := signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: n, Firmware: "3.2.0"})
	code, b := post(t, ts.URL+registry.AttestPath, jwsOK)
	require.Equal(t, http.StatusOK, code, string(b))
	var tr registry.TokenResponse
	require.NoError(t, json.Unmarshal(b, &tr))

	// The token verifies with the published keys and carries the device
	// as registered, in the claims the guard reads by default.
	resp, err := http.Get(ts.URL + registry.AttestKeysPath)
	require.NoError(t, err)
	set, err := jwk.ParseReader(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	tok, err := jwt.Parse([]byte(tr.Token), jwt.WithKeySet(set), jwt.WithIssuer("meshguard-registry"), jwt.WithAudience("meshguard"))
	require.NoError(t, err)
	for k, want := range map[string]string{"ueid": "inv-7", "hwmodel": "inverter", "oemid": "voltwerk", "swversion": "3.2.0"} {
		got, ok := tok.Get(k)
		assert.True(t, ok, k)
		assert.Equal(t, want, got, k)
	}
	assert.WithinDuration(t, time.Now().Add(5*time.Minute), tok.Expiration(), 5*time.Second)

	// Replay of the same JWS: the nonce is spent.
	code, b = post(t, ts.URL+registry.AttestPath, jwsOK)
	assert.Equal(t, http.StatusForbidden, code, string(b))

	refusals := []struct {
		name string
		jws  func() string
	}{
		{"wrong key", func() string {
			return signAttest(t, other, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: getNonce(t, ts, "inv-7"), Firmware: "3.2.0"})
		}},
		{"nonce of another device", func() string {
			return signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: getNonce(t, ts, "inv-8"), Firmware: "3.2.0"})
		}},
		{"wrong typ", func() string {
			return signAttest(t, key, jwa.ES256, "JWT", registry.AttestPayload{DeviceID: "inv-7", Nonce: getNonce(t, ts, "inv-7"), Firmware: "3.2.0"})
		}},
		{"firmware outside the approved range", func() string {
			return signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: getNonce(t, ts, "inv-7"), Firmware: "4.1.0"})
		}},
		{"invented nonce", func() string {
			return signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: "AAAA", Firmware: "3.2.0"})
		}},
		{"expired nonce", func() string {
			n := getNonce(t, ts, "inv-7")
			time.Sleep(400 * time.Millisecond)
			return signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-7", Nonce: n, Firmware: "3.2.0"})
		}},
		{"deregistered device", func() string {
			n := getNonce(t, ts, "inv-8")
			require.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, "/v1/registry/devices/inv-8", nil, nil).code)
			return signAttest(t, other, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-8", Nonce: n, Firmware: "3.2.0"})
		}},
		{"not a JWS", func() string { return "hello" }},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, b := post(t, ts.URL+registry.AttestPath, tc.jws())
			assert.Equal(t, http.StatusForbidden, code, string(b))
		})
	}
	// Unknown and deregistered devices get no nonce.
	code, _ = post(t, ts.URL+registry.AttestNoncePath, `{"device_id":"inv-404"}`)
	assert.Equal(t, http.StatusForbidden, code)
	code, _ = post(t, ts.URL+registry.AttestNoncePath, `{"device_id":"inv-8"}`)
	assert.Equal(t, http.StatusForbidden, code)

	// Every attestation is recorded: one issued, the replay and the eight
	// refusals refused.
	resp, err = http.Get(ts.URL + "/v1/decisions?decision=registry&limit=1000")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Records []map[string]json.RawMessage `json:"records"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	ops := map[string]int{}
	for _, r := range out.Records {
		var op string
		require.NoError(t, json.Unmarshal(r["registry_op"], &op))
		ops[op]++
	}
	assert.Equal(t, map[string]int{"create": 2, "delete": 1, "attest": 2, "attest-refused": 1 + len(refusals)}, ops)
}

// TestAttestationLimits: nonces asked for someone else's device evict only
// that device's older ones, and a caller's attempts are rate limited.
func TestAttestationLimits(t *testing.T) {
	ts := attestServer(t, time.Minute)
	c := &regClient{t: t, base: ts.URL, token: "secret-a"}
	key := registerWithKey(t, c, "inv-1")
	first := getNonce(t, ts, "inv-1")
	for range registry.MaxDeviceNonces {
		getNonce(t, ts, "inv-1")
	}
	code, _ := post(t, ts.URL+registry.AttestPath, signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-1", Nonce: first, Firmware: "3.2.0"}))
	assert.Equal(t, http.StatusForbidden, code, "the oldest nonce was evicted")
	code, b := post(t, ts.URL+registry.AttestPath, signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: "inv-1", Nonce: getNonce(t, ts, "inv-1"), Firmware: "3.2.0"}))
	assert.Equal(t, http.StatusOK, code, string(b))

	cfg := testConfig(t)
	cfg.Allow[auth.ActionAttest] = []string{"anonymous"}
	cfg.Registry.Attestation.Rate, cfg.Registry.Attestation.Burst = 1, 3
	ts2 := startServer(t, cfg, Options{})
	codes := map[int]int{}
	for range 6 {
		code, _ := post(t, ts2.URL+registry.AttestPath, "x.y.z")
		codes[code]++
	}
	assert.Equal(t, map[int]int{http.StatusForbidden: 3, http.StatusTooManyRequests: 3}, codes)
}
