//go:build !wasip1

package policies

import (
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Check runs the semantic checks on a parsed set: SPIFFE ID and trust
// domain syntax, unknown trust domains (when any TrustDomain is declared),
// path patterns, semver ranges, duplicate names and rule ids, rules shadowed
// by earlier rules of the same policy and contradictory allow/deny rules.
func Check(s *Set) ErrorList {
	c := &checker{ids: map[string]Pos{}, names: map[string]Pos{}, known: map[string]bool{}}
	for _, td := range s.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td.Name); err != nil {
			c.add(td.Pos, "invalid trust domain name %q: %v", td.Name, err)
		}
		c.known[td.Name] = true
		c.name(KindTrustDomain, td.Meta)
	}
	for _, w := range s.Workloads {
		c.name(KindWorkloadPolicy, w.Meta)
		c.accessRules(w.Rules)
	}
	for _, d := range s.Devices {
		c.name(KindDevicePolicy, d.Meta)
		if d.Devices.Firmware != "" {
			c.rangeCheck(d.Devices.Pos, "firmware", d.Devices.Firmware)
		}
		c.paths(d.ControlPaths)
		c.accessRules(d.Rules)
	}
	for _, v := range s.Versions {
		c.name(KindVersionPolicy, v.Meta)
		for _, r := range v.Rules {
			c.ruleID(r.ID, r.Pos)
			c.subjects(r.Subjects, r.TrustDomains)
			if r.Allowed != "" {
				c.rangeCheck(r.AllowedPos, "allowed", r.Allowed)
			}
			for _, d := range r.Denied {
				if _, err := semver.StrictNewVersion(strings.TrimLeft(d.Text, "vV")); err != nil {
					c.add(d.Pos, "denied: invalid version %q: %v", d.Text, err)
				}
			}
		}
	}
	for _, r := range s.Revocations {
		c.name(KindRevocations, r.Meta)
		for _, id := range r.SPIFFEIDs {
			c.spiffeID(id, false)
		}
	}
	for _, t := range s.Tests {
		c.name(KindPolicyTest, t.Meta)
	}
	return c.errs
}

type checker struct {
	errs  ErrorList
	ids   map[string]Pos
	names map[string]Pos
	known map[string]bool
}

func (c *checker) add(p Pos, format string, args ...any) {
	c.errs = append(c.errs, &Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) name(kind string, m Meta) {
	k := kind + "/" + m.Name
	if prev, ok := c.names[k]; ok {
		c.add(m.Pos, "duplicate %s %q (first defined at %s)", kind, m.Name, prev)
		return
	}
	c.names[k] = m.Pos
}

func (c *checker) ruleID(id string, p Pos) {
	if prev, ok := c.ids[id]; ok {
		c.add(p, "duplicate rule id %q (first defined at %s)", id, prev)
		return
	}
	c.ids[id] = p
}

func (c *checker) rangeCheck(p Pos, what, r string) {
	if _, err := semver.NewConstraint(r); err != nil {
		c.add(p, "%s: invalid semver range %q: %v", what, r, err)
		return
	}
	if _, err := parseRange(r); err != nil {
		c.add(p, "%s: range %q is not supported by the engine: %v", what, r, err)
	}
}

func (c *checker) trustDomain(p Pos, td string) {
	if len(c.known) > 0 && !c.known[td] {
		c.add(p, "unknown trust domain %q (declare it with kind TrustDomain)", td)
	}
}

// spiffeID validates an exact ID or a pattern (wildcard segments replaced
// by a placeholder before go-spiffe validates the rest).
func (c *checker) spiffeID(p Pattern, pattern bool) {
	text := p.Text
	if pattern {
		rest, ok := strings.CutPrefix(text, "spiffe://")
		if !ok {
			c.add(p.Pos, "malformed SPIFFE ID %q: must start with spiffe://", text)
			return
		}
		segs, err := segments(rest)
		if err != nil {
			c.add(p.Pos, "malformed SPIFFE ID pattern: %v", err)
			return
		}
		for i, s := range segs {
			if s == "*" || s == "**" {
				segs[i] = "x"
			}
		}
		text = "spiffe://" + strings.Join(segs, "/")
		if len(segs) > 0 && segs[len(segs)-1] == "x" && len(segs) == 2 && strings.HasSuffix(p.Text, "/**") {
			text = "spiffe://" + segs[0] + "/x"
		}
	}
	id, err := spiffeid.FromString(text)
	if err != nil {
		c.add(p.Pos, "malformed SPIFFE ID %q: %v", p.Text, err)
		return
	}
	c.trustDomain(p.Pos, id.TrustDomain().Name())
}

func (c *checker) subjects(subs, tds []Pattern) {
	for _, s := range subs {
		c.spiffeID(s, true)
	}
	for _, td := range tds {
		if _, err := spiffeid.TrustDomainFromString(td.Text); err != nil {
			c.add(td.Pos, "invalid trust domain %q: %v", td.Text, err)
			continue
		}
		c.trustDomain(td.Pos, td.Text)
	}
}

func (c *checker) paths(ps []Pattern) {
	for _, p := range ps {
		if _, err := pathSegments([]Pattern{p}); err != nil {
			c.add(p.Pos, "invalid path pattern: %v", strings.TrimPrefix(err.Error(), p.Pos.String()+": "))
		}
	}
}

// ruleShape is a rule's match, precomputed once for the pairwise checks.
type ruleShape struct {
	ok          bool // patterns valid (invalid ones are reported on their own)
	subs, paths [][]string
	sig         string // canonical match, equal for identical matches
}

func shape(r *AccessRule) ruleShape {
	subs, err1 := subjectSegments(r.Subjects, r.TrustDomains)
	paths, err2 := pathSegments(r.Paths)
	if err1 != nil || err2 != nil {
		return ruleShape{}
	}
	ms := slices.Clone(r.Methods)
	slices.Sort(ms)
	hs := make([]string, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = fmt.Sprintf("%s=%v:%s", h.Name, h.Present, h.Equals)
	}
	slices.Sort(hs)
	sig := strings.Join([]string{strings.Join(texts(r.Subjects), " "), strings.Join(texts(r.TrustDomains), " "),
		strings.Join(texts(r.Paths), " "), strings.Join(ms, " "), strings.Join(hs, " ")}, "|")
	return ruleShape{ok: true, subs: subs, paths: paths, sig: sig}
}

func (c *checker) accessRules(rules []*AccessRule) {
	shapes := make([]ruleShape, len(rules))
	for i, r := range rules {
		shapes[i] = shape(r)
	}
	for i, r := range rules {
		c.ruleID(r.ID, r.Pos)
		c.subjects(r.Subjects, r.TrustDomains)
		c.paths(r.Paths)
		if !shapes[i].ok || r.DryRun {
			continue
		}
		for k, prev := range rules[:i] {
			if prev.DryRun || prev.Access != r.Access || !shapes[k].ok {
				continue
			}
			switch {
			case prev.Effect != r.Effect && shapes[k].sig == shapes[i].sig:
				c.add(r.Pos, "rule %q contradicts rule %q (%s): identical match with opposite effect", r.ID, prev.ID, prev.Pos)
			case (prev.Effect == r.Effect || prev.Effect == Deny) && covers(prev, r, &shapes[k], &shapes[i]):
				c.add(r.Pos, "rule %q is shadowed by earlier rule %q (%s): it can never change a decision", r.ID, prev.ID, prev.Pos)
			}
		}
	}
}

func texts(ps []Pattern) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Text
	}
	slices.Sort(out)
	return out
}

// covers reports whether every request b matches is matched by a.
func covers(a, b *AccessRule, as, bs *ruleShape) bool {
	if !allCovered(as.paths, bs.paths) || !allCovered(as.subs, bs.subs) {
		return false
	}
	if len(a.Methods) > 0 && (len(b.Methods) == 0 || !subset(b.Methods, a.Methods)) {
		return false
	}
	for _, h := range a.Headers {
		found := false
		for _, g := range b.Headers {
			if g.Name == h.Name && (h.Present || !g.Present && g.Equals == h.Equals) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func subset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return true
}

func allCovered(a, b [][]string) bool {
	for _, y := range b {
		ok := false
		for _, x := range a {
			if segCovers(x, y) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func segCovers(a, b []string) bool {
	for i, s := range a {
		if s == "**" {
			return true
		}
		if i >= len(b) || b[i] == "**" {
			return false
		}
		if s != "*" && s != b[i] {
			return false
		}
		if s == "*" && b[i] == "" {
			return false
		}
	}
	return len(a) == len(b)
}
