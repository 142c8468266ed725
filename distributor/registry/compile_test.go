package registry

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
)

func TestSources(t *testing.T) {
	access := map[string]DeviceAccess{"inverter": {TargetPaths: []string{"/v1/inverters/{id}/**"}, WritePaths: []string{"/v1/inverters/{id}/**"},
		ReadPaths: []string{"/v1/inverters/{id}/status"}}}
	ctl, other := "spiffe://grid.example/ns/der/sa/controller", "spiffe://grid.example/ns/der/sa/other"
	snap := Snapshot{
		Devices: []Device{
			{ID: "inv-1", Class: "inverter", Vendor: "acme", Firmware: ">=1.0.0", Writers: []string{ctl}},
			{ID: "inv-2", Class: "inverter", Vendor: "acme", Firmware: ">=1.0.0", Writers: []string{ctl}},
			{ID: "inv-3", Class: "inverter", Vendor: "acme", Writers: []string{other}, WriteLimit: &WriteLimit{PerSecond: 1, Burst: 2}},
			{ID: "mtr-1", Class: "meter", Vendor: "acme", Writers: []string{ctl}}, // no access template
		},
		Workloads: []Workload{
			{SPIFFEID: ctl, Versions: &Versions{Range: ">=2.0.0", Denied: []string{"2.4.1"}}},
			{SPIFFEID: other, Versions: &Versions{Range: ">=1.0.0", Source: "header:x-sw-version"}},
			{SPIFFEID: "spiffe://grid.example/ns/x/sa/none"},
		},
	}
	pols, data, err := Sources(snap, Revoked{Devices: []string{"INV-9", "inv-1", "inv-9"}, Workloads: []string{"spiffe://grid.example/ns/old/sa/gone"}}, access)
	require.NoError(t, err)
	assert.JSONEq(t, `{"workloads":["spiffe://grid.example/ns/old/sa/gone"],"devices":["inv-9"]}`, string(data[DataRevoked]),
		"re-registered ids are not revoked; ids fold")
	files := map[string][]byte{}
	for n, b := range pols {
		files[n] = b
	}
	set, err := policies.Load(files)
	require.NoError(t, err)
	assert.Len(t, set.Devices, 2, "devices registered alike share a policy; a class without a template gets none")
	e, err := policies.Compile(set)
	require.NoError(t, err)
	require.NoError(t, e.RegistryScope())
	c := e.Counts()
	assert.Equal(t, 2, c.VersionRules)
	assert.Equal(t, 2, c.Revocations)

	decide := func(r policies.Request) policies.Decision {
		var d policies.Decision
		e.Decide(&r, &d)
		return d
	}
	w := func(id, caller, fw string) policies.Request {
		return policies.Request{SPIFFEID: caller, Method: "POST", Path: "/v1/inverters/" + id + "/setpoint", DeviceID: id,
			DeviceClass: "inverter", DeviceVendor: "acme", DeviceFirmware: fw, Claims: policies.Map{"swversion": "2.5.0"},
			Headers: policies.Map{"x-sw-version": "1.1.0"}}
	}
	assert.True(t, decide(w("inv-2", ctl, "1.0.0")).Allow)
	assert.False(t, decide(w("inv-2", ctl, "0.9.0")).Allow, "firmware outside the approved range")
	assert.False(t, decide(w("inv-2", other, "1.0.0")).Allow, "not a writer")
	d := decide(w("inv-3", other, "1.0.0"))
	assert.True(t, d.Allow)
	assert.Equal(t, policies.RateLimit{PerSecond: 1, Burst: 2}, d.RateLimit)
	r := w("inv-1", ctl, "1.0.0")
	r.Claims = policies.Map{"swversion": "2.4.1"}
	assert.False(t, decide(r).Allow, "deny-listed build")
	d = decide(w("inv-9", ctl, "1.0.0"))
	assert.Equal(t, policies.ReasonRevokedDevice, d.Reason)

	// An empty registry compiles to nothing (the publisher adds a comment file).
	pols, _, err = Sources(Snapshot{}, Revoked{}, access)
	require.NoError(t, err)
	assert.Empty(t, pols)
}
