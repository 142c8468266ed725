package policies

import (
	"strings"
	"time"
)

// Reasons (constant strings so decisions never allocate).
const (
	ReasonRevokedID        = "caller SPIFFE ID is revoked"
	ReasonRevokedPeer      = "mTLS peer SPIFFE ID is revoked"
	ReasonRevokedDevice    = "device is revoked"
	ReasonRevokedJTI       = "JWT-SVID jti is revoked"
	ReasonIdentityConflict = "mTLS peer and JWT-SVID subject differ and the peer is not a trusted forwarder"
	ReasonTargetConflict   = "request names two different target devices"
	ReasonTargetEmpty      = "request names an empty target device"
	ReasonTargetNoToken    = "request targets a device but carries no device token naming a device"
	ReasonTargetMismatch   = "device token is for another device than the request targets"
	ReasonDeviceIDTooLong  = "device id is longer than 128 bytes"
	ReasonDenyRule         = "denied by rule"
	ReasonVersionMissing   = "software version is unknown (version source gave no valid semantic version)"
	ReasonVersionRange     = "software version is outside the allowed range"
	ReasonVersionDenied    = "software version is deny-listed"
	ReasonAllowRule        = "allowed by rule"
	ReasonDefaultDeny      = "no rule allows the request (default deny)"
	// Default denies that an end-user token would change.
	ReasonInsufficientScope = "the end-user token lacks a scope the matching rule requires (default deny)"
	ReasonUserRequired      = "a rule would allow the request with a verified end-user token; none was presented (default deny)"
)

// MaxDeviceIDLen is the longest device id (token or target) the engine
// accepts; longer ones are refused, so every id folds within a stack buffer.
const MaxDeviceIDLen = 128

// Why an access rule reached through the tries did not match (explain).
const (
	matchOK = iota
	matchMethod
	matchAccess
	matchHeader
	matchWorkloadWrite // a workload allow never allows a device write
	matchNoUser        // end-user conditions without an end-user token
	matchUser          // the end-user token's issuer or a claim
	matchScope         // only the end-user token's scopes
)

type state struct {
	e    *Engine
	req  *Request
	tr   *tracer // nil in Decide
	path string  // request path without the leading "/" and the query
	mbit uint16
	// device: the request carries a device token or names a target;
	// token: it carries a device token.
	device, token, write bool

	target                      string
	targetConflict, targetEmpty bool

	deny, allow, dryDeny, dryAllow int32
	dryLimit                       int32 // earliest matching dry-run allow with a rateLimit
	ver, dryVer                    int32
	verReason                      string
	// verStr is the version presented to rule ver, seenStr to the first
	// version rule checked (seenVer), for Decision.Version.
	verStr, seenStr string
	seenVer         int32
	// noUser: an enforced allow rule failed only for want of an end-user
	// token; scope: the earliest enforced allow rule that failed only on
	// its scopes.
	noUser bool
	scope  int32
	audit  bool  // an enforced matching rule has audit: true
	nowNs  int64 // see now
}

func minIdx(cur, i int32) int32 {
	if cur < 0 || i < cur {
		return i
	}
	return cur
}

// next returns the first segment of s and the remainder; last reports that
// s has no further segment.
func next(s string) (seg, rest string, last bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], false
	}
	return s, "", true
}

// trimPath drops the leading "/" and the query of a request path.
func trimPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return strings.TrimPrefix(p, "/")
}

// walkPaths walks a path trie along the request path. Rule tries carry
// rule indexes (considered); with targets, the target-template trie carries
// the index of the segment naming the device.
func (st *state) walkPaths(n int32, path string, done, targets bool) {
	f := &st.e.f
	nd := &f.nodes[n]
	st.payload(f.list(nd.rest), targets)
	if done {
		st.payload(f.list(nd.end), targets)
		return
	}
	seg, rest, last := next(path)
	if c := f.child(n, seg); c != none {
		st.walkPaths(c, rest, last, targets)
	}
	if nd.wild != none && seg != "" {
		st.walkPaths(nd.wild, rest, last, targets)
	}
}

func (st *state) payload(l []int32, targets bool) {
	for _, i := range l {
		if targets {
			st.nameTarget(segmentAt(st.path, int(i)))
		} else {
			st.consider(i)
		}
	}
}

func (st *state) pathsFrom(n int32) {
	if n != none {
		st.walkPaths(n, st.path, st.path == "", false)
	}
}

// Subject walk modes.
const (
	walkRules    = 1 << iota // consider access rules
	walkVersions             // check version rules
)

func (st *state) walkSubjects(n int32, id string, done bool, mode int) {
	f := &st.e.f
	nd := &f.nodes[n]
	if mode&walkRules != 0 {
		st.pathsFrom(nd.restPath)
	}
	if mode&walkVersions != 0 {
		for _, v := range f.list(nd.restVers) {
			st.checkVersion(v)
		}
	}
	if done {
		if mode&walkRules != 0 {
			st.pathsFrom(nd.endPaths)
		}
		if mode&walkVersions != 0 {
			for _, v := range f.list(nd.endVers) {
				st.checkVersion(v)
			}
		}
		return
	}
	seg, rest, last := next(id)
	if c := f.child(n, seg); c != none {
		st.walkSubjects(c, rest, last, mode)
	}
	if nd.wild != none && seg != "" {
		st.walkSubjects(nd.wild, rest, last, mode)
	}
}

// subjects walks a subject trie for one identity; anonymous requests only
// reach rules open to any subject.
func (st *state) subjects(root int32, id string, mode int) {
	if root == none {
		return
	}
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if (!ok || rest == "") && id == "" && st.req.TrustDomain != "" {
		// Only the trust domain is known (e.g. a JWT from a federated
		// domain without a parsed ID): trust-domain rules may still match.
		rest, ok = st.req.TrustDomain, true
	}
	if !ok || rest == "" {
		if mode&walkRules != 0 {
			st.pathsFrom(st.e.f.nodes[root].restPath)
		}
		return
	}
	st.walkSubjects(root, rest, false, mode)
}

func (st *state) consider(i int32) {
	why := st.match(i)
	if st.tr != nil {
		st.tr.rule(st, i, why)
	}
	r := &st.e.rules[i]
	if why == matchNoUser || why == matchScope {
		if !r.dryRun && r.effect == Allow {
			if why == matchNoUser {
				st.noUser = true
			} else {
				st.scope = minIdx(st.scope, i)
			}
		}
		return
	}
	if why != matchOK {
		return
	}
	switch {
	case r.dryRun && r.effect == Deny:
		st.dryDeny = minIdx(st.dryDeny, i)
	case r.dryRun:
		st.dryAllow = minIdx(st.dryAllow, i)
		if r.limit != nil {
			st.dryLimit = minIdx(st.dryLimit, i)
		}
	case r.effect == Deny:
		st.deny = minIdx(st.deny, i)
		st.audit = st.audit || r.audit
	default:
		st.allow = minIdx(st.allow, i)
		st.audit = st.audit || r.audit
	}
}

// match applies the conditions the tries do not index.
func (st *state) match(i int32) int {
	r := &st.e.rules[i]
	if r.methods&st.mbit == 0 {
		return matchMethod
	}
	if r.access == AccessRead && st.write || r.access == AccessWrite && !st.write {
		return matchAccess
	}
	for k := range r.headers {
		h := &r.headers[k]
		if st.req.Headers == nil {
			return matchHeader
		}
		v, ok := st.req.Headers.Get(h.name)
		if !ok || !h.present && v != h.equals {
			return matchHeader
		}
	}
	if st.write && r.dev == nil && r.effect == Allow {
		return matchWorkloadWrite
	}
	if r.user != nil {
		switch r.user.check(st.req.User) {
		case userMissing:
			return matchNoUser
		case userIssuer, userClaim:
			return matchUser
		case userScope:
			return matchScope
		}
	}
	return matchOK
}

func (st *state) versionString(v *cversion) string {
	r := st.req
	switch {
	case v.source.PeerLabel:
		return r.PeerVersion
	case v.source.DeviceFirmware:
		return r.DeviceFirmware
	case v.source.JWTClaim != "":
		if r.Claims != nil {
			s, _ := r.Claims.Get(v.source.JWTClaim)
			return s
		}
	case v.source.Header != "":
		if r.Headers != nil {
			s, _ := r.Headers.Get(v.source.Header)
			return s
		}
	}
	return ""
}

// now is the instant sunsets are compared with: the request's, else the
// clock's (read once per decision, and only when a sunset entry is reached).
func (st *state) now() int64 {
	if st.nowNs == 0 {
		st.nowNs = st.req.Now
		if st.nowNs == 0 {
			st.nowNs = time.Now().UnixNano()
		}
	}
	return st.nowNs
}

// verdict is "" when s satisfies v, else the reason it does not.
func (v *cversion) verdict(s string, st *state) string {
	pv, ok := parseVersion(s)
	if !ok {
		return ReasonVersionMissing
	}
	if len(v.allowed) > 0 {
		// Approved by any entry whose range contains it and whose sunset, if
		// any, is still ahead; else the earliest passed sunset that would
		// have approved it names the reason.
		sunset := ""
		approved := false
		for i := range v.allowed {
			a := &v.allowed[i]
			if !a.r.contains(pv) {
				continue
			}
			if a.until == 0 || st.now() < a.until {
				approved = true
				break
			}
			if sunset == "" {
				sunset = a.reason
			}
		}
		switch {
		case approved:
		case sunset != "":
			return sunset
		default:
			return ReasonVersionRange
		}
	}
	for _, d := range v.deniedAll {
		if pv.compare(d) == 0 {
			return ReasonVersionDenied
		}
	}
	for _, d := range v.deniedExt {
		if pv.compare(d) == 0 && pv.build == d.build {
			return ReasonVersionDenied
		}
	}
	return ""
}

func (st *state) checkVersion(i int32) {
	v := &st.e.versions[i]
	s := st.versionString(v)
	reason := v.verdict(s, st)
	if st.seenVer < 0 || i < st.seenVer {
		st.seenVer, st.seenStr = i, s
	}
	if st.tr != nil {
		st.tr.version(i, s, reason)
	}
	switch {
	case reason == "":
	case v.dryRun:
		st.dryVer = minIdx(st.dryVer, i)
	case st.ver < 0 || i < st.ver:
		st.ver, st.verReason, st.verStr = i, reason, s
	}
}

func (c *cdevice) selects(r *Request) bool {
	if c.ids != nil && !hasID(c.ids, r.DeviceID) {
		return false
	}
	if len(c.classes) > 0 && !in(c.classes, r.DeviceClass) ||
		len(c.vendors) > 0 && !in(c.vendors, r.DeviceVendor) ||
		len(c.models) > 0 && !in(c.models, r.DeviceModel) {
		return false
	}
	if c.hasFW {
		v, ok := parseVersion(r.DeviceFirmware)
		if !ok || !c.firmware.contains(v) {
			return false
		}
	}
	return true
}

// lookupFold looks s up in m (whose keys are lower-case) with ASCII
// letters folded; the lower-cased copy lives on the stack and the
// m[string(b)] form does not allocate. Ids longer than MaxDeviceIDLen are
// refused before any lookup.
func lookupFold[V any](m map[string]V, s string) (V, bool) {
	if v, ok := m[s]; ok {
		return v, true
	}
	var zero V
	var buf [MaxDeviceIDLen]byte
	if len(s) > len(buf) {
		return zero, false
	}
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
			upper = true
		}
		buf[i] = c
	}
	if !upper {
		return zero, false
	}
	v, ok := m[string(buf[:len(s)])]
	return v, ok
}

// hasID reports whether the sorted lower-case ids hold s, compared by the
// device-id case rule (no allocation).
func hasID(ids []string, s string) bool {
	var buf [MaxDeviceIDLen]byte
	if len(s) > len(buf) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	k := buf[:len(s)]
	lo, hi := 0, len(ids)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if compareBytes(ids[m], k) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(ids) && compareBytes(ids[lo], k) == 0
}

// compareBytes compares a and b as strings.Compare does, without
// converting b.
func compareBytes(a string, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// equalFold compares device ids with ASCII letters folded.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func in(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// nameTarget records one place naming the target device.
func (st *state) nameTarget(id string) {
	switch {
	case id == "":
		st.targetEmpty = true
	case st.target == "":
		st.target = id
	case !equalFold(st.target, id):
		st.targetConflict = true
	}
}

// segmentAt returns segment k (0-based) of a path without its leading "/".
func segmentAt(p string, k int) string {
	for ; k > 0; k-- {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return ""
		}
		p = p[i+1:]
	}
	seg, _, _ := next(p)
	return seg
}

// targets collects every naming of the target device.
func (st *state) targets() {
	e, r := st.e, st.req
	if r.TargetDeviceID != "" {
		st.nameTarget(r.TargetDeviceID)
	}
	if e.target != none {
		st.walkPaths(e.target, st.path, st.path == "", true)
	}
	if r.Headers != nil {
		for _, h := range e.targetHeaders {
			if v, ok := r.Headers.Get(h); ok {
				st.nameTarget(v)
			}
		}
	}
}

// devLists returns the device policies that may select r.
func (e *Engine) devLists(r *Request) (byID, byClass []*cdevice) {
	if r.DeviceID != "" {
		byID = e.byID.get(r.DeviceID)
	}
	if r.DeviceClass != "" {
		byClass = e.devByClass[r.DeviceClass]
	}
	return byID, byClass
}

func (rv *revocations) any() bool { return len(rv.ids) > 0 || len(rv.devices) > 0 || len(rv.jtis) > 0 }

// revokedBy returns the Revocations document revoking an identity of r, and
// why ("" when none).
func (st *state) revokedBy(rv *revocations, caller string) (name, reason string) {
	r := st.req
	if caller != "" {
		if n, ok := rv.ids[caller]; ok {
			return n, ReasonRevokedID
		}
	}
	if r.PeerID != "" && r.PeerID != caller {
		if n, ok := rv.ids[r.PeerID]; ok {
			return n, ReasonRevokedPeer
		}
	}
	for _, id := range [2]string{r.DeviceID, st.target} {
		if id != "" {
			if n, ok := lookupFold(rv.devices, id); ok {
				return n, ReasonRevokedDevice
			}
		}
	}
	if r.JTI != "" {
		if n, ok := rv.jtis[r.JTI]; ok {
			return n, ReasonRevokedJTI
		}
	}
	return "", ""
}

// Decide evaluates req and fills d (which is reset first), following the
// decision order of policies/README.md. It does not allocate and is safe
// for concurrent use.
func (e *Engine) Decide(req *Request, d *Decision) {
	e.decide(req, d, nil)
}

func (e *Engine) decide(req *Request, d *Decision, tr *tracer) {
	*d = Decision{}
	st := state{e: e, req: req, tr: tr, deny: -1, allow: -1, dryDeny: -1, dryAllow: -1, dryLimit: -1, ver: -1, dryVer: -1, seenVer: -1, scope: -1}
	end, pathErr := scanPath(req.Path)
	if pathErr != nil {
		st.path = trimPath(req.Path)
	} else {
		st.path = req.Path[1:end]
	}
	st.mbit = methodBit(req.Method)
	if st.mbit == 0 {
		st.mbit = methodOther
	}
	// Write is computed first, so every decision reports it.
	if e.target != none || req.TargetDeviceID != "" || req.Headers != nil && len(e.targetHeaders) > 0 {
		st.targets()
	}
	st.token = req.DeviceID != "" || req.DeviceClass != "" || req.DeviceVendor != "" || req.DeviceModel != "" || req.DeviceFirmware != ""
	st.device = st.token || st.target != "" || st.targetConflict || st.targetEmpty
	st.write = st.device && st.mbit&methodsSafe == 0 ||
		e.ctrl != none && e.f.matchAny(e.ctrl, st.path, st.path == "")
	d.Write, d.TargetDevice = st.write, st.target
	caller := req.SPIFFEID
	if caller == "" {
		caller = req.PeerID
	}

	// 1. The path must be canonical.
	if pathErr != nil {
		e.refuse(d, pathErr.Error())
		return
	}
	// 2. Revocations.
	if e.anyRevoked {
		if name, reason := st.revokedBy(&e.revoked, caller); name != "" {
			e.refuse(d, reason)
			d.addRule(name)
			return
		}
	}
	// 3. One caller per request.
	if req.SPIFFEID != "" && req.PeerID != "" && req.SPIFFEID != req.PeerID && !req.Forwarded {
		e.refuse(d, ReasonIdentityConflict)
		return
	}
	// 4. The device token is bound to the device the request targets.
	if st.device {
		if reason := st.binding(); reason != "" {
			e.refuse(d, reason)
			return
		}
	}

	// 5. Version rules and 6. access rules, collected in one walk per
	// identity: the caller's (rules and versions), the peer's (versions).
	var limit *cdevice
	if st.token {
		limit = st.devicePolicies(caller)
	}
	st.subjects(e.subj, caller, walkRules|walkVersions)
	if req.PeerID != "" && req.PeerID != caller {
		st.subjects(e.subj, req.PeerID, walkVersions)
	}
	dryRevoked := ""
	if e.anyDryRevoked {
		dryRevoked, _ = st.revokedBy(&e.dryRevoked, caller)
	}

	d.Version = st.seenStr
	if st.ver >= 0 {
		d.Version = st.verStr
	}
	switch {
	case st.ver >= 0:
		d.Reason, d.Audit = st.verReason, true
		d.addRule(e.versions[st.ver].id)
	case st.deny >= 0:
		d.Reason, d.Audit = ReasonDenyRule, st.audit || st.write
		d.addRule(e.rules[st.deny].id)
	case st.allow >= 0:
		r := &e.rules[st.allow]
		d.Allow, d.Reason, d.Audit = true, ReasonAllowRule, st.audit || st.write
		d.addRule(r.id)
		if st.write {
			if r.dev != nil && r.dev.limit != nil {
				limit = r.dev
			}
			if limit != nil {
				d.HasRateLimit, d.RateLimit = true, *limit.limit
				d.RateLimitKey = req.DeviceID
				if d.RateLimitKey == "" {
					d.RateLimitKey = req.DeviceClass
				}
			}
		}
		if r.limit != nil {
			d.HasCallerLimit = true
			st.callerLimit(&d.CallerLimit, r, caller)
		}
		if st.dryLimit >= 0 {
			d.HasDryRunCallerLimit = true
			st.callerLimit(&d.DryRunCallerLimit, &e.rules[st.dryLimit], caller)
		}
		// Would the dry-run rules have denied it?
		switch {
		case dryRevoked != "":
			d.DryRun, d.DryRunRule = true, dryRevoked
		case st.dryVer >= 0:
			d.DryRun, d.DryRunRule = true, e.versions[st.dryVer].id
		case st.dryDeny >= 0:
			d.DryRun, d.DryRunRule = true, e.rules[st.dryDeny].id
		}
	default:
		d.Reason, d.Audit = ReasonDefaultDeny, st.write
		switch {
		case st.scope >= 0:
			d.Reason, d.Scope = ReasonInsufficientScope, e.rules[st.scope].user.scopeText
			d.addRule(e.rules[st.scope].id)
		case st.noUser && req.User == nil:
			d.Reason, d.UserRequired = ReasonUserRequired, true
		default:
			d.DefaultDeny = true
		}
		// Would a dry-run allow have allowed it (nothing dry-run denying)?
		if st.dryAllow >= 0 && dryRevoked == "" && st.dryVer < 0 && st.dryDeny < 0 {
			d.DryRun, d.DryRunRule = true, e.rules[st.dryAllow].id
		}
	}
	if d.DryRun {
		d.Audit = true
	}
}

// callerLimit fills l with rule r's rate limit for this request's caller.
func (st *state) callerLimit(l *CallerLimit, r *crule, caller string) {
	*l = CallerLimit{Rule: r.id, Per: r.limit.per, PerSecond: r.limit.perSecond, Burst: r.limit.burst}
	switch r.limit.per {
	case PerDevice:
		l.Key = st.req.DeviceID
	case PerUser:
		if u := st.req.User; u != nil {
			l.Key, l.Issuer = u.Subject, u.Issuer
		}
	default:
		if rest, ok := strings.CutPrefix(caller, "spiffe://"); ok && rest != "" {
			l.Key = caller
		}
	}
}

// binding returns why the device token is not bound to the device the
// request names, or "".
func (st *state) binding() string {
	id := st.req.DeviceID
	switch {
	case len(id) > MaxDeviceIDLen || len(st.target) > MaxDeviceIDLen:
		return ReasonDeviceIDTooLong
	case st.targetConflict:
		return ReasonTargetConflict
	case st.targetEmpty:
		return ReasonTargetEmpty
	case st.target != "" && id == "":
		return ReasonTargetNoToken
	case st.target != "" && !equalFold(st.target, id):
		return ReasonTargetMismatch
	}
	return ""
}

// devicePolicies walks the rules of every DevicePolicy selecting the
// token's device, checks the device class's version rules, and returns the
// first selecting policy (document order) with a write rate limit.
func (st *state) devicePolicies(caller string) (limit *cdevice) {
	e, req := st.e, st.req
	byID, byClass := e.devLists(req)
	for _, l := range [3][]*cdevice{byID, byClass, e.devAny} {
		for _, c := range l {
			sel := c.selects(req)
			if st.tr != nil {
				st.tr.device(c, sel)
			}
			if !sel {
				continue
			}
			if c.limit != nil && (limit == nil || c.order < limit.order) {
				limit = c
			}
			st.subjects(c.subj, caller, walkRules)
		}
	}
	if req.DeviceClass != "" {
		for _, v := range e.verByClass[req.DeviceClass] {
			st.checkVersion(v)
		}
	}
	return limit
}

// refuse fills a deny decided before the rules (always audited).
func (e *Engine) refuse(d *Decision, reason string) {
	d.Reason, d.Audit = reason, true
}
