package policies

import "strings"

// Reasons (constant strings so decisions never allocate).
const (
	ReasonRevokedID      = "caller SPIFFE ID is revoked"
	ReasonRevokedDevice  = "device is revoked"
	ReasonRevokedJTI     = "JWT-SVID jti is revoked"
	ReasonDenyRule       = "denied by rule"
	ReasonVersionMissing = "software version is unknown (version source gave nothing parseable)"
	ReasonVersionRange   = "software version is outside the allowed range"
	ReasonVersionDenied  = "software version is deny-listed"
	ReasonAllowRule      = "allowed by rule"
	ReasonDefaultDeny    = "no rule allows the request (default deny)"
)

type state struct {
	e      *Engine
	req    *Request
	mbit   uint16
	write  bool
	device bool

	deny, allow, dryDeny, dryAllow int32
	ver, dryVer                    int32
	verReason                      string
}

func minIdx(cur, i int32) int32 {
	if cur < 0 || i < cur {
		return i
	}
	return cur
}

// next returns the first segment of s and the remainder.
func next(s string) (seg, rest string) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

func (st *state) walkPaths(n int32, path string, done bool) {
	f := &st.e.f
	nd := &f.nodes[n]
	for _, i := range f.list(nd.rest) {
		st.consider(i)
	}
	if done {
		for _, i := range f.list(nd.end) {
			st.consider(i)
		}
		return
	}
	seg, rest := next(path)
	last := !strings.Contains(path, "/")
	if c := f.child(n, seg); c != none {
		st.walkPaths(c, rest, last)
	}
	if nd.wild != none && seg != "" {
		st.walkPaths(nd.wild, rest, last)
	}
}

func (st *state) pathsFrom(n int32) {
	if n == none {
		return
	}
	p := st.req.Path
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	p = strings.TrimPrefix(p, "/")
	st.walkPaths(n, p, p == "")
}

func (st *state) walkSubjects(n int32, id string, done, versions bool) {
	f := &st.e.f
	nd := &f.nodes[n]
	st.pathsFrom(nd.restPath)
	if versions {
		for _, v := range f.list(nd.restVers) {
			st.checkVersion(v)
		}
	}
	if done {
		st.pathsFrom(nd.endPaths)
		if versions {
			for _, v := range f.list(nd.endVers) {
				st.checkVersion(v)
			}
		}
		return
	}
	seg, rest := next(id)
	last := !strings.Contains(id, "/")
	if c := f.child(n, seg); c != none {
		st.walkSubjects(c, rest, last, versions)
	}
	if nd.wild != none && seg != "" {
		st.walkSubjects(nd.wild, rest, last, versions)
	}
}

func (st *state) subjects(root int32, versions bool) {
	if root == none {
		return
	}
	id, ok := strings.CutPrefix(st.req.SPIFFEID, "spiffe://")
	if (!ok || id == "") && st.req.TrustDomain != "" {
		// Only the trust domain is known (e.g. a JWT from a federated
		// domain without a parsed ID): trust-domain rules may still match.
		id, ok = st.req.TrustDomain, true
	}
	if !ok || id == "" {
		// Anonymous callers only match rules open to any subject.
		st.pathsFrom(st.e.f.nodes[root].restPath)
		return
	}
	st.walkSubjects(root, id, false, versions)
}

func (st *state) consider(i int32) {
	r := &st.e.rules[i]
	if r.methods&st.mbit == 0 {
		return
	}
	if r.access == AccessRead && st.write || r.access == AccessWrite && !st.write {
		return
	}
	for k := range r.headers {
		h := &r.headers[k]
		if st.req.Headers == nil {
			return
		}
		v, ok := st.req.Headers.Get(h.name)
		if !ok || !h.present && v != h.equals {
			return
		}
	}
	switch {
	case r.dryRun && r.effect == Deny:
		st.dryDeny = minIdx(st.dryDeny, i)
	case r.dryRun:
		st.dryAllow = minIdx(st.dryAllow, i)
	case r.effect == Deny:
		st.deny = minIdx(st.deny, i)
	default:
		st.allow = minIdx(st.allow, i)
	}
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

func (st *state) checkVersion(i int32) {
	v := &st.e.versions[i]
	s := st.versionString(v)
	reason := ""
	pv, ok := parseVersion(s)
	switch {
	case !ok:
		reason = ReasonVersionMissing
	case !v.allowed.contains(pv):
		reason = ReasonVersionRange
	default:
		for _, d := range v.deniedAll {
			if pv.compare(d) == 0 && pv.pre == d.pre {
				reason = ReasonVersionDenied
			}
		}
		t := strings.TrimLeft(s, "vV")
		for _, d := range v.deniedExt {
			if t == d {
				reason = ReasonVersionDenied
			}
		}
	}
	if reason == "" {
		return
	}
	if v.dryRun {
		st.dryVer = minIdx(st.dryVer, i)
		return
	}
	if st.ver < 0 || i < st.ver {
		st.ver, st.verReason = i, reason
	}
}

func (c *cdevice) selects(r *Request) bool {
	if c.ids != nil {
		if _, ok := lookupFold(c.ids, r.DeviceID); !ok {
			return false
		}
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

// lookupFold looks s up in m, retrying with s lower-cased (ids such as
// LFDIs arrive in either case). The retry lower-cases into a stack buffer;
// the m[string(b)] form does not allocate.
func lookupFold[V any](m map[string]V, s string) (V, bool) {
	if v, ok := m[s]; ok {
		return v, true
	}
	var zero V
	var buf [128]byte
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

func in(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (e *Engine) isControl(c *cdevice, path string) bool {
	if c.ctrl == none {
		return false
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return e.f.matchAny(c.ctrl, strings.TrimPrefix(path, "/"), path == "/" || path == "")
}

// devices calls fn-free loops over the device policies that may select r.
func (e *Engine) devLists(r *Request) (byID, byClass []*cdevice) {
	if r.DeviceID != "" {
		byID, _ = lookupFold(e.devByID, r.DeviceID)
	}
	if r.DeviceClass != "" {
		byClass = e.devByClass[r.DeviceClass]
	}
	return byID, byClass
}

// Decide evaluates req and fills d (which is reset first). It does not
// allocate and is safe for concurrent use.
func (e *Engine) Decide(req *Request, d *Decision) {
	*d = Decision{}
	if name, ok := e.revokedIDs[req.SPIFFEID]; ok && req.SPIFFEID != "" {
		e.revoked(d, name, ReasonRevokedID)
		return
	}
	if req.DeviceID != "" {
		if name, ok := lookupFold(e.revokedDevices, req.DeviceID); ok {
			e.revoked(d, name, ReasonRevokedDevice)
			return
		}
	}
	if name, ok := e.revokedJTIs[req.JTI]; ok && req.JTI != "" {
		e.revoked(d, name, ReasonRevokedJTI)
		return
	}

	st := state{e: e, req: req, deny: -1, allow: -1, dryDeny: -1, dryAllow: -1, ver: -1, dryVer: -1}
	st.mbit = methodBit(req.Method)
	if st.mbit == 0 {
		st.mbit = methodOther
	}
	st.device = req.DeviceID != "" || req.DeviceClass != ""
	var limit *cdevice
	if st.device {
		st.write = st.mbit&methodsSafe == 0
		byID, byClass := e.devLists(req)
		for pass := 0; pass < 2; pass++ {
			for _, l := range [3][]*cdevice{byID, byClass, e.devAny} {
				for _, c := range l {
					if !c.selects(req) {
						continue
					}
					if pass == 0 {
						if !st.write && e.isControl(c, req.Path) {
							st.write = true
						}
						if limit == nil && c.limit != nil {
							limit = c
						}
						continue
					}
					st.subjects(c.subj, false)
				}
			}
		}
		if req.DeviceClass != "" {
			for _, v := range e.verByClass[req.DeviceClass] {
				st.checkVersion(v)
			}
		}
	}
	st.subjects(e.subj, true)

	d.Write = st.write
	switch {
	case st.ver >= 0 || st.deny >= 0:
		d.Reason = ReasonDenyRule
		if st.ver >= 0 {
			d.addRule(e.versions[st.ver].id)
			d.Reason = st.verReason
		}
		if st.deny >= 0 {
			r := &e.rules[st.deny]
			d.addRule(r.id)
			d.Audit = r.audit
		}
		d.Audit = d.Audit || st.write
	case st.allow >= 0:
		r := &e.rules[st.allow]
		d.Allow, d.Reason = true, ReasonAllowRule
		d.addRule(r.id)
		d.Audit = r.audit || st.write
		if st.write {
			lc := limit
			if r.dev != nil && r.dev.limit != nil {
				lc = r.dev
			}
			if lc != nil {
				d.HasRateLimit, d.RateLimit = true, *lc.limit
				d.RateLimitKey = req.DeviceID
				if d.RateLimitKey == "" {
					d.RateLimitKey = req.DeviceClass
				}
			}
		}
		switch {
		case st.dryVer >= 0:
			d.DryRun, d.DryRunRule = true, e.versions[st.dryVer].id
		case st.dryDeny >= 0:
			d.DryRun, d.DryRunRule = true, e.rules[st.dryDeny].id
		}
	default:
		d.Reason = ReasonDefaultDeny
		d.Audit = st.write
		if st.dryAllow >= 0 {
			d.DryRun, d.DryRunRule = true, e.rules[st.dryAllow].id
		}
	}
	if d.DryRun {
		d.Audit = true
	}
}

func (e *Engine) revoked(d *Decision, name, reason string) {
	d.Reason, d.Audit = reason, true
	d.addRule(name)
}
