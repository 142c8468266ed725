package policies

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes through the parser and checker: it must
// never panic, and an accepted set must compile.
func FuzzLoad(f *testing.F) {
	for _, glob := range []string{"testdata/grid/*.yaml", "testdata/errors/*.yaml"} {
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
// never panic and must be deterministic.
func FuzzDecide(f *testing.F) {
	s, e := loadGrid(f)
	for _, c := range s.Tests[0].Cases {
		in := c.Input
		dev := InputDevice{}
		if in.Device != nil {
			dev = *in.Device
		}
		f.Add(in.SPIFFEID, in.JTI, in.Claims["swversion"], dev.ID, dev.Class, dev.Firmware, in.Method, in.Path)
	}
	f.Fuzz(func(t *testing.T, id, jti, ver, devID, class, fw, method, path string) {
		req := &Request{SPIFFEID: id, JTI: jti, Claims: Map{"swversion": ver}, DeviceID: devID, DeviceClass: class,
			DeviceVendor: "voltwerk", DeviceFirmware: fw, Method: method, Path: path, Headers: Map{}}
		var d1, d2 Decision
		e.Decide(req, &d1)
		e.Decide(req, &d2)
		if d1 != d2 {
			t.Fatalf("nondeterministic decision: %+v vs %+v", d1, d2)
		}
		if d1.Allow && d1.NumRules == 0 {
			t.Fatal("allow without a deciding rule")
		}
	})
}
