//go:build !wasip1

package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/policies/bundle"
)

const registryDevices = `apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: registry-device-inv-new}
spec:
  devices: {ids: [inv-new], classes: [inverter], vendors: [acme], firmware: ">=3.0.0"}
  target: {paths: ["/v1/inverters/{id}/**"]}
  controlPaths: ["/v1/inverters/{id}/setpoint"]
  rules:
    - {name: write, effect: allow, access: write, subjects: [spiffe://grid.example/ns/der/sa/controller], paths: ["/v1/inverters/{id}/**"]}
`

const registryRevokes = `apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: registry-deregistered}
spec: {deviceIDs: [inv-new]}
`

// The guard decides with the registry bundle next to the authors' one:
// a registered device becomes writable, a registry bundle holding more
// than registry-derived content (or signed by another key) is refused, a
// revocation from the registry denies on every worker.
func TestRegistryBundle(t *testing.T) {
	f := newFixture(t)
	regKey, regPub, err := bundle.GenerateKey(bundle.AlgEd25519)
	require.NoError(t, err)
	pub, err := json.Marshal(regPub)
	require.NoError(t, err)
	cfg := f.Config(t, func(m map[string]any) {
		distributorConfig(false)(m)
		m["policy"].(map[string]any)["registryKeys"] = json.RawMessage(pub)
	})
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg), hosttest.Cluster("distributor"), hosttest.Workers(2))
	regBundle := func(rev uint64, src string, key any) []byte {
		opts := bundle.BuildOptions{Revision: rev, Created: f.Now.Add(-time.Hour), Expires: f.Now.Add(time.Hour), Key: regKey}
		if key != nil {
			opts.Key = f.BundleKey
		}
		b, err := bundle.Pack(map[string][]byte{"policies/registry.yaml": []byte(src)}, bundle.PackOptions{BuildOptions: opts})
		require.NoError(t, err)
		return b
	}
	write := func(w int) uint32 {
		s := h.NewStreamOn(w, peer(controller))
		s.Request("POST", "/v1/inverters/inv-new/setpoint", [2]string{"x-device-token", f.DeviceToken(t, "inv-new", "inverter", "acme")},
			[2]string{"authorization", "Bearer " + f.ControllerToken(t)})
		if lr := s.LocalReply(); lr != nil {
			return lr.Status
		}
		return 200
	}
	respond := func(rev uint64, authors, registry []byte) {
		t.Helper()
		h.Advance(5 * time.Second)
		polls := bundlePolls(h)
		require.Len(t, polls, 2, "the lease holder polls both channels")
		for _, p := range polls {
			switch p.Header(":path") {
			case "/v1/bundles/grid":
				if authors == nil {
					p.Respond("304", nil, nil)
				} else {
					p.Respond("200", nil, authors)
				}
			case "/v1/bundles/grid.registry":
				if registry == nil {
					p.Respond("304", nil, nil)
				} else {
					p.Respond("200", nil, registry)
				}
			default:
				t.Fatalf("poll of %s", p.Header(":path"))
			}
		}
	}
	// The authors' bundle alone: no registry bundle yet, fail closed.
	respond(0, f.Bundle(t, 1, nil), nil)
	assert.Equal(t, uint32(503), write(0))

	// A registry bundle trying more: a workload rule, a trust domain.
	respond(0, nil, regBundle(1, registryDevices+`---
{apiVersion: meshguard.io/v1, kind: WorkloadPolicy, metadata: {name: w}, spec: {rules: [{name: r, effect: allow, subjects: ["spiffe://grid.example/**"], paths: ["/**"]}]}}
`, nil))
	h.ExpectLog("registry bundle exceeds the registry's scope")
	respond(0, nil, regBundle(2, registryDevices+"---\n{apiVersion: meshguard.io/v1, kind: TrustDomain, metadata: {name: grid.example}, spec: {}}\n", nil))
	// Registry content signed by the authors' key.
	respond(0, nil, regBundle(3, registryDevices, f.BundleKey))
	assert.Equal(t, uint32(503), write(0))
	// Each was refused once, by the worker that fetched it.
	assert.Equal(t, int64(3), h.Counter("wasmcustom.meshguard_bundle_verification_failures_total"))

	// The registry bundle: the registered device is writable on every worker.
	respond(0, nil, regBundle(4, registryDevices, nil))
	for w := range 2 {
		assert.Equal(t, uint32(200), write(w), "worker %d", w)
	}
	// Deregistered: the next write is denied on every worker.
	respond(0, nil, regBundle(5, registryRevokes, nil))
	for w := range 2 {
		assert.Equal(t, uint32(403), write(w), "worker %d", w)
	}
}

// One key trusted as both the authors' and the registry's would let
// registry content pass for the authors': the configuration is refused
// and every request fails closed.
func TestRegistryKeyMustBeItsOwn(t *testing.T) {
	f := newFixture(t)
	pub, err := json.Marshal(f.BundlePub)
	require.NoError(t, err)
	cfg := f.Config(t, func(m map[string]any) {
		distributorConfig(true)(m)
		m["policy"].(map[string]any)["registryKeys"] = json.RawMessage(pub)
	})
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg), hosttest.Cluster("distributor"))
	h.ExpectLog("is also in policy.verifyKeys")
	s := h.NewStream(peer(reader))
	s.Request("GET", "/v1/meters/42/readings")
	s.ExpectLocalReply(503)
}
