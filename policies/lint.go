//go:build !wasip1

package policies

import (
	"fmt"
	"slices"
	"time"
)

// Warnings finds legal but probably mistaken policies (`meshguard policy
// check` prints them; Load does not fail on them):
//   - a WorkloadPolicy allow rule whose paths overlap paths a DevicePolicy
//     governs (its controlPaths, target paths and write-rule paths) and
//     which would allow writes there: device writes are allowed only by
//     DevicePolicy write rules, so the workload rule grants none of them;
//   - a DevicePolicy with write rules or controlPaths but no target: its
//     device tokens are not bound to the device a request names;
//   - a WorkloadPolicy rule whose rateLimit is per device: requests without
//     a device id share one bucket.
func Warnings(s *Set) ErrorList {
	var out ErrorList
	warn := func(p Pos, format string, args ...any) {
		out = append(out, &Error{Pos: p, Msg: fmt.Sprintf(format, args...), Warning: true})
	}
	gov := &governedIndex{}
	for _, d := range s.Devices {
		if d.DryRun {
			continue // its target, control paths and write rules do not apply
		}
		for _, p := range d.ControlPaths {
			gov.add(p, d.Name, "controlPaths", true)
		}
		if d.Target != nil {
			for _, p := range d.Target.Paths {
				gov.add(p, d.Name, "target path", false)
			}
		}
		writes := len(d.ControlPaths) > 0
		for _, r := range d.Rules {
			if r.Access != AccessWrite {
				continue
			}
			writes = true
			for _, p := range r.Paths {
				gov.add(p, d.Name, "write rule "+r.ID+" path", false)
			}
		}
		if writes && d.Target == nil {
			warn(d.Pos, "DevicePolicy %q governs device writes but declares no target: a device token's device is taken as the device the request acts on (declare target.paths or target.header to bind tokens to the device a request names)", d.Name)
		}
	}
	declared := map[string]bool{}
	for _, is := range s.Issuers {
		declared[is.URL] = true
	}
	undeclared := func(r *AccessRule) {
		for _, is := range r.Issuers {
			if !declared[is.Text] {
				warn(is.Pos, "rule %q names issuer %q that no Issuer document declares: only a guard that reads jwt_authn claims (identity.endUser.jwtAuthn) can match it", r.ID, is.Text)
			}
		}
	}
	for _, d := range s.Devices {
		for _, r := range d.Rules {
			undeclared(r)
		}
	}
	for _, w := range s.Workloads {
		for _, r := range w.Rules {
			undeclared(r)
			if l := r.RateLimit; l != nil && l.Per == PerDevice {
				warn(l.Pos, "workload rule %q limits per device: every request it allows without a device token (or whose token has no id) shares one bucket", r.ID)
			}
			if l := r.RateLimit; l != nil && l.Per == PerUser && len(r.Issuers)+len(r.Scopes)+len(r.Claims) == 0 {
				warn(l.Pos, "rule %q limits per end user but has no end-user condition: every request it allows without an end-user token shares one bucket", r.ID)
			}
			if r.Effect != Allow || r.DryRun {
				continue
			}
			unsafe := len(r.Methods) == 0 || slices.ContainsFunc(r.Methods, func(m string) bool { return methodBit(m)&methodsSafe == 0 })
			paths, err := pathSegments(r.Paths)
			if err != nil {
				continue
			}
			for _, p := range paths {
				if g := gov.overlap(p, unsafe); g != nil {
					warn(r.Pos, "workload rule %q allows writes on paths DevicePolicy %q governs (%s %q at %s): device writes are allowed only by DevicePolicy write rules, so this rule does not grant them",
						r.ID, g.policy, g.what, g.text, g.pos)
					break
				}
			}
		}
	}
	out.sort()
	return out
}

// governed is a path pattern a DevicePolicy governs.
type governed struct {
	policy, what, text string
	pos                Pos
	// control: every request on it is a write (controlPaths); otherwise
	// only requests with a method other than GET, HEAD or OPTIONS are.
	control bool
}

// governedIndex indexes governed patterns in the compile-time path trie
// (payloads: indexes into list) to find those a pattern overlaps (some path
// matches both).
type governedIndex struct {
	trie pnode
	list []governed
}

func (g *governedIndex) add(p Pattern, policy, what string, control bool) {
	segs, err := pathSegments([]Pattern{p})
	if err != nil {
		return
	}
	g.list = append(g.list, governed{policy: policy, what: what, text: p.Text, pos: p.Pos, control: control})
	indexRule(&g.trie, segs[0], int32(len(g.list)-1))
}

// overlap returns the first governed pattern overlapping y on which a rule
// allowing unsafe methods (or, for control paths, any method) would allow
// writes; nil when none.
func (g *governedIndex) overlap(y []string, unsafe bool) *governed {
	pick := func(l []int32) *governed {
		for _, i := range l {
			if gv := &g.list[i]; gv.control || unsafe {
				return gv
			}
		}
		return nil
	}
	return overlapWalk(&g.trie, y, pick)
}

func overlapWalk(t *pnode, y []string, pick func([]int32) *governed) *governed {
	if g := pick(t.rest); g != nil {
		return g
	}
	if len(y) == 0 {
		return pick(t.end)
	}
	s := y[0]
	if s == "**" {
		return anyBelow(t, pick)
	}
	if s == "*" {
		for _, k := range sortedKeys(t.lit) {
			if k == "" {
				continue
			}
			if g := overlapWalk(t.lit[k], y[1:], pick); g != nil {
				return g
			}
		}
	} else if n := t.lit[s]; n != nil {
		if g := overlapWalk(n, y[1:], pick); g != nil {
			return g
		}
	}
	if t.wild != nil && s != "" {
		return overlapWalk(t.wild, y[1:], pick)
	}
	return nil
}

// anyBelow returns the first pattern in t's subtree that pick accepts.
func anyBelow(t *pnode, pick func([]int32) *governed) *governed {
	if g := pick(t.rest); g != nil {
		return g
	}
	if g := pick(t.end); g != nil {
		return g
	}
	for _, k := range sortedKeys(t.lit) {
		if g := anyBelow(t.lit[k], pick); g != nil {
			return g
		}
	}
	if t.wild != nil {
		return anyBelow(t.wild, pick)
	}
	return nil
}

// DefaultSunsetHorizon is how far ahead `meshguard policy check` warns
// about version sunsets unless told otherwise.
const DefaultSunsetHorizon = 30 * 24 * time.Hour

// SunsetWarnings warns about every sunset entry of an allowed list (at its
// until) that has passed at now (it approves nothing any more) or falls
// within horizon after now (the transition window is about to close);
// horizon 0 warns only about passed sunsets. Dry-run rules are included:
// their windows close as well, they only do not deny.
func SunsetWarnings(s *Set, now time.Time, horizon time.Duration) ErrorList {
	var out ErrorList
	for _, v := range s.Versions {
		for _, r := range v.Rules {
			for _, a := range r.Allowed {
				if !a.Sunset() {
					continue
				}
				var msg string
				switch left := a.Until.Sub(now); {
				case left <= 0:
					msg = fmt.Sprintf("version rule %q: the sunset of %q at %s has passed: the entry approves no version any more", r.ID, a.Range, FormatInstant(a.Until))
				case left <= horizon:
					msg = fmt.Sprintf("version rule %q: the sunset of %q at %s is within the horizon of %s (in %s)", r.ID, a.Range, FormatInstant(a.Until),
						horizon, left.Round(time.Second))
				default:
					continue
				}
				out = append(out, &Error{Pos: a.UntilPos, Msg: msg, Warning: true})
			}
		}
	}
	out.sort()
	return out
}
