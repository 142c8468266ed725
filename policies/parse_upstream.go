//go:build !wasip1

package policies

import (
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"
)

// upstreamPolicy reads an UpstreamVersionPolicy spec.
func (p *parser) upstreamPolicy(spec *yaml.Node, meta Meta) {
	u := &UpstreamVersionPolicy{Meta: meta}
	sf := p.fields(spec, "UpstreamVersionPolicy spec", "rules")
	for _, n := range p.seq(sf["rules"], "rules") {
		u.Rules = append(u.Rules, p.upstreamRule(n, meta))
	}
	p.set.Upstreams = append(p.set.Upstreams, u)
}

func (p *parser) upstreamRule(n *yaml.Node, meta Meta) *UpstreamVersionRule {
	f := p.fields(n, "upstream version rule", "name", "id", "dryRun", "upstreams", "trustDomains", "deviceClasses", "source", "allowed", "denied")
	p.require(f, n, "upstream version rule", "name", "source")
	r := &UpstreamVersionRule{Name: p.str(f["name"], "name"), ID: p.str(f["id"], "id"), Pos: p.pos(n),
		DryRun: meta.DryRun || p.boolean(f["dryRun"], "dryRun"), Upstreams: p.patterns(f["upstreams"], "upstreams"),
		TrustDomains: p.patterns(f["trustDomains"], "trustDomains"), DeviceClasses: p.strs(f["deviceClasses"], "deviceClasses"),
		Denied: p.patterns(f["denied"], "denied")}
	if r.ID == "" {
		r.ID = meta.Name + "/" + r.Name
	}
	if a := f["allowed"]; a != nil {
		r.Allowed = p.allowed(a)
	}
	if s := f["source"]; s != nil {
		sf := p.fields(s, "upstream version source", "upstreamPeer", "hostMetadata", "deviceFirmware")
		r.Source.Pos = p.pos(s)
		if l := sf["upstreamPeer"]; l != nil {
			if v := p.str(l, "upstreamPeer"); v != "version" {
				p.errorf(l, "upstreamPeer must be \"version\" (the Istio upstream peer version)")
			}
			r.Source.PeerVersion = true
		}
		if m := sf["hostMetadata"]; m != nil {
			mf := p.fields(m, "hostMetadata", "filter", "key")
			p.require(mf, m, "hostMetadata", "filter", "key")
			r.Source.MetaFilter, r.Source.MetaKey = p.str(mf["filter"], "filter"), p.str(mf["key"], "key")
			for k, v := range map[string]string{"filter": r.Source.MetaFilter, "key": r.Source.MetaKey} {
				if mf[k] != nil && (v == "" || strings.ContainsRune(v, 0)) {
					p.errorf(mf[k], "hostMetadata %s must be a non-empty string without NUL", k)
				}
			}
		}
		if d := sf["deviceFirmware"]; d != nil {
			if !p.boolean(d, "deviceFirmware") {
				p.errorf(d, "deviceFirmware must be true")
			}
			r.Source.DeviceFirmware = true
		}
		if len(sf) != 1 {
			p.errorf(s, "upstream version source needs exactly one of upstreamPeer, hostMetadata, deviceFirmware")
		}
		if len(sf) == 1 && r.Source.DeviceFirmware && len(r.DeviceClasses) == 0 {
			p.errorf(s, "source deviceFirmware reads the target device's registry entry: the rule needs deviceClasses")
		}
	}
	if len(r.Upstreams) == 0 && len(r.TrustDomains) == 0 && len(r.DeviceClasses) == 0 {
		p.errorf(n, "upstream version rule %q must name upstreams, trustDomains or deviceClasses", r.Name)
	}
	return r
}

// deviceRegistry reads a DeviceRegistry spec.
func (p *parser) deviceRegistry(spec *yaml.Node, meta Meta) {
	g := &DeviceRegistry{Meta: meta}
	sf := p.fields(spec, "DeviceRegistry spec", "devices")
	p.require(sf, spec, "DeviceRegistry spec", "devices")
	for _, n := range p.seq(sf["devices"], "devices") {
		f := p.fields(n, "registered device", "id", "class", "vendor", "model", "firmware")
		p.require(f, n, "registered device", "id", "class", "firmware")
		d := RegisteredDevice{ID: p.str(f["id"], "id"), Class: p.str(f["class"], "class"), Vendor: p.str(f["vendor"], "vendor"),
			Model: p.str(f["model"], "model"), Firmware: p.str(f["firmware"], "firmware"), Pos: p.pos(n)}
		if f["id"] != nil {
			switch {
			case d.ID == "":
				p.errorf(f["id"], "device id must not be empty")
			case len(d.ID) > MaxDeviceIDLen:
				p.errorf(f["id"], "device id %q is longer than %d bytes", d.ID, MaxDeviceIDLen)
			case looksLFDI(d.ID) != 0 && len(d.ID) != 40:
				p.errorf(f["id"], "device id %q looks like an LFDI but is not 40 hex characters", d.ID)
			}
		}
		if f["class"] != nil && d.Class == "" {
			p.errorf(f["class"], "class must not be empty")
		}
		if fw := f["firmware"]; fw != nil {
			if _, err := semver.StrictNewVersion(d.Firmware); err != nil || len(d.Firmware) > 256 {
				p.errorf(fw, "firmware: invalid version %q (SemVer 2.0.0: MAJOR.MINOR.PATCH[-PRE][+BUILD], no v prefix)", d.Firmware)
			}
		}
		g.Devices = append(g.Devices, d)
	}
	p.set.Registries = append(p.set.Registries, g)
}

// checkUpstream checks the caller's-side kinds: names, rule ids, upstream
// patterns, ranges and denied versions, and device ids registered twice.
func (c *checker) checkUpstream(s *Set) {
	for _, u := range s.Upstreams {
		c.name(KindUpstreamVersionPolicy, u.Meta)
		for _, r := range u.Rules {
			c.ruleID(r.ID, r.Pos)
			c.subjects(r.Upstreams, r.TrustDomains)
			for _, u := range r.Upstreams {
				if _, err := subjectSegments([]Pattern{u}, nil); err != nil {
					c.add(u.Pos, "%s", strings.TrimPrefix(err.Error(), u.Pos.String()+": "))
				}
			}
			for _, a := range r.Allowed {
				c.rangeCheck(a.Pos, "allowed", a.Range)
			}
			for _, d := range r.Denied {
				if _, err := semver.StrictNewVersion(d.Text); err != nil {
					c.add(d.Pos, "denied: invalid version %q: %v (SemVer 2.0.0: MAJOR.MINOR.PATCH[-PRE][+BUILD], no v prefix)", d.Text, err)
				}
			}
		}
	}
	seen := map[string]Pos{}
	for _, g := range s.Registries {
		c.name(KindDeviceRegistry, g.Meta)
		for _, d := range g.Devices {
			k := asciiLower(d.ID)
			if prev, ok := seen[k]; ok {
				c.add(d.Pos, "device %q is registered twice (first at %s)", d.ID, prev)
				continue
			}
			seen[k] = d.Pos
		}
	}
}
