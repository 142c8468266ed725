package policies

import (
	"fmt"
	"strings"
)

// Document kinds of the caller's side (see policies/README.md, Upstream versions).
const (
	KindUpstreamVersionPolicy = "UpstreamVersionPolicy"
	KindDeviceRegistry        = "DeviceRegistry"
)

// Reasons of upstream decisions.
const (
	ReasonUpstreamRevoked      = "upstream SPIFFE ID is revoked"
	ReasonTargetRevoked        = "target device is revoked"
	ReasonTargetUnregistered   = "target device is not in the device registry"
	ReasonUpstreamVersionAllow = "upstream versions approved"
)

// UpstreamSource names where an upstream rule reads the target's version.
type UpstreamSource struct {
	PeerVersion    bool   // Istio's upstream peer metadata: filter_state.upstream_peer.version
	MetaFilter     string // with MetaKey: xds.upstream_host_metadata.filter_metadata.<MetaFilter>.<MetaKey>
	MetaKey        string
	DeviceFirmware bool // the target device's firmware in the DeviceRegistry
	Pos            Pos
}

// needsUpstream reports whether the source is known only once the proxy
// has picked the upstream host.
func (s UpstreamSource) needsUpstream() bool { return !s.DeviceFirmware }

// UpstreamVersionRule approves the versions of the upstreams or target
// devices a guard on the caller's side may send requests to.
type UpstreamVersionRule struct {
	ID            string
	Name          string
	DryRun        bool
	Upstreams     []Pattern // upstream SPIFFE ID patterns
	TrustDomains  []Pattern
	DeviceClasses []string // registry classes of the target device
	Source        UpstreamSource
	Allowed       []AllowedRange
	Denied        []Pattern
	Pos           Pos
}

// UpstreamVersionPolicy holds upstream version rules.
type UpstreamVersionPolicy struct {
	Meta
	Rules []*UpstreamVersionRule
}

// RegisteredDevice is one device of a DeviceRegistry.
type RegisteredDevice struct {
	ID, Class, Vendor, Model, Firmware string
	Pos                                Pos
}

// DeviceRegistry lists known devices and the firmware they run.
type DeviceRegistry struct {
	Meta
	Devices []RegisteredDevice
}

// UpstreamRequest is the input of an upstream (caller's side) decision.
// Strings are borrowed, never retained.
type UpstreamRequest struct {
	Method         string
	Path           string // names the target device through DevicePolicy target paths
	Headers        Getter // request headers (target headers); may be nil
	TargetDeviceID string
	// UpstreamKnown says the proxy has picked the upstream host, so the
	// fields below are what it presents (empty: not presented).
	UpstreamKnown bool
	Upstream      string // upstream.uri_san_peer_certificate
	PeerVersion   string // filter_state.upstream_peer.version
	// HostMetadata reads xds.upstream_host_metadata.filter_metadata.FILTER.KEY
	// as a string; nil: none.
	HostMetadata func(filter, key string) (string, bool)
	Now          int64 // Unix nanoseconds; 0: the current time

	rq Request // the target-naming view DecideUpstream builds (no allocation)
}

// UpstreamDecision is the outcome of Engine.DecideUpstream.
type UpstreamDecision struct {
	Allow bool
	// Pending says rules that apply need the upstream, which the request
	// did not know yet: decide again once it is known.
	Pending      bool
	Rule         string // the deciding rule (a failing one), or the revoking document
	Reason       string
	Version      string // the version the deciding (or flagging) rule read
	DryRun       bool
	DryRunRule   string
	TargetDevice string
	Audit        bool
}

type cupstream struct {
	cversion
	subs    [][]string // SPIFFE ID patterns split at "/" (trust domain first); nil: none
	classes []string
	src     UpstreamSource
}

type cregistered struct {
	id, class, vendor, model, firmware string
}

// upstreamTables is the compiled caller's-side policy.
type upstreamTables struct {
	rules    []cupstream
	registry map[string]*cregistered // lower-case id
	classful bool                    // an enforced rule selects by device class
}

func (e *Engine) compileUpstream(s *Set) error {
	u := &e.up
	u.registry = map[string]*cregistered{}
	for _, g := range s.Registries {
		for _, d := range g.Devices {
			k := asciiLower(d.ID)
			if _, dup := u.registry[k]; !dup {
				u.registry[k] = &cregistered{id: d.ID, class: d.Class, vendor: d.Vendor, model: d.Model, firmware: d.Firmware}
			}
		}
	}
	for _, p := range s.Upstreams {
		for _, r := range p.Rules {
			c, err := e.versionCore(&VersionRule{ID: r.ID, DryRun: r.DryRun, Allowed: r.Allowed, Denied: r.Denied})
			if err != nil {
				return err
			}
			cu := cupstream{cversion: c, classes: r.DeviceClasses, src: r.Source}
			if len(r.Upstreams) > 0 || len(r.TrustDomains) > 0 {
				if cu.subs, err = subjectSegments(r.Upstreams, r.TrustDomains); err != nil {
					return err
				}
			}
			if len(cu.classes) > 0 && !cu.dryRun {
				u.classful = true
			}
			u.rules = append(u.rules, cu)
		}
	}
	return nil
}

// UsesUpstream reports whether the engine has upstream version rules, so a
// guard on the caller's side can skip the upstream entirely otherwise.
func (e *Engine) UsesUpstream() bool { return len(e.up.rules) > 0 }

// UpstreamMetadataKeys returns the host metadata (filter, key) pairs the
// upstream rules read.
func (e *Engine) UpstreamMetadataKeys() [][2]string {
	var out [][2]string
	for _, r := range e.up.rules {
		if r.src.MetaFilter != "" {
			k := [2]string{r.src.MetaFilter, r.src.MetaKey}
			found := false
			for _, o := range out {
				found = found || o == k
			}
			if !found {
				out = append(out, k)
			}
		}
	}
	return out
}

// matchSegs reports whether a SPIFFE ID matches one compiled pattern.
func matchSegs(pat []string, id string) bool {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok || rest == "" {
		return false
	}
	for i, p := range pat {
		if p == "**" && i == len(pat)-1 {
			return true
		}
		if rest == "" && i > 0 {
			return false
		}
		seg, r, last := next(rest)
		switch {
		case p == "*" || len(p) > 2 && p[0] == '{' && p[len(p)-1] == '}':
			if seg == "" {
				return false
			}
		case p != seg:
			return false
		}
		if last {
			rest = ""
			if i == len(pat)-1 {
				return true
			}
			// Only a final "**" may follow the last segment.
			return i == len(pat)-2 && pat[i+1] == "**"
		}
		rest = r
	}
	return false
}

// DecideUpstream decides whether a guard on the caller's side may send the
// request to its upstream (policies/README.md, Upstream versions). It
// allocates nothing and is safe for concurrent use.
func (e *Engine) DecideUpstream(req *UpstreamRequest, d *UpstreamDecision) {
	*d = UpstreamDecision{Allow: true, Reason: ReasonUpstreamVersionAllow}
	deny := func(rule, reason string) {
		d.Allow, d.Rule, d.Reason, d.Audit, d.Pending = false, rule, reason, true, false
	}
	end, pathErr := scanPath(req.Path)
	req.rq = Request{Method: req.Method, Path: req.Path, Headers: req.Headers, TargetDeviceID: req.TargetDeviceID, Now: req.Now}
	st := state{e: e, req: &req.rq}
	if pathErr != nil {
		st.path = trimPath(req.Path)
	} else {
		st.path = req.Path[1:end]
	}
	// The target is reported on every decision, as Decide does.
	if e.target != none || req.TargetDeviceID != "" || req.Headers != nil && len(e.targetHeaders) > 0 {
		st.targets()
	}
	d.TargetDevice = st.target
	// 1. The path must be canonical (it names the target device).
	if pathErr != nil {
		deny("", pathErr.Error())
		return
	}
	// 2. Target naming.
	switch {
	case st.targetConflict:
		deny("", ReasonTargetConflict)
		return
	case st.targetEmpty:
		deny("", ReasonTargetEmpty)
		return
	case len(st.target) > MaxDeviceIDLen:
		deny("", ReasonDeviceIDTooLong)
		return
	}
	// 3. Revocations of the target device and the upstream.
	if e.anyRevoked {
		if st.target != "" {
			if name, ok := lookupFold(e.revoked.devices, st.target); ok {
				deny(name, ReasonTargetRevoked)
				return
			}
		}
		if req.UpstreamKnown && req.Upstream != "" {
			if name, ok := e.revoked.ids[req.Upstream]; ok {
				deny(name, ReasonUpstreamRevoked)
				return
			}
		}
	}
	var dev *cregistered
	if st.target != "" {
		dev, _ = lookupFold(e.up.registry, st.target)
		// 4. A named target unknown to the registry cannot be judged by
		// class rules: refused when any enforced rule selects by class.
		if dev == nil && e.up.classful {
			deny("", ReasonTargetUnregistered)
			return
		}
	}
	// 5. Upstream version rules, in source order.
	for i := range e.up.rules {
		r := &e.up.rules[i]
		sel := dev != nil && in(r.classes, dev.class)
		needUp := r.src.needsUpstream()
		if !sel && r.subs != nil {
			if !req.UpstreamKnown {
				// Whether it selects is known once the upstream is.
				d.Pending = true
				continue
			}
			for _, p := range r.subs {
				if matchSegs(p, req.Upstream) {
					sel = true
					break
				}
			}
		}
		if !sel {
			continue
		}
		if needUp && !req.UpstreamKnown {
			d.Pending = true
			continue
		}
		var v string
		switch {
		case r.src.DeviceFirmware:
			if dev != nil {
				v = dev.firmware
			}
		case r.src.PeerVersion:
			v = req.PeerVersion
		case req.HostMetadata != nil:
			v, _ = req.HostMetadata(r.src.MetaFilter, r.src.MetaKey)
		}
		reason := r.verdict(v, &st)
		switch {
		case reason == "":
		case r.dryRun:
			if !d.DryRun {
				d.DryRun, d.DryRunRule, d.Audit = true, r.id, true
				if d.Allow {
					d.Version = v
				}
			}
		default:
			deny(r.id, reason)
			d.Version = v
			if d.DryRunRule != "" {
				// A deny is never flagged by dry-run rules.
				d.DryRun, d.DryRunRule = false, ""
			}
			return
		}
	}
}

// String is a short form for logs and tests.
func (d *UpstreamDecision) String() string {
	return fmt.Sprintf("allow=%v pending=%v rule=%q reason=%q version=%q dryRun=%q", d.Allow, d.Pending, d.Rule, d.Reason, d.Version, d.DryRunRule)
}

// versionCore compiles a version rule's allowed and denied lists.
func (e *Engine) versionCore(r *VersionRule) (cversion, error) {
	c := cversion{id: r.ID, dryRun: r.DryRun, source: r.Source}
	for _, a := range r.Allowed {
		vr, err := parseRange(a.Range)
		if err != nil {
			return c, fmt.Errorf("%s: allowed: %w", a.Pos, err)
		}
		en := allowEntry{text: a.Range, r: vr}
		if a.Sunset() {
			if !a.Until.After(minInstant) || !a.Until.Before(maxInstant) {
				return c, fmt.Errorf("%s: until: %s is out of range", a.UntilPos, a.Until)
			}
			en.until = a.Until.UnixNano()
			en.reason = sunsetReason(a.Range, en.until)
		}
		c.allowed = append(c.allowed, en)
	}
	for _, d := range r.Denied {
		v, ok := parseVersion(d.Text)
		if !ok {
			return c, fmt.Errorf("%s: denied: invalid version %q", d.Pos, d.Text)
		}
		if v.build != "" {
			c.deniedExt = append(c.deniedExt, v)
		} else {
			c.deniedAll = append(c.deniedAll, v)
		}
	}
	return c, nil
}
