package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const registryYAML = `apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: registry-device-inv-new}
spec:
  devices: {ids: [inv-new], classes: [inverter], vendors: [acme], firmware: ">=3.2.0"}
  target: {paths: ["/v1/inverters/{id}/**"]}
  controlPaths: ["/v1/inverters/{id}/setpoint"]
  writeRateLimit: {perSecond: 1, burst: 2}
  rules:
    - {name: write, effect: allow, access: write, subjects: [spiffe://grid.example/ns/der/sa/controller], paths: ["/v1/inverters/{id}/**"]}
---
apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: registry-device-vw-1}
spec:
  devices: {ids: [vw-1], classes: [inverter], vendors: [voltwerk]}
  target: {paths: ["/v1/inverters/{id}/**"]}
  rules:
    - {name: write, effect: allow, access: write, subjects: ["spiffe://grid.example/**"], paths: ["/v1/inverters/{id}/**"]}
---
apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: registry-versions}
spec:
  rules:
    - {name: w1, subjects: [spiffe://grid.example/ns/metering/sa/meter-reader], source: {header: x-sw-version}, allowed: ">=1.0.0"}
---
apiVersion: meshguard.io/v1
kind: Revocations
metadata: {name: registry-deregistered}
spec:
  deviceIDs: [inv-gone]
  spiffeIDs: [spiffe://grid.example/ns/der/sa/retired]
`

func registryEngine(t *testing.T, src string) *Engine {
	t.Helper()
	e, err := CompileFiles(map[string][]byte{"registry.yaml": []byte(src)})
	require.NoError(t, err)
	return e
}

func TestRegistryScope(t *testing.T) {
	require.NoError(t, registryEngine(t, registryYAML).RegistryScope())
	_, grid := loadGrid(t)
	err := grid.RegistryScope()
	require.ErrorIs(t, err, ErrRegistryScope)
	assert.Contains(t, err.Error(), "workload rule")
	assert.Contains(t, err.Error(), "trust domains")
	for name, src := range map[string]string{
		"workload rule": `{apiVersion: meshguard.io/v1, kind: WorkloadPolicy, metadata: {name: w}, spec: {rules: [{name: r, effect: allow, subjects: ["spiffe://x.example/**"], paths: ["/**"]}]}}`,
		"trust domains": `{apiVersion: meshguard.io/v1, kind: TrustDomain, metadata: {name: x.example}, spec: {}}`,
	} {
		err := registryEngine(t, src).RegistryScope()
		require.ErrorIs(t, err, ErrRegistryScope, name)
		assert.Contains(t, err.Error(), name)
	}
	// The image's tables are what counts, not a compile in this process.
	img, err := MarshalEngine(grid)
	require.NoError(t, err)
	back, err := UnmarshalEngine(img)
	require.NoError(t, err)
	require.ErrorIs(t, back.RegistryScope(), ErrRegistryScope)
}

func TestDecideWith(t *testing.T) {
	_, authors := loadGrid(t)
	reg := registryEngine(t, registryYAML)
	ctrl := "spiffe://grid.example/ns/der/sa/controller"
	reader := "spiffe://grid.example/ns/metering/sa/meter-reader"
	hdrs := func(k, v string) Map { return Map{k: v} }
	sw := Map{"swversion": "2.5.0"}
	cases := []struct {
		name   string
		req    Request
		allow  bool
		reason string
	}{
		{"registered device written by its writer", Request{SPIFFEID: ctrl, Method: "POST", Path: "/v1/inverters/inv-new/setpoint",
			DeviceID: "inv-new", DeviceClass: "inverter", DeviceVendor: "acme", DeviceFirmware: "3.2.0", Claims: sw}, true, ReasonRegistryAllow},
		{"registered device by another workload", Request{SPIFFEID: reader, Headers: Map{"x-sw-version": "1.5.0"}, Method: "POST", Path: "/v1/inverters/inv-new/setpoint",
			DeviceID: "inv-new", DeviceClass: "inverter", DeviceVendor: "acme", DeviceFirmware: "3.2.0", Claims: sw}, false, ReasonDefaultDeny},
		{"firmware outside the registered range", Request{SPIFFEID: ctrl, Method: "POST", Path: "/v1/inverters/inv-new/setpoint",
			DeviceID: "inv-new", DeviceClass: "inverter", DeviceVendor: "acme", DeviceFirmware: "3.1.5", Claims: sw}, false, ReasonDefaultDeny},
		// vw-1 is a voltwerk inverter: the authors' inverters policy
		// selects it, so the registry's wider writers do not count.
		{"device the authors select", Request{SPIFFEID: reader, Headers: Map{"x-sw-version": "1.5.0"}, Method: "POST", Path: "/v1/inverters/vw-1/setpoint",
			DeviceID: "vw-1", DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: "3.2.0", Claims: Map{"swversion": "2.5.0"}}, false, ReasonDefaultDeny},
		{"registry revokes a device", Request{SPIFFEID: ctrl, Method: "POST", Path: "/v1/inverters/inv-gone/setpoint",
			DeviceID: "inv-gone", DeviceClass: "inverter", DeviceVendor: "voltwerk", DeviceFirmware: "3.2.0", Claims: sw}, false, ReasonRevokedDevice},
		{"registry revokes a workload the authors allow", Request{SPIFFEID: "spiffe://grid.example/ns/der/sa/retired", Method: "GET", Path: "/v1/meters/m-1/readings"}, false, ReasonRevokedID},
		{"registry version rule denies", Request{SPIFFEID: reader, Method: "GET", Path: "/v1/meters/m-1/readings", Headers: hdrs("x-sw-version", "0.5.0")}, false, ""},
		{"authors' allow stands with an approved version", Request{SPIFFEID: reader, Method: "GET", Path: "/v1/meters/m-1/readings", Headers: hdrs("x-sw-version", "1.5.0")}, true, ReasonAllowRule},
		{"no device token: the registry allows nothing", Request{SPIFFEID: ctrl, Method: "GET", Path: "/v1/other", Claims: sw}, false, ReasonDefaultDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d Decision
			authors.DecideWith(reg, &c.req, &d)
			assert.Equal(t, c.allow, d.Allow, d.Reason)
			if c.reason != "" {
				assert.Equal(t, c.reason, d.Reason)
			}
			var alone Decision
			authors.DecideWith(nil, &c.req, &alone)
			var plain Decision
			authors.Decide(&c.req, &plain)
			assert.Equal(t, plain, alone)
		})
	}
	var d Decision
	authors.DecideWith(reg, &Request{SPIFFEID: ctrl, Method: "POST", Path: "/v1/inverters/inv-new/setpoint",
		DeviceID: "inv-new", DeviceClass: "inverter", DeviceVendor: "acme", DeviceFirmware: "3.2.0", Claims: sw}, &d)
	assert.True(t, d.Write)
	assert.True(t, d.HasRateLimit)
	assert.Equal(t, RateLimit{PerSecond: 1, Burst: 2}, d.RateLimit)
	assert.Equal(t, []string{"registry-device-inv-new/write"}, d.Rules())
}
