package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// DeviceAccess is where the requests that read and write devices of one
// class go: the registry's DevicePolicy for a device of that class names
// the device's readers and writers on these paths. A class without one
// gets no access rules (its devices can still be revoked).
type DeviceAccess struct {
	// TargetPaths are templates naming the device ({id}), as
	// DevicePolicy.target.paths.
	TargetPaths []string `yaml:"target_paths" json:"target_paths"`
	// ControlPaths are writes whatever the method (DevicePolicy.controlPaths).
	ControlPaths []string `yaml:"control_paths" json:"control_paths,omitempty"`
	// ReadPaths and WritePaths are the paths of the read and write rules.
	ReadPaths  []string `yaml:"read_paths" json:"read_paths,omitempty"`
	WritePaths []string `yaml:"write_paths" json:"write_paths,omitempty"`
}

// Validate checks an access template (the paths are checked again when
// the registry's policies are compiled).
func (a DeviceAccess) Validate(class string) error {
	if len(a.TargetPaths) == 0 {
		return fmt.Errorf("registry device class %s: target_paths is required (the requests that name a device)", class)
	}
	if len(a.ReadPaths) == 0 && len(a.WritePaths) == 0 {
		return fmt.Errorf("registry device class %s: read_paths or write_paths is required", class)
	}
	return nil
}

// Sources file names of a registry bundle, under policies/.
const (
	SourceDevices     = "registry/devices.yaml"
	SourceVersions    = "registry/versions.yaml"
	SourceRevocations = "registry/revocations.yaml"
	// DataRevoked lists the deregistered ids (data/, not compiled): the
	// next compile keeps revoking them until they are registered again.
	DataRevoked = "registry/revoked.json"
)

// Revoked are deregistered identities.
type Revoked struct {
	Workloads []string `json:"workloads"`
	Devices   []string `json:"devices"`
}

// Snapshot is the registry's entries, sorted by id.
type Snapshot struct {
	Workloads []Workload
	Devices   []Device
}

// Load reads every entry of st.
func Load(ctx context.Context, st Store) (Snapshot, error) {
	var s Snapshot
	for _, k := range []Kind{KindWorkload, KindDevice} {
		recs, err := st.List(ctx, k)
		if err != nil {
			return s, fmt.Errorf("registry: listing %s: %w", k, err)
		}
		for _, r := range recs {
			switch k {
			case KindWorkload:
				var w Workload
				if err := json.Unmarshal(r.Spec, &w); err != nil {
					return s, fmt.Errorf("registry: workload %s: %w", r.ID, err)
				}
				s.Workloads = append(s.Workloads, w)
			default:
				var d Device
				if err := json.Unmarshal(r.Spec, &d); err != nil {
					return s, fmt.Errorf("registry: device %s: %w", r.ID, err)
				}
				s.Devices = append(s.Devices, d)
			}
		}
	}
	return s, nil
}

// Sources compiles the registry's entries into registry-derived policy
// files (keys are paths under policies/ and data/ of a bundle): one
// DevicePolicy per kind of registered device (selected by the ids, class,
// vendor and approved firmware range; its readers may read and its writers write
// on its class's access paths, within its write limit), one VersionPolicy
// rule per workload with approved versions, and a Revocations document for
// the deregistered identities that are not registered again. Nothing else:
// the guard refuses a registry bundle holding any other kind.
func Sources(s Snapshot, revoked Revoked, access map[string]DeviceAccess) (policies map[string][]byte, data map[string][]byte, err error) {
	var devs, vers bytes.Buffer
	doc := func(buf *bytes.Buffer, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if buf.Len() > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
		buf.WriteByte('\n')
		return nil
	}
	// Devices registered alike (class, vendor, firmware, readers, writers,
	// write limit) share one DevicePolicy selecting all their ids: the
	// policy a fleet compiles to grows with its kinds, not its devices.
	live := map[string]bool{}
	type group struct {
		d   Device
		ids []string
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, d := range s.Devices {
		live["d/"+strings.ToLower(d.ID)] = true
		if _, ok := access[d.Class]; !ok || len(d.Readers)+len(d.Writers) == 0 {
			continue
		}
		k, err := json.Marshal([]any{d.Class, d.Vendor, d.Firmware, d.Readers, d.Writers, d.WriteLimit})
		if err != nil {
			return nil, nil, err
		}
		g := byKey[string(k)]
		if g == nil {
			g = &group{d: d}
			byKey[string(k)] = g
			groups = append(groups, g)
		}
		g.ids = append(g.ids, d.ID)
	}
	for n, g := range groups {
		d, a := g.d, access[g.d.Class]
		sel := map[string]any{"ids": g.ids, "classes": []string{d.Class}, "vendors": []string{d.Vendor}}
		if d.Firmware != "" {
			sel["firmware"] = d.Firmware
		}
		spec := map[string]any{"devices": sel, "target": map[string]any{"paths": a.TargetPaths}}
		if len(a.ControlPaths) > 0 {
			spec["controlPaths"] = a.ControlPaths
		}
		if l := d.WriteLimit; l != nil {
			spec["writeRateLimit"] = map[string]any{"perSecond": l.PerSecond, "burst": l.Burst}
		}
		var rules []map[string]any
		if len(d.Readers) > 0 && len(a.ReadPaths) > 0 {
			rules = append(rules, map[string]any{"name": "read", "effect": "allow", "access": "read", "subjects": d.Readers, "paths": a.ReadPaths})
		}
		if len(d.Writers) > 0 && len(a.WritePaths) > 0 {
			rules = append(rules, map[string]any{"name": "write", "effect": "allow", "access": "write", "subjects": d.Writers, "paths": a.WritePaths})
		}
		if len(rules) == 0 {
			continue
		}
		spec["rules"] = rules
		if err := doc(&devs, map[string]any{"apiVersion": "meshguard.io/v1", "kind": "DevicePolicy",
			"metadata": map[string]any{"name": fmt.Sprintf("registry-devices-%d", n+1)}, "spec": spec}); err != nil {
			return nil, nil, err
		}
	}
	var vrules []map[string]any
	for _, w := range s.Workloads {
		live["w/"+w.SPIFFEID] = true
		v := w.Versions
		if v == nil || v.Range == "" && len(v.Denied) == 0 {
			continue
		}
		src := map[string]any{"jwtClaim": "swversion"}
		if kind, name, ok := strings.Cut(v.Source, ":"); ok {
			switch kind {
			case "claim":
				src = map[string]any{"jwtClaim": name}
			case "header":
				src = map[string]any{"header": name}
			}
		}
		r := map[string]any{"name": fmt.Sprintf("workload-%d", len(vrules)+1), "subjects": []string{w.SPIFFEID}, "source": src}
		if v.Range != "" {
			r["allowed"] = v.Range
		}
		if len(v.Denied) > 0 {
			r["denied"] = v.Denied
		}
		vrules = append(vrules, r)
	}
	if len(vrules) > 0 {
		if err := doc(&vers, map[string]any{"apiVersion": "meshguard.io/v1", "kind": "VersionPolicy",
			"metadata": map[string]any{"name": "registry-versions"}, "spec": map[string]any{"rules": vrules}}); err != nil {
			return nil, nil, err
		}
	}
	// Deregistered identities stay revoked until registered again.
	var rv Revoked
	for _, id := range dedupe(revoked.Workloads) {
		if !live["w/"+id] {
			rv.Workloads = append(rv.Workloads, id)
		}
	}
	for _, id := range dedupe(revoked.Devices) {
		if !live["d/"+strings.ToLower(id)] {
			rv.Devices = append(rv.Devices, strings.ToLower(id))
		}
	}
	rv.Devices = dedupe(rv.Devices)
	policies, data = map[string][]byte{}, map[string][]byte{}
	if devs.Len() > 0 {
		policies[SourceDevices] = devs.Bytes()
	}
	if vers.Len() > 0 {
		policies[SourceVersions] = vers.Bytes()
	}
	if len(rv.Workloads)+len(rv.Devices) > 0 {
		spec := map[string]any{}
		if len(rv.Workloads) > 0 {
			spec["spiffeIDs"] = rv.Workloads
		}
		if len(rv.Devices) > 0 {
			spec["deviceIDs"] = rv.Devices
		}
		var b bytes.Buffer
		if err := doc(&b, map[string]any{"apiVersion": "meshguard.io/v1", "kind": "Revocations",
			"metadata": map[string]any{"name": "registry-deregistered"}, "spec": spec}); err != nil {
			return nil, nil, err
		}
		policies[SourceRevocations] = b.Bytes()
	}
	if rv.Workloads == nil {
		rv.Workloads = []string{}
	}
	if rv.Devices == nil {
		rv.Devices = []string{}
	}
	rb, err := json.Marshal(rv)
	if err != nil {
		return nil, nil, err
	}
	data[DataRevoked] = rb
	return policies, data, nil
}

func dedupe(l []string) []string {
	out := append([]string(nil), l...)
	sort.Strings(out)
	n := 0
	for i, s := range out {
		if i == 0 || s != out[n-1] {
			out[n] = s
			n++
		}
	}
	return out[:n]
}
