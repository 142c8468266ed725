//go:build !wasip1

package policies

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/stretchr/testify/require"
)

// refDecide is policies/README.md's decision procedure written plainly from
// the text: every rule is looked at, patterns are matched segment by
// segment, versions go through Masterminds. The engine must agree with it
// on every input (TestReferenceDecisions, FuzzReference).
func refDecide(s *Set, req *Request) Decision {
	var d Decision
	caller := req.SPIFFEID
	if caller == "" {
		caller = req.PeerID
	}
	pathPart, _, _ := strings.Cut(req.Path, "?")
	segs := refSegments(pathPart)
	method := req.Method
	safe := method == "GET" || method == "HEAD" || method == "OPTIONS"
	token := req.DeviceID != "" || req.DeviceClass != "" || req.DeviceVendor != "" || req.DeviceModel != "" || req.DeviceFirmware != ""

	// Target naming and write.
	var names []string
	if req.TargetDeviceID != "" {
		names = append(names, req.TargetDeviceID)
	}
	control := false
	for _, dp := range s.Devices {
		if dp.DryRun {
			continue
		}
		if dp.Target != nil {
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
		for _, p := range dp.ControlPaths {
			control = control || refMatch(refSegments(p.Text), segs)
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
	device := token || len(names) > 0
	write := device && !safe || control
	d.Write, d.TargetDevice = write, target
	refuse := func(reason string) Decision {
		d.Reason, d.Audit = reason, true
		return d
	}

	if _, err := CanonicalPath(req.Path, PathOptions{}); err != nil {
		return refuse(err.Error())
	}
	revoked := func(dry bool) (string, string) {
		find := func(match func(r *Revocations) bool) string {
			for _, r := range s.Revocations {
				if r.DryRun == dry && match(r) {
					return r.Name
				}
			}
			return ""
		}
		idIn := func(id string) func(r *Revocations) bool {
			return func(r *Revocations) bool {
				return slices.ContainsFunc(r.SPIFFEIDs, func(p Pattern) bool { return p.Text == id })
			}
		}
		devIn := func(id string) func(r *Revocations) bool {
			return func(r *Revocations) bool {
				return slices.ContainsFunc(r.DeviceIDs, func(p Pattern) bool { return refDeviceEqual(p.Text, id) })
			}
		}
		if caller != "" {
			if n := find(idIn(caller)); n != "" {
				return n, ReasonRevokedID
			}
		}
		if req.PeerID != "" && req.PeerID != caller {
			if n := find(idIn(req.PeerID)); n != "" {
				return n, ReasonRevokedPeer
			}
		}
		for _, id := range []string{req.DeviceID, target} {
			if id != "" {
				if n := find(devIn(id)); n != "" {
					return n, ReasonRevokedDevice
				}
			}
		}
		if req.JTI != "" {
			if n := find(func(r *Revocations) bool {
				return slices.ContainsFunc(r.JTIs, func(p Pattern) bool { return p.Text == req.JTI })
			}); n != "" {
				return n, ReasonRevokedJTI
			}
		}
		return "", ""
	}
	if name, reason := revoked(false); name != "" {
		d = refuse(reason)
		d.addRule(name)
		return d
	}
	if req.SPIFFEID != "" && req.PeerID != "" && req.SPIFFEID != req.PeerID && !req.Forwarded {
		return refuse(ReasonIdentityConflict)
	}
	if device {
		switch {
		case len(req.DeviceID) > MaxDeviceIDLen || len(target) > MaxDeviceIDLen:
			return refuse(ReasonDeviceIDTooLong)
		case conflict:
			return refuse(ReasonTargetConflict)
		case empty:
			return refuse(ReasonTargetEmpty)
		case target != "" && req.DeviceID == "":
			return refuse(ReasonTargetNoToken)
		case target != "" && !refDeviceEqual(target, req.DeviceID):
			return refuse(ReasonTargetMismatch)
		}
	}

	// Version rules.
	subjectOf := func(subjects, tds []Pattern, id string) bool {
		return refSubject(subjects, tds, id, req.TrustDomain)
	}
	verFail, dryVerFail, verStr, seen := "", "", "", false
	for _, vp := range s.Versions {
		for _, r := range vp.Rules {
			applies := (len(r.Subjects) > 0 || len(r.TrustDomains) > 0) && (subjectOf(r.Subjects, r.TrustDomains, caller) ||
				req.PeerID != "" && req.PeerID != caller && subjectOf(r.Subjects, r.TrustDomains, req.PeerID)) ||
				token && req.DeviceClass != "" && slices.Contains(r.DeviceClasses, req.DeviceClass)
			if !applies {
				continue
			}
			if !seen {
				seen, d.Version = true, refVersionString(r, req)
			}
			if reason := refVersionFails(r, req); reason != "" {
				if r.DryRun {
					if dryVerFail == "" {
						dryVerFail = r.ID
					}
				} else if verFail == "" {
					verFail, verStr = r.ID, refVersionString(r, req)
					d.Reason = reason
				}
			}
		}
	}
	if verFail != "" {
		d.Version = verStr
		d.Audit = true
		d.addRule(verFail)
		return d
	}

	// Access rules, in source order across kinds.
	type cand struct {
		r  *AccessRule
		dp *DevicePolicy
	}
	var cands []cand
	for _, w := range s.Workloads {
		for _, r := range w.Rules {
			cands = append(cands, cand{r, nil})
		}
	}
	for _, dp := range s.Devices {
		if token && refSelects(dp, req) {
			for _, r := range dp.Rules {
				cands = append(cands, cand{r, dp})
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return comparePos(a.r.Pos, b.r.Pos) })
	var deny, allow, dryDeny, dryAllow, dryLimited, scopeOnly *cand
	audit, noUser := false, false
	for i := range cands {
		c := &cands[i]
		r := c.r
		if !refSubject(r.Subjects, r.TrustDomains, caller, req.TrustDomain) {
			continue
		}
		if len(r.Paths) > 0 && !slices.ContainsFunc(r.Paths, func(p Pattern) bool { return refMatch(refSegments(p.Text), segs) }) {
			continue
		}
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
			continue
		}
		if c.dp != nil && (r.Access == AccessRead && write || r.Access == AccessWrite && !write) {
			continue
		}
		ok := true
		for _, h := range r.Headers {
			v, present := "", false
			if req.Headers != nil {
				v, present = req.Headers.Get(strings.ToLower(h.Name))
			}
			if !present || !h.Present && v != h.Equals {
				ok = false
			}
		}
		if !ok || write && c.dp == nil && r.Effect == Allow {
			continue
		}
		if why := refUser(r, req.User); why != "" {
			if !r.DryRun && r.Effect == Allow {
				switch {
				case why == "missing":
					noUser = true
				case why == "scope" && scopeOnly == nil:
					scopeOnly = c
				}
			}
			continue
		}
		pick := func(p **cand) {
			if *p == nil {
				*p = c
			}
		}
		switch {
		case r.DryRun && r.Effect == Deny:
			pick(&dryDeny)
		case r.DryRun:
			pick(&dryAllow)
			if r.RateLimit != nil {
				pick(&dryLimited)
			}
		case r.Effect == Deny:
			pick(&deny)
			audit = audit || r.Audit
		default:
			pick(&allow)
			audit = audit || r.Audit
		}
	}
	dryRevoked, _ := revoked(true)
	switch {
	case deny != nil:
		d.Reason, d.Audit = ReasonDenyRule, audit || write
		d.addRule(deny.r.ID)
	case allow != nil:
		d.Allow, d.Reason, d.Audit = true, ReasonAllowRule, audit || write
		d.addRule(allow.r.ID)
		// Caller limits: the deciding rule's, and the earliest matching
		// dry-run allow rule's that has one.
		limit := func(r *AccessRule) CallerLimit {
			l := CallerLimit{Rule: r.ID, Per: r.RateLimit.Per, PerSecond: float64(r.RateLimit.Requests) / r.RateLimit.Period.Seconds(), Burst: r.RateLimit.Burst}
			if l.Per == PerDevice {
				l.Key = req.DeviceID
			} else if l.Per == PerUser {
				if req.User != nil {
					l.Key, _ = refRaw[req.User]["sub"].(string)
					l.Issuer, _ = refRaw[req.User]["iss"].(string)
				}
			} else if strings.HasPrefix(caller, "spiffe://") && len(caller) > len("spiffe://") {
				l.Key = caller
			}
			return l
		}
		if allow.r.RateLimit != nil {
			d.HasCallerLimit, d.CallerLimit = true, limit(allow.r)
		}
		if dryLimited != nil {
			d.HasDryRunCallerLimit, d.DryRunCallerLimit = true, limit(dryLimited.r)
		}
		if write {
			var lim *DevicePolicy
			if allow.dp != nil && allow.dp.WriteLimit != nil {
				lim = allow.dp
			} else {
				for _, dp := range s.Devices {
					if !dp.DryRun && dp.WriteLimit != nil && refSelects(dp, req) {
						lim = dp
						break
					}
				}
			}
			if lim != nil {
				d.HasRateLimit, d.RateLimit, d.RateLimitKey = true, *lim.WriteLimit, req.DeviceID
				if d.RateLimitKey == "" {
					d.RateLimitKey = req.DeviceClass
				}
			}
		}
		switch {
		case dryRevoked != "":
			d.DryRun, d.DryRunRule = true, dryRevoked
		case dryVerFail != "":
			d.DryRun, d.DryRunRule = true, dryVerFail
		case dryDeny != nil:
			d.DryRun, d.DryRunRule = true, dryDeny.r.ID
		}
	default:
		d.Reason, d.Audit = ReasonDefaultDeny, write
		switch {
		case scopeOnly != nil:
			d.Reason, d.Scope = ReasonInsufficientScope, strings.Join(scopeOnly.r.Scopes, " ")
			d.addRule(scopeOnly.r.ID)
		case noUser:
			d.Reason, d.UserRequired = ReasonUserRequired, true
		default:
			d.DefaultDeny = true
		}
		if dryAllow != nil && dryRevoked == "" && dryVerFail == "" && dryDeny == nil {
			d.DryRun, d.DryRunRule = true, dryAllow.r.ID
		}
	}
	if d.DryRun {
		d.Audit = true
	}
	return d
}

func refDeviceEqual(a, b string) bool { return asciiLower(a) == asciiLower(b) }

// refSegments splits a path or pattern: "/" is no segment, "/a/" is ["a", ""].
func refSegments(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// refMatch matches pattern segments (literal, "*" or "{x}" for one
// non-empty segment, final "**" for the rest including nothing).
func refMatch(pat, segs []string) bool {
	for i, x := range pat {
		if x == "**" && i == len(pat)-1 {
			return true
		}
		if i >= len(segs) {
			return false
		}
		if x == "*" || strings.HasPrefix(x, "{") && strings.HasSuffix(x, "}") && len(x) > 2 {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if x != segs[i] {
			return false
		}
	}
	return len(pat) == len(segs)
}

func refSubject(subjects, tds []Pattern, id, td string) bool {
	if len(subjects) == 0 && len(tds) == 0 {
		return true
	}
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if id == "" && td != "" {
		rest, ok = td, true
	}
	if !ok || rest == "" {
		return false
	}
	segs := strings.Split(rest, "/")
	for _, s := range subjects {
		if refMatch(strings.Split(strings.TrimPrefix(s.Text, "spiffe://"), "/"), segs) {
			return true
		}
	}
	for _, t := range tds {
		if refMatch([]string{t.Text, "**"}, segs) {
			return true
		}
	}
	return false
}

func refSelects(dp *DevicePolicy, req *Request) bool {
	sel := dp.Devices
	if len(sel.IDs) > 0 && !slices.ContainsFunc(sel.IDs, func(id string) bool { return refDeviceEqual(id, req.DeviceID) }) {
		return false
	}
	if len(sel.Classes) > 0 && !slices.Contains(sel.Classes, req.DeviceClass) ||
		len(sel.Vendors) > 0 && !slices.Contains(sel.Vendors, req.DeviceVendor) ||
		len(sel.Models) > 0 && !slices.Contains(sel.Models, req.DeviceModel) {
		return false
	}
	if sel.Firmware != "" {
		v, err := semver.StrictNewVersion(req.DeviceFirmware)
		c, cerr := semver.NewConstraint(sel.Firmware)
		if err != nil || cerr != nil || !c.Check(v) {
			return false
		}
	}
	return true
}

// refVersionString is the version req presents to r.
func refVersionString(r *VersionRule, req *Request) string {
	var s string
	switch {
	case r.Source.PeerLabel:
		s = req.PeerVersion
	case r.Source.DeviceFirmware:
		s = req.DeviceFirmware
	case r.Source.JWTClaim != "":
		if req.Claims != nil {
			s, _ = req.Claims.Get(r.Source.JWTClaim)
		}
	case r.Source.Header != "":
		if req.Headers != nil {
			s, _ = req.Headers.Get(r.Source.Header)
		}
	}
	return s
}

func refVersionFails(r *VersionRule, req *Request) string {
	v, err := semver.StrictNewVersion(refVersionString(r, req))
	if err != nil {
		return ReasonVersionMissing
	}
	if len(r.Allowed) > 0 {
		now := time.Now()
		if req.Now != 0 {
			now = time.Unix(0, req.Now)
		}
		reason := ReasonVersionRange
		approved := false
		for _, a := range r.Allowed {
			c, err := semver.NewConstraint(a.Range)
			if err != nil || !c.Check(v) {
				continue
			}
			if !a.Sunset() || now.Before(a.Until) {
				approved = true
				break
			}
			if reason == ReasonVersionRange {
				reason = fmt.Sprintf("software version approved by %q until %s: sunset passed", a.Range, a.Until.UTC().Format(time.RFC3339Nano))
			}
		}
		if !approved {
			return reason
		}
	}
	for _, d := range r.Denied {
		dv, _ := semver.StrictNewVersion(d.Text)
		if v.Compare(dv) == 0 && (dv.Metadata() == "" || dv.Metadata() == v.Metadata()) {
			return ReasonVersionDenied
		}
	}
	return ""
}

// refNows are the instants generated requests are decided at: before, at
// and after the corpus's sunsets.
var refNows = []time.Time{
	time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	time.Date(2027, 1, 30, 23, 59, 59, 999999999, time.UTC),
	time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC),
	time.Date(2027, 3, 1, 0, 0, 0, 500000000, time.UTC),
	time.Date(2027, 3, 1, 0, 0, 0, 499999999, time.UTC),
}

// refRaw holds the JSON payload each generated end-user token was made
// from, so the reference reads claims as the README states them, from
// JSON values rather than the engine's decoded form.
var refRaw = map[*User]map[string]any{}

func refUserOf(payload map[string]any) *User {
	u := NewUser(payload)
	refRaw[u] = payload
	return u
}

// refUser applies a rule's end-user conditions: "" when they hold (or
// the rule has none), else "missing", "other" or "scope".
func refUser(r *AccessRule, u *User) string {
	if len(r.Issuers) == 0 && len(r.Scopes) == 0 && len(r.Claims) == 0 {
		return ""
	}
	if u == nil {
		return "missing"
	}
	raw := refRaw[u]
	if len(r.Issuers) > 0 {
		iss, _ := raw["iss"].(string)
		if !slices.ContainsFunc(r.Issuers, func(p Pattern) bool { return p.Text == iss }) {
			return "other"
		}
	}
	for _, c := range r.Claims {
		v, ok := raw[c.Name]
		if !ok || !refClaim(c, v) {
			return "other"
		}
	}
	var granted []string
	if sc, ok := raw["scope"].(string); ok {
		granted = append(granted, strings.Split(sc, " ")...)
	}
	switch x := raw["scp"].(type) {
	case string:
		granted = append(granted, strings.Split(x, " ")...)
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && !strings.Contains(s, " ") {
				granted = append(granted, s)
			}
		}
	}
	for _, sc := range r.Scopes {
		if !slices.Contains(granted, sc) {
			return "scope"
		}
	}
	return ""
}

// refClaim is one claim condition on a JSON value, as the README says.
func refClaim(c ClaimCondition, v any) bool {
	eq := func(x any, val string) bool {
		switch y := x.(type) {
		case string:
			return y == val
		case bool:
			return val == fmt.Sprint(y)
		case json.Number:
			if !refJSONNumber(val) {
				return false
			}
			a, err1 := strconv.ParseFloat(string(y), 64)
			b, err2 := strconv.ParseFloat(val, 64)
			return err1 == nil && err2 == nil && a == b
		}
		return false
	}
	arr, isArr := v.([]any)
	if isArr {
		for _, e := range arr {
			switch e.(type) {
			case string, bool, json.Number:
			default:
				return false // an object, as the README counts it
			}
		}
	}
	switch c.Op {
	case ClaimEquals:
		return !isArr && eq(v, c.Values[0])
	case ClaimContains:
		if !isArr {
			return eq(v, c.Values[0])
		}
		return slices.ContainsFunc(arr, func(e any) bool { return eq(e, c.Values[0]) })
	case ClaimIn:
		return !isArr && slices.ContainsFunc(c.Values, func(val string) bool { return eq(v, val) })
	}
	return false
}

var refNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

func refJSONNumber(s string) bool { return refNumber.MatchString(s) }

// refUsers are end-user tokens the corpus's requests carry.
func refUsers() []map[string]any {
	n := func(s string) json.Number { return json.Number(s) }
	return []map[string]any{
		{"iss": "https://idp.a", "sub": "u1", "scope": "a b", "grp": []any{"ops", "dev"}, "lvl": n("2"), "ok": true},
		{"iss": "https://idp.b", "sub": "u2", "scp": []any{"c:w", "a"}, "grp": "ops", "lvl": n("2.0"), "ok": "true"},
		{"iss": "https://idp.a", "sub": "u3", "scope": "  c:w  ", "scp": "b", "grp": []any{"x", []any{"ops"}}, "lvl": n("1e0")},
		{"iss": "https://idp.c", "sub": "u4", "grp": []any{}, "lvl": n("3"), "ok": false},
	}
}

// refCorpus generates a policy set dense in interactions (every kind,
// dry-run, targets, control paths, revocations, versions) and requests
// over the same vocabulary.
func refCorpus(rnd *rand.Rand) (string, []*Request) {
	subjects := []string{"spiffe://g.example/ns/a/sa/x", "spiffe://g.example/ns/b/sa/y", "spiffe://g.example/ns/*/sa/x", "spiffe://g.example/ns/a/**", "spiffe://p.example/t"}
	paths := []string{"/v1/**", "/v1/inv/{id}/set", "/v1/inv/{id}/**", "/v1/meters/{id}", "/v1/inv/{id}/status", "/", "/v1/x/", "/v1/*/status"}
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	classes := []string{"inverter", "meter"}
	pick := func(l []string) string { return l[rnd.IntN(len(l))] }
	list := func(l []string, max int) string {
		var out []string
		for k := rnd.IntN(max + 1); k > 0; k-- {
			out = append(out, fmt.Sprintf("%q", pick(l)))
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	rule := func(i int, device bool) string {
		eff := "allow"
		if rnd.IntN(3) == 0 {
			eff = "deny"
		}
		r := fmt.Sprintf("    - {name: r%d, effect: %s, subjects: %s, paths: %s, methods: %s", i, eff, list(subjects, 1), list(paths, 2), list(methods, 2))
		if rnd.IntN(5) == 0 {
			r += ", dryRun: true"
		}
		if rnd.IntN(4) == 0 {
			r += ", audit: true"
		}
		if rnd.IntN(6) == 0 {
			r += ", headers: [{name: X-Role, equals: ops}]"
		}
		if rnd.IntN(4) == 0 {
			r += ", issuers: " + list([]string{"https://idp.a", "https://idp.b"}, 1)
		}
		if rnd.IntN(3) == 0 {
			r += ", scopes: " + []string{"[a]", "[c:w]", "[a, b]", "[b, c:w]"}[rnd.IntN(4)]
		}
		if rnd.IntN(4) == 0 {
			r += ", claims: [" + []string{"{name: grp, contains: ops}", "{name: grp, equals: ops}", "{name: lvl, in: [1, 2]}",
				"{name: lvl, equals: 2}", "{name: ok, equals: true}", "{name: ok, in: [\"true\", false]}", "{name: sub, in: [u1, u3]}"}[rnd.IntN(7)] + "]"
		}
		if device {
			r += ", access: " + []string{"read", "write"}[rnd.IntN(2)]
		}
		if eff == "allow" && rnd.IntN(3) == 0 {
			r += ", rateLimit: " + []string{"{per: workload, requests: 10, period: 1m}", "{per: device, requests: 3, period: 500ms, burst: 7}",
				"{per: workload, requests: 1, period: 24h, burst: 1}", "{per: user, requests: 5, period: 1s}"}[rnd.IntN(4)]
		}
		return r + "}\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: w1}\nspec:\n  rules:\n")
	for i := range 6 {
		b.WriteString(rule(i, false))
	}
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: DevicePolicy\nmetadata: {name: inv%s}\nspec:\n  devices: {classes: [inverter]}\n", map[bool]string{true: ", dryRun: true", false: ""}[rnd.IntN(5) == 0])
	if rnd.IntN(3) > 0 {
		b.WriteString("  target: {paths: [\"/v1/inv/{id}/**\"], header: x-dev}\n")
	}
	b.WriteString("  controlPaths: [\"/v1/inv/{id}/set\"]\n  writeRateLimit: {perSecond: 1, burst: 2}\n  rules:\n")
	for i := range 4 {
		b.WriteString(rule(10+i, true))
	}
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: w2}\nspec:\n  rules:\n")
	for i := range 4 {
		b.WriteString(rule(20+i, false))
	}
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: DevicePolicy\nmetadata: {name: meters}\nspec:\n  devices: {ids: [M-1, m-2], classes: [meter]}\n")
	if rnd.IntN(2) == 0 {
		b.WriteString("  writeRateLimit: {perSecond: 0.5, burst: 1}\n")
	}
	b.WriteString("  rules:\n")
	for i := range 3 {
		b.WriteString(rule(30+i, true))
	}
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: VersionPolicy\nmetadata: {name: v}\nspec:\n  rules:\n")
	fmt.Fprintf(&b, "    - {name: ctl, subjects: [\"spiffe://g.example/ns/a/**\"], source: {jwtClaim: sw}, allowed: %s, denied: [2.4.1]%s}\n",
		pick([]string{`">=2.0.0, <3.0.0"`, `"^2.3"`, `"~2.3.0 || >=3.0.0-0"`, `"2.x"`,
			// Sunsets around the requests' instants (refNows).
			`[">=2.4.0, <3.0.0", {range: "~2.3.0", until: "2027-01-31T00:00:00Z"}]`,
			`[{range: "2.x", until: "2027-01-31T01:00:00+01:00"}, {range: ">=1.9.0", until: "2027-03-01T00:00:00.5Z"}]`,
			`[{range: ">=1.0.0", until: "2026-12-01T00:00:00Z"}]`}),
		map[bool]string{true: ", dryRun: true", false: ""}[rnd.IntN(3) == 0])
	fmt.Fprintf(&b, "    - {name: fw, deviceClasses: [inverter], source: {deviceFirmware: true}, allowed: \">=3.1.0\"%s}\n", map[bool]string{true: ", dryRun: true", false: ""}[rnd.IntN(3) == 0])
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: Revocations\nmetadata: {name: rev}\nspec:\n  spiffeIDs: [spiffe://g.example/ns/b/sa/y]\n  deviceIDs: [INV-9]\n  jtis: [j-bad]\n")
	fmt.Fprintf(&b, "---\napiVersion: meshguard.io/v1\nkind: Revocations\nmetadata: {name: trial, dryRun: true}\nspec:\n  spiffeIDs: [spiffe://g.example/ns/a/sa/x]\n  deviceIDs: [inv-8]\n")

	ids := append([]string{"", "spiffe://g.example/ns/c/sa/x", "not-spiffe"}, subjects[:2]...)
	devIDs := []string{"", "inv-1", "INV-1", "inv-2", "inv-9", "inv-8", "m-1", "M-2"}
	reqPaths := []string{"/v1/inv/inv-1/set", "/v1/inv/INV-1/status", "/v1/inv/inv-2/set", "/v1/meters/m-1", "/v1/x/", "/", "/v1/inv/inv-1/./set",
		"/v1/inv/inv-9/status", "/v1/inv/inv-8/set", "/v1/other", "/v1/inv/inv-1/set?q=1", "/v1//x"}
	var reqs []*Request
	for range 400 {
		r := &Request{SPIFFEID: pick(ids), Method: pick(append(methods, "get", "HEAD")), Path: pick(reqPaths),
			Claims: Map{"sw": pick([]string{"2.3.1", "2.4.1", "1.9.0", "3.0.0-rc.1", "v2.3.1", ""})}}
		if rnd.IntN(3) == 0 {
			r.PeerID = pick(ids)
			r.Forwarded = rnd.IntN(2) == 0
		}
		if rnd.IntN(2) == 0 {
			r.DeviceID, r.DeviceClass = pick(devIDs), pick(classes)
			r.DeviceFirmware = pick([]string{"3.2.0", "3.0.0", "bad"})
		}
		if rnd.IntN(4) == 0 {
			r.Headers = Map{"x-role": pick([]string{"ops", "dev"}), "x-dev": pick(devIDs)}
		}
		if rnd.IntN(10) == 0 {
			r.TargetDeviceID = pick(devIDs)
		}
		if rnd.IntN(20) == 0 {
			r.JTI = "j-bad"
		}
		r.Now = refNows[rnd.IntN(len(refNows))].UnixNano()
		if us := refUsers(); rnd.IntN(5) > 0 {
			r.User = refUserOf(us[rnd.IntN(len(us))])
		}
		reqs = append(reqs, r)
	}
	return b.String(), reqs
}

// TestReferenceDecisions: on generated sets and requests the engine, its
// image and the reference agree on every field of every decision.
func TestReferenceDecisions(t *testing.T) {
	rnd := rand.New(rand.NewPCG(11, 12))
	sets, decisions, allows := 0, 0, 0
	for round := 0; round < 400; round++ {
		src, reqs := refCorpus(rnd)
		s, err := Load(map[string][]byte{"r.yaml": []byte(src)})
		if err != nil {
			continue // e.g. a generated rule shadowed by an earlier one
		}
		e, err := Compile(s)
		require.NoError(t, err)
		img, _ := roundTrip(t, e)
		sets++
		for _, r := range reqs {
			want := refDecide(s, r)
			var got, fromImage Decision
			e.Decide(r, &got)
			img.Decide(r, &fromImage)
			require.Equal(t, want, got, "set:\n%s\nrequest %+v", src, *r)
			require.Equal(t, got, fromImage)
			decisions++
			if got.Allow {
				allows++
			}
		}
	}
	require.Greater(t, sets, 30, "most generated sets must load")
	require.Greater(t, allows, decisions/50, "the corpus must allow often enough to test allows")
	t.Logf("%d sets, %d decisions, %d allows", sets, decisions, allows)
}

// FuzzReference fuzzes requests against generated sets and the grid set:
// the engine must decide as the reference does.
func FuzzReference(f *testing.F) {
	rnd := rand.New(rand.NewPCG(21, 22))
	var sets []*Set
	for len(sets) < 4 {
		src, _ := refCorpus(rnd)
		if s, err := Load(map[string][]byte{"r.yaml": []byte(src)}); err == nil {
			sets = append(sets, s)
		}
	}
	grid, _ := loadGrid(f)
	sets = append(sets, grid)
	for _, dir := range []string{"testdata/sunsets", "testdata/callerlimits", "testdata/users"} {
		files, err := ReadPaths(dir)
		require.NoError(f, err)
		s, err := Load(files)
		require.NoError(f, err)
		sets = append(sets, s)
	}
	engines := make([]*Engine, len(sets))
	for i, s := range sets {
		e, err := Compile(s)
		require.NoError(f, err)
		engines[i] = e
	}
	_, reqs := refCorpus(rnd)
	for _, r := range reqs[:60] {
		f.Add(r.SPIFFEID, r.PeerID, r.Forwarded, r.DeviceID, r.DeviceClass, r.DeviceFirmware, r.Method, r.Path, r.TargetDeviceID, "inv-1", "2.3.1")
	}
	f.Fuzz(func(t *testing.T, id, peer string, fwd bool, devID, class, fw, method, path, target, hdr, sw string) {
		r := &Request{SPIFFEID: id, PeerID: peer, Forwarded: fwd, DeviceID: devID, DeviceClass: class, DeviceVendor: "voltwerk",
			DeviceFirmware: fw, Method: method, Path: path, TargetDeviceID: target, Headers: Map{"x-dev": hdr, "x-role": "ops", "x-sw-version": sw},
			Claims: Map{"sw": sw, "swversion": sw}, Now: refNows[len(path)%len(refNows)].UnixNano()}
		if len(hdr)%3 != 0 {
			// An end-user token from the fuzzed strings.
			r.User = refUserOf(map[string]any{"iss": []string{"https://idp.a", "https://idp.utility.example", target}[len(hdr)%3],
				"sub": id, "scope": sw, "scp": []any{class}, "grp": []any{hdr, "operators"}, "groups": []any{hdr},
				"tenant": devID, "lvl": json.Number(strconv.Itoa(len(path) % 4)), "level": json.Number(strconv.Itoa(len(fw) % 3)),
				"verified": len(method)%2 == 0})
		}
		for i, s := range sets {
			var got Decision
			engines[i].Decide(r, &got)
			if want := refDecide(s, r); want != got {
				t.Fatalf("set %d, request %+v:\nreference %+v\nengine    %+v", i, *r, want, got)
			}
		}
	})
}
