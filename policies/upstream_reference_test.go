//go:build !wasip1

package policies

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// refDecideUpstream is policies/README.md's upstream decision ("Upstream
// versions") written plainly from the text: every rule, every registry
// entry and every revocation is looked at, versions go through
// Masterminds (refVersionFails).
func refDecideUpstream(s *Set, req *UpstreamRequest) UpstreamDecision {
	d := UpstreamDecision{Allow: true, Reason: ReasonUpstreamVersionAllow}
	refuse := func(rule, reason string) UpstreamDecision {
		return UpstreamDecision{Rule: rule, Reason: reason, Audit: true, TargetDevice: d.TargetDevice}
	}
	pathPart, _, _ := strings.Cut(req.Path, "?")
	segs := refSegments(pathPart)
	var names []string
	if req.TargetDeviceID != "" {
		names = append(names, req.TargetDeviceID)
	}
	for _, dp := range s.Devices {
		if dp.DryRun || dp.Target == nil {
			continue
		}
		for _, p := range dp.Target.Paths {
			ps := refSegments(p.Text)
			if refMatch(ps, segs) {
				for i, x := range ps {
					if strings.HasPrefix(x, "{") {
						names = append(names, segs[i])
					}
				}
			}
		}
		if h := dp.Target.Header; h != "" && req.Headers != nil {
			if v, ok := req.Headers.Get(h); ok {
				names = append(names, v)
			}
		}
	}
	target, conflict, empty := "", false, false
	for _, n := range names {
		switch {
		case n == "":
			empty = true
		case target == "":
			target = n
		case !refDeviceEqual(target, n):
			conflict = true
		}
	}
	d.TargetDevice = target
	// 1. Path.
	if _, err := CanonicalPath(req.Path, PathOptions{}); err != nil {
		return refuse("", err.Error())
	}
	// 2. Target naming.
	switch {
	case conflict:
		return refuse("", ReasonTargetConflict)
	case empty:
		return refuse("", ReasonTargetEmpty)
	case len(target) > MaxDeviceIDLen:
		return refuse("", ReasonDeviceIDTooLong)
	}
	// 3. Revocations (enforced documents, the earliest listing one).
	if target != "" {
		for _, r := range s.Revocations {
			if !r.DryRun && slices.ContainsFunc(r.DeviceIDs, func(p Pattern) bool { return refDeviceEqual(p.Text, target) }) {
				return refuse(r.Name, ReasonTargetRevoked)
			}
		}
	}
	if req.UpstreamKnown && req.Upstream != "" {
		for _, r := range s.Revocations {
			if !r.DryRun && slices.ContainsFunc(r.SPIFFEIDs, func(p Pattern) bool { return p.Text == req.Upstream }) {
				return refuse(r.Name, ReasonUpstreamRevoked)
			}
		}
	}
	// 4. Registry.
	var dev *RegisteredDevice
	for _, g := range s.Registries {
		for i := range g.Devices {
			if dev == nil && target != "" && refDeviceEqual(g.Devices[i].ID, target) {
				dev = &g.Devices[i]
			}
		}
	}
	var rules []*UpstreamVersionRule
	for _, p := range s.Upstreams {
		rules = append(rules, p.Rules...)
	}
	slices.SortStableFunc(rules, func(a, b *UpstreamVersionRule) int { return comparePos(a.Pos, b.Pos) })
	if target != "" && dev == nil && slices.ContainsFunc(rules, func(r *UpstreamVersionRule) bool { return !r.DryRun && len(r.DeviceClasses) > 0 }) {
		return refuse("", ReasonTargetUnregistered)
	}
	// 5. Rules in source order.
	for _, r := range rules {
		byClass := dev != nil && slices.Contains(r.DeviceClasses, dev.Class)
		hasUp := len(r.Upstreams) > 0 || len(r.TrustDomains) > 0
		srcUp := !r.Source.DeviceFirmware
		if !byClass && !hasUp {
			continue
		}
		if !req.UpstreamKnown && (!byClass || srcUp) {
			d.Pending = true
			continue
		}
		if !byClass && !(strings.HasPrefix(req.Upstream, "spiffe://") && len(req.Upstream) > len("spiffe://") &&
			refSubject(r.Upstreams, r.TrustDomains, req.Upstream, "")) {
			continue
		}
		var v string
		switch {
		case r.Source.DeviceFirmware:
			if dev != nil {
				v = dev.Firmware
			}
		case r.Source.PeerVersion:
			v = req.PeerVersion
		case req.HostMetadata != nil:
			v, _ = req.HostMetadata(r.Source.MetaFilter, r.Source.MetaKey)
		}
		vr := &VersionRule{Source: VersionSource{Header: "v"}, Allowed: r.Allowed, Denied: r.Denied}
		reason := refVersionFails(vr, &Request{Headers: Map{"v": v}, Now: req.Now})
		switch {
		case reason == "":
		case r.DryRun:
			if !d.DryRun {
				d.DryRun, d.DryRunRule, d.Audit, d.Version = true, r.ID, true, v
			}
		default:
			out := refuse(r.ID, reason)
			out.Version = v
			return out
		}
	}
	return d
}

// refUpstreamCorpus generates an upstream policy set dense in interactions
// (classes and upstream selectors, every source, dry-run, sunsets,
// revocations, registry case) and requests over the same vocabulary.
func refUpstreamCorpus(rnd *rand.Rand) (string, []*UpstreamRequest) {
	pick := func(l ...string) string { return l[rnd.IntN(len(l))] }
	var b strings.Builder
	b.WriteString("apiVersion: meshguard.io/v1\nkind: DevicePolicy\nmetadata: {name: inv}\nspec:\n  devices: {classes: [inverter]}\n  target: {paths: [\"/v1/inverters/{id}/**\"], header: x-dev}\n  rules: []\n")
	b.WriteString("---\napiVersion: meshguard.io/v1\nkind: DeviceRegistry\nmetadata: {name: reg}\nspec:\n  devices:\n")
	for i, fw := range []string{"3.2.0", "2.9.1", "3.0.5", "3.0.0-rc.1", "4.0.0"} {
		fmt.Fprintf(&b, "    - {id: %s, class: %s, firmware: %s}\n", pick(fmt.Sprintf("INV-%d", i), fmt.Sprintf("inv-%d", i)), pick("inverter", "inverter", "meter"), fw)
	}
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: UpstreamVersionPolicy\nmetadata: {name: up%s}\nspec:\n  rules:\n", pick("", "", ", dryRun: true"))
	n := 1 + rnd.IntN(4)
	for i := range n {
		sel := pick("deviceClasses: [inverter]", "deviceClasses: [meter]", "upstreams: [\"spiffe://g.example/ns/der/**\"]",
			"upstreams: [spiffe://g.example/ns/der/sa/gw]", "trustDomains: [k.example]", "deviceClasses: [inverter], upstreams: [spiffe://g.example/ns/der/sa/gw]")
		src := pick("{upstreamPeer: version}", "{hostMetadata: {filter: envoy.lb, key: version}}", "{hostMetadata: {filter: istio, key: v}}")
		if strings.Contains(sel, "deviceClasses") && rnd.IntN(2) == 0 {
			src = "{deviceFirmware: true}"
		}
		allowed := pick(`">=3.1.0"`, `">=1.0.0, <3.0.0"`, `[">=3.1.0", {range: ">=3.0.0, <3.1.0", until: "2027-01-31T00:00:00Z"}]`, `"*"`)
		fmt.Fprintf(&b, "    - {name: r%d, %s, source: %s, allowed: %s%s%s}\n", i, sel, src, allowed,
			pick("", "", ", denied: [3.2.0]", ", denied: [1.5.0]"), pick("", "", "", ", dryRun: true"))
	}
	b.WriteString("---\napiVersion: meshguard.io/v1\nkind: Revocations\nmetadata: {name: rev}\nspec:\n  spiffeIDs: [spiffe://g.example/ns/der/sa/rogue]\n  deviceIDs: [inv-3]\n")
	b.WriteString("---\napiVersion: meshguard.io/v1\nkind: TrustDomain\nmetadata: {name: g.example}\nspec: {}\n---\napiVersion: meshguard.io/v1\nkind: TrustDomain\nmetadata: {name: k.example}\nspec: {}\n")
	var reqs []*UpstreamRequest
	for range 40 {
		r := &UpstreamRequest{Method: "PUT", Path: pick("/v1/inverters/inv-0/setpoint", "/v1/inverters/INV-1/x", "/v1/inverters/inv-2/x",
			"/v1/inverters/inv-3/x", "/v1/inverters/inv-4/x", "/v1/inverters/inv-9/x", "/v1/status", "/v1/inverters/inv-0/../x", "/v1/inverters//x"),
			Now: refNows[rnd.IntN(len(refNows))].UnixNano()}
		switch rnd.IntN(4) {
		case 0:
			r.Headers = Map{"x-dev": pick("inv-0", "INV-0", "inv-1", "")}
		case 1:
			r.TargetDeviceID = pick("inv-0", "inv-2")
		}
		if rnd.IntN(3) > 0 {
			r.UpstreamKnown = true
			r.Upstream = pick("spiffe://g.example/ns/der/sa/gw", "spiffe://g.example/ns/der/sa/other", "spiffe://g.example/ns/der",
				"spiffe://k.example/c", "spiffe://g.example/ns/der/sa/rogue", "", "spiffe://", "https://g.example/ns/der/sa/gw")
			r.PeerVersion = pick("", "1.5.0", "2.9.9", "3.2.0", "v3.2.0", "3.0.7")
			mv := pick("", "3.1.0", "1.2.3", "bad")
			r.HostMetadata = func(f, k string) (string, bool) {
				if f == "envoy.lb" && k == "version" && mv != "" {
					return mv, true
				}
				return "", false
			}
		}
		reqs = append(reqs, r)
	}
	return b.String(), reqs
}

// TestReferenceUpstreamDecisions: on generated sets and requests the
// engine, its image and the reference agree on every field.
func TestReferenceUpstreamDecisions(t *testing.T) {
	rnd := rand.New(rand.NewPCG(21, 22))
	sets, decisions, allows, pending := 0, 0, 0, 0
	for range 300 {
		src, reqs := refUpstreamCorpus(rnd)
		s, err := Load(map[string][]byte{"u.yaml": []byte(src)})
		if err != nil {
			continue // e.g. two registry ids equal but for case
		}
		e, err := Compile(s)
		require.NoError(t, err)
		img, _ := roundTrip(t, e)
		sets++
		for _, r := range reqs {
			want := refDecideUpstream(s, r)
			var got, fromImage UpstreamDecision
			e.DecideUpstream(r, &got)
			img.DecideUpstream(r, &fromImage)
			require.Equal(t, want, got, "set:\n%s\nrequest %+v", src, *r)
			require.Equal(t, got, fromImage)
			decisions++
			if got.Allow {
				allows++
			}
			if got.Pending {
				pending++
			}
		}
	}
	require.Greater(t, sets, 100)
	require.Greater(t, allows, decisions/10)
	require.Greater(t, pending, decisions/20)
	t.Logf("%d sets, %d decisions, %d allows, %d pending", sets, decisions, allows, pending)
}
