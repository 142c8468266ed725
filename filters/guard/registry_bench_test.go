//go:build !wasip1

package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/policies/bundle"
)

// BenchmarkRegistryReload measures the guard installing a registry bundle
// of 100k registered devices (100 kinds: class, vendor, writers), compiled
// by the distributor's registry compiler, as the VM sees it (verify,
// image load, scope check, swap):
//
//	go test ./filters/guard -run '^$' -bench RegistryReload -benchtime 5x
func BenchmarkRegistryReload(b *testing.B) {
	f := newFixture(b)
	regKey, regPub, err := bundle.GenerateKey(bundle.AlgEd25519)
	require.NoError(b, err)
	pub, err := json.Marshal(regPub)
	require.NoError(b, err)
	cfg := f.Config(b, func(m map[string]any) {
		p := m["policy"].(map[string]any)
		delete(p, "inline")
		p["distributor"] = map[string]any{"cluster": "distributor", "channel": "grid", "pollInterval": "1s"}
		p["registryKeys"] = json.RawMessage(pub)
	})
	var snap registry.Snapshot
	for i := range 100_000 {
		snap.Devices = append(snap.Devices, registry.Device{ID: fmt.Sprintf("inv-%06d", i), Class: "inverter", Vendor: fmt.Sprintf("vendor-%d", i%10),
			Firmware: ">=1.0.0", Writers: []string{fmt.Sprintf("spiffe://grid.example/ns/der/sa/controller-%d", i%10)}})
	}
	t0 := time.Now()
	pols, data, err := registry.Sources(snap, registry.Revoked{}, map[string]registry.DeviceAccess{"inverter": {
		TargetPaths: []string{"/v1/inverters/{id}/**"}, ControlPaths: []string{"/v1/inverters/{id}/setpoint"}, WritePaths: []string{"/v1/inverters/{id}/**"}}})
	require.NoError(b, err)
	files := map[string][]byte{}
	for n, v := range pols {
		files[bundle.SourcesDir+n] = v
	}
	for n, v := range data {
		files[bundle.DataDir+n] = v
	}
	pack := func(rev uint64) []byte {
		out, err := bundle.PackRegistry(files, bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: rev,
			Created: f.Now.Add(-time.Hour), Expires: f.Now.Add(time.Hour), Key: regKey}})
		require.NoError(b, err)
		return out
	}
	first := pack(1)
	b.Logf("100k devices compile and pack in %s: %d bytes", time.Since(t0).Round(time.Millisecond), len(first))

	h := hosttest.New(b, guardWasm(b), hosttest.PluginConfig(cfg), hosttest.Cluster("distributor"), hosttest.LogLevel(host.LogWarn))
	rev := uint64(0)
	d := make([]time.Duration, 0, b.N)
	for b.Loop() {
		b.StopTimer()
		rev++
		data := first
		if rev > 1 {
			data = pack(rev)
		}
		h.Advance(time.Second)
		var poll *hosttest.Callout
		for _, p := range bundlePolls(h) {
			switch p.Header(":path") {
			case "/v1/bundles/grid.registry":
				poll = p
			default:
				if rev == 1 {
					p.Respond("200", nil, f.Bundle(b, 1, nil))
				} else {
					p.Respond("304", nil, nil)
				}
			}
		}
		require.NotNil(b, poll)
		b.StartTimer()
		t0 := time.Now()
		poll.Respond("200", nil, data)
		d = append(d, time.Since(t0))
	}
	b.StopTimer()
	s := h.NewStream(peer("spiffe://grid.example/ns/der/sa/controller-7"))
	s.Request("POST", "/v1/inverters/inv-000007/setpoint", [2]string{"x-device-token", f.DeviceToken(b, "inv-000007", "inverter", "vendor-7")},
		[2]string{"authorization", "Bearer " + f.SVID(b, "spiffe://grid.example/ns/der/sa/controller-7", nil)})
	s.ExpectNoLocalReply()
	percentiles(b, d)
}
