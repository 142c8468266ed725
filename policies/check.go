//go:build !wasip1

package policies

import (
	"fmt"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Progress is told how far a long operation is: stage names the phase
// ("parse", "check"), done of total units (files or rules).
type Progress func(stage string, done, total int)

// progressEvery is how many rules pass between two progress reports.
const progressEvery = 4096

// Check runs the semantic checks on a parsed set: SPIFFE ID and trust
// domain syntax, unknown trust domains (when any TrustDomain is declared),
// path patterns (which must be able to match a canonical path), target
// declarations, semver ranges and versions, duplicate names and rule ids,
// rules shadowed by earlier rules of the same policy and contradictory
// allow/deny rules. It runs in time near-linear in the number of rules.
func Check(s *Set) ErrorList { return CheckProgress(s, nil) }

// CheckProgress is Check reporting progress (nil: none).
func CheckProgress(s *Set, progress Progress) ErrorList {
	c := &checker{ids: map[string]Pos{}, names: map[string]Pos{}, known: map[string]bool{}, progress: progress}
	for _, d := range s.Devices {
		c.total += len(d.Rules)
	}
	for _, w := range s.Workloads {
		c.total += len(w.Rules)
	}
	for _, td := range s.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td.Name); err != nil {
			c.add(td.Pos, "invalid trust domain name %q: %v", td.Name, err)
		}
		c.known[td.Name] = true
		c.name(KindTrustDomain, td.Meta)
	}
	iss := map[string]*Issuer{}
	for _, is := range s.Issuers {
		c.name(KindIssuer, is.Meta)
		if prev, dup := iss[is.URL]; dup && is.URL != "" {
			c.add(is.Pos, "issuer %q: another Issuer (%q, %s) declares %q", is.Name, prev.Name, prev.Pos, is.URL)
			continue
		}
		iss[is.URL] = is
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
		if t := d.Target; t != nil {
			for _, p := range t.Paths {
				if _, _, err := targetSegments(p); err != nil {
					c.add(p.Pos, "%s", strings.TrimPrefix(err.Error(), p.Pos.String()+": "))
					continue
				}
				c.paths([]Pattern{p})
			}
		}
		c.paths(d.ControlPaths)
		c.accessRules(d.Rules)
	}
	for _, v := range s.Versions {
		c.name(KindVersionPolicy, v.Meta)
		for _, r := range v.Rules {
			c.ruleID(r.ID, r.Pos)
			c.subjects(r.Subjects, r.TrustDomains)
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
	for _, r := range s.Revocations {
		c.name(KindRevocations, r.Meta)
		for _, id := range r.SPIFFEIDs {
			c.spiffeID(id, false)
		}
		for _, id := range r.DeviceIDs {
			if len(id.Text) > MaxDeviceIDLen {
				c.add(id.Pos, "device id %q is longer than %d bytes", id.Text, MaxDeviceIDLen)
			}
		}
	}
	for _, t := range s.Tests {
		c.name(KindPolicyTest, t.Meta)
	}
	c.checkUpstream(s)
	if progress != nil {
		progress("check", c.done, c.total)
	}
	return c.errs
}

type checker struct {
	errs        ErrorList
	ids         map[string]Pos
	names       map[string]Pos
	known       map[string]bool
	progress    Progress
	done, total int
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

// paths validates path patterns: the segment syntax, and that the pattern
// can match a canonical request path at all (a pattern with "//", a dot
// segment or a non-canonical percent-encoding never would).
func (c *checker) paths(ps []Pattern) {
	for _, p := range ps {
		segs, err := pathSegments([]Pattern{p})
		if err != nil {
			c.add(p.Pos, "invalid path pattern: %v", strings.TrimPrefix(err.Error(), p.Pos.String()+": "))
			continue
		}
		sample := make([]string, len(segs[0]))
		for i, s := range segs[0] {
			if s == "*" || s == "**" {
				s = "x"
			}
			sample[i] = s
		}
		if err := checkPath("/" + strings.Join(sample, "/")); err != nil {
			c.add(p.Pos, "path pattern %q can never match a canonical request path: %v", p.Text, err)
		}
	}
}

// ruleShape is a rule's match, precomputed once for the shadow checks.
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
	ms = slices.Compact(ms)
	hs := make([]string, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = fmt.Sprintf("%s=%v:%s", h.Name, h.Present, h.Equals)
	}
	slices.Sort(hs)
	sig := strings.Join([]string{r.Access.String(), strings.Join(texts(r.Subjects), " "), strings.Join(texts(r.TrustDomains), " "),
		strings.Join(texts(r.Paths), " "), strings.Join(ms, " "), strings.Join(hs, " "), userSig(r)}, "|")
	return ruleShape{ok: true, subs: subs, paths: paths, sig: sig}
}

// accessRules checks the rules of one policy. Shadowing is found without
// comparing every pair: earlier rules are indexed by their subject and path
// patterns, each rule asks both indexes which earlier rules cover each of
// its patterns, and only the rules in the smallest answer are compared in
// full.
func (c *checker) accessRules(rules []*AccessRule) {
	subIdx, pathIdx := &pnode{}, &pnode{}
	type sigKey struct {
		sig    string
		effect Effect
	}
	firstSig := map[sigKey]int{}
	shapes := make([]ruleShape, len(rules))
	for i, r := range rules {
		c.done++
		if c.progress != nil && c.done%progressEvery == 0 {
			c.progress("check", c.done, c.total)
		}
		c.ruleID(r.ID, r.Pos)
		c.subjects(r.Subjects, r.TrustDomains)
		c.paths(r.Paths)
		shapes[i] = shape(r)
		sh := &shapes[i]
		if !sh.ok || r.DryRun {
			continue
		}
		other := Deny
		if r.Effect == Deny {
			other = Allow
		}
		if k, ok := firstSig[sigKey{sh.sig, other}]; ok {
			prev := rules[k]
			c.add(r.Pos, "rule %q contradicts rule %q (%s): identical match with opposite effect", r.ID, prev.ID, prev.Pos)
		} else if k := shadower(rules, shapes, subIdx, pathIdx, i); k >= 0 {
			prev := rules[k]
			c.add(r.Pos, "rule %q is shadowed by earlier rule %q (%s): it can never change a decision", r.ID, prev.ID, prev.Pos)
		}
		if _, ok := firstSig[sigKey{sh.sig, r.Effect}]; !ok {
			firstSig[sigKey{sh.sig, r.Effect}] = i
		}
		for _, s := range sh.subs {
			indexRule(subIdx, s, int32(i))
		}
		for _, p := range sh.paths {
			indexRule(pathIdx, p, int32(i))
		}
	}
}

// shadower returns the earliest indexed rule that shadows rules[i] (same
// access, same effect or a deny, covering every request rules[i] matches),
// or -1. A shadowing rule covers each of rules[i]'s subject and path
// patterns, so it is in every index answer: only the smallest is compared.
func shadower(rules []*AccessRule, shapes []ruleShape, subIdx, pathIdx *pnode, i int) int {
	r, sh := rules[i], &shapes[i]
	var best []int32
	first := true
	for k, pats := range [2][][]string{sh.subs, sh.paths} {
		idx := subIdx
		if k == 1 {
			idx = pathIdx
		}
		for _, y := range pats {
			l := idx.coverers(y, nil)
			if first || len(l) < len(best) {
				best, first = l, false
			}
			if len(best) == 0 {
				return -1
			}
		}
	}
	slices.Sort(best)
	best = slices.Compact(best)
	for _, k := range best {
		prev := rules[k]
		if prev.Access != r.Access || !(prev.Effect == r.Effect || prev.Effect == Deny) {
			continue
		}
		if covers(prev, r, &shapes[k], sh) {
			return int(k)
		}
	}
	return -1
}

// indexRule adds a rule's pattern to a shadow index: the compile-time
// path trie, whose payloads are here rule indexes of one policy.
func indexRule(t *pnode, segs []string, rule int32) {
	n, rest := t.insert(segs)
	if rest {
		n.rest = appendOnce(n.rest, rule)
	} else {
		n.end = appendOnce(n.end, rule)
	}
}

// coverers appends the rules having a pattern that covers pattern y (every
// path y matches, it matches; see segCovers).
func (t *pnode) coverers(y []string, out []int32) []int32 {
	out = append(out, t.rest...)
	if len(y) == 0 {
		return append(out, t.end...)
	}
	s := y[0]
	switch {
	case s == "**":
		// Only a pattern that ends in ** here covers y's rest.
	case s == "*":
		if t.wild != nil {
			out = t.wild.coverers(y[1:], out)
		}
	default:
		if n := t.lit[s]; n != nil {
			out = n.coverers(y[1:], out)
		}
		if t.wild != nil && s != "" {
			out = t.wild.coverers(y[1:], out)
		}
	}
	return out
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
	return coversUser(a, b)
}

// userSig is the canonical text of a rule's end-user conditions.
func userSig(r *AccessRule) string {
	is := texts(r.Issuers)
	sc := slices.Clone(r.Scopes)
	slices.Sort(sc)
	return strings.Join(is, " ") + "#" + strings.Join(sc, " ") + "#" + strings.Join(claimSigs(r), " ")
}

func claimSigs(r *AccessRule) []string {
	out := make([]string, len(r.Claims))
	for i, c := range r.Claims {
		vs := slices.Clone(c.Values)
		slices.Sort(vs)
		out[i] = fmt.Sprintf("%q%s%q", c.Name, c.Op, vs)
	}
	slices.Sort(out)
	return out
}

// coversUser reports whether a's end-user conditions hold whenever b's do
// (conservatively: a's issuers include b's, a's scopes are among b's, and
// each claim condition of a is one of b's).
func coversUser(a, b *AccessRule) bool {
	if len(a.Issuers) > 0 && (len(b.Issuers) == 0 || !subset(texts(b.Issuers), texts(a.Issuers))) {
		return false
	}
	if !subset(a.Scopes, b.Scopes) {
		return false
	}
	return subset(claimSigs(a), claimSigs(b))
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

// CheckRange checks a version range the way policy check does: valid
// semver range syntax that the engine supports. The registry validates
// the ranges it compiles into policies with it.
func CheckRange(r string) error {
	if _, err := semver.NewConstraint(r); err != nil {
		return fmt.Errorf("invalid semver range %q: %w", r, err)
	}
	if _, err := parseRange(r); err != nil {
		return fmt.Errorf("range %q is not supported by the engine: %w", r, err)
	}
	return nil
}
