package server

import (
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/registry"
)

// BenchmarkAttest is the distributor's side of an attestation over
// loopback HTTP: the device's JWS checked against its registered key and
// single-use nonce, a signed device token, and the decision log record.
// The devices' work (fetching a nonce, signing) is done before the timer
// starts: devices sign on their own CPUs. Reported as tokens/s.
func BenchmarkAttest(b *testing.B) {
	t := &testing.T{}
	ts := attestServer(t, time.Hour)
	c := &regClient{t: t, base: ts.URL, token: "secret-a"}
	// A device has at most MaxDeviceNonces outstanding: one device per
	// that many prepared attestations.
	signed := make(chan string, b.N)
	var key *ecdsa.PrivateKey
	var id string
	for i := range b.N {
		if i%registry.MaxDeviceNonces == 0 {
			id = fmt.Sprintf("inv-bench-%06d", i)
			key = registerWithKey(t, c, id)
		}
		n := getNonce(t, ts, id)
		signed <- signAttest(t, key, jwa.ES256, registry.AttestTyp, registry.AttestPayload{DeviceID: id, Nonce: n, Firmware: "3.2.0"})
	}
	close(signed)
	// Many devices attest at once (the decision log commits their records
	// in groups).
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			code, body := post(t, ts.URL+registry.AttestPath, <-signed)
			if code != http.StatusOK {
				b.Fatalf("attest: %d %s", code, body)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tokens/s")
}

// BenchmarkRegistryChange10k is one device update (validated, stored
// durably, recorded in the decision log) in a registry of 10k devices.
func BenchmarkRegistryChange10k(b *testing.B) {
	t := &testing.T{}
	ts := registryServer(t)
	c := &regClient{t: t, base: ts.URL, token: "secret-a"}
	for i := range 10000 {
		rec := registry.Record{Kind: registry.KindDevice, ID: fmt.Sprintf("inv-%05d", i), Organisation: "grid-op", Generation: 1,
			Spec: []byte(`{"id":"x"}`)}
		require.NoError(b, ts.registry.Store().Put(b.Context(), rec, 0))
	}
	d := device(t, "inv-new")
	require.Equal(b, http.StatusCreated, c.do(http.MethodPost, "/v1/registry/devices", d, nil).code)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := c.do(http.MethodPut, "/v1/registry/devices/inv-new", d, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, i+1)})
		if r.code != http.StatusOK {
			b.Fatalf("update: %d %s", r.code, r.body)
		}
	}
}
