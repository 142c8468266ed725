package policies

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes through the parser and checker: it must
// never panic, and an accepted set must compile.
func FuzzLoad(f *testing.F) {
	for _, glob := range []string{"testdata/grid/*.yaml", "testdata/errors/*.yaml", "testdata/sunsets/*.yaml", "testdata/callerlimits/*.yaml", "testdata/upstream/*.yaml", "testdata/users/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Load(map[string][]byte{"f.yaml": data})
		if err != nil {
			if s != nil {
				t.Fatal("Load returned a set and an error")
			}
			return
		}
		if _, err := Compile(s); err != nil {
			t.Fatalf("checked set does not compile: %v", err)
		}
	})
}

// FuzzDecide feeds arbitrary request fields to the grid engine: it must
// never panic, must be deterministic, must agree with Explain, and every
// allow must respect the decision order's refusals.
func FuzzDecide(f *testing.F) {
	s, e := loadGrid(f)
	for _, c := range s.Tests[0].Cases {
		in := c.Input
		dev := InputDevice{}
		if in.Device != nil {
			dev = *in.Device
		}
		f.Add(in.SPIFFEID, "", false, in.JTI, in.Claims["swversion"], dev.ID, dev.Class, dev.Firmware, in.Method, in.Path)
		f.Add(in.SPIFFEID, in.SPIFFEID, false, in.JTI, in.Claims["swversion"], dev.ID, dev.Class, dev.Firmware, in.Method, in.Path)
	}
	f.Add("spiffe://grid.example/ns/der/sa/controller", "spiffe://grid.example/ns/edge/sa/gw", true, "", "2.3.1", "inv-0042", "inverter", "3.2.0",
		"PUT", "/v1/inverters/INV-0042/setpoint")
	f.Add("spiffe://grid.example/ns/der/sa/controller", "", false, "", "2.3.1", "inv-0042", "inverter", "3.2.0", "PUT", "/v1/inverters/inv-0043/setpoint")
	f.Fuzz(func(t *testing.T, id, peer string, fwd bool, jti, ver, devID, class, fw, method, path string) {
		req := &Request{SPIFFEID: id, PeerID: peer, Forwarded: fwd, JTI: jti, Claims: Map{"swversion": ver}, DeviceID: devID,
			DeviceClass: class, DeviceVendor: "voltwerk", DeviceFirmware: fw, Method: method, Path: path, Headers: Map{}}
		var d1, d2, d3 Decision
		e.Decide(req, &d1)
		e.Decide(req, &d2)
		if d1 != d2 {
			t.Fatalf("nondeterministic decision: %+v vs %+v", d1, d2)
		}
		e.Explain(req, &d3)
		if d1 != d3 {
			t.Fatalf("Explain decides %+v, Decide %+v", d3, d1)
		}
		if !d1.Allow {
			return
		}
		caller := id
		if caller == "" {
			caller = peer
		}
		switch {
		case d1.NumRules != 1:
			t.Fatal("allow without exactly one deciding rule")
		case checkPath(path) != nil:
			t.Fatalf("allowed a non-canonical path %q", path)
		case id != "" && peer != "" && id != peer && !fwd:
			t.Fatal("allowed two different identities without a forwarder")
		case d1.TargetDevice != "" && !equalFold(d1.TargetDevice, devID):
			t.Fatalf("allowed target %q with device token %q", d1.TargetDevice, devID)
		}
		if name, _ := (&state{e: e, req: req, target: d1.TargetDevice}).revokedBy(&e.revoked, caller); name != "" {
			t.Fatalf("allowed a request revoked by %s", name)
		}
		if d1.Write {
			for i := range e.rules {
				if e.rules[i].id == d1.Rule() && e.rules[i].dev == nil {
					t.Fatalf("device write allowed by workload rule %s", d1.Rule())
				}
			}
		}
	})
}
