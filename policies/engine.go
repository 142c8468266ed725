package policies

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// HTTP method bits; methodOther is any method outside the standard set.
const (
	mGET uint16 = 1 << iota
	mHEAD
	mOPTIONS
	mPOST
	mPUT
	mPATCH
	mDELETE
	mCONNECT
	mTRACE
	methodOther
	methodsSafe = mGET | mHEAD | mOPTIONS
	methodsAll  = 0xffff
)

func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return mGET
	case "HEAD":
		return mHEAD
	case "OPTIONS":
		return mOPTIONS
	case "POST":
		return mPOST
	case "PUT":
		return mPUT
	case "PATCH":
		return mPATCH
	case "DELETE":
		return mDELETE
	case "CONNECT":
		return mCONNECT
	case "TRACE":
		return mTRACE
	}
	return 0
}

// pnode is a path trie node while compiling (see forest); payload are rule
// indexes.
type pnode struct {
	lit       map[string]*pnode
	wild      *pnode // "*" or "{param}" segment
	end, rest []int32
}

// snode is a subject trie node keyed by trust domain then SPIFFE path
// segments, while compiling (see forest).
type snode struct {
	lit                map[string]*snode
	wild               *snode
	endPaths, restPath *pnode
	endVers, restVers  []int32
}

type hdr struct {
	name, equals string
	present      bool
}

type crule struct {
	id      string
	effect  Effect
	dryRun  bool
	audit   bool
	methods uint16
	access  Access
	headers []hdr
	dev     *cdevice // nil for workload rules
	limit   *climit  // nil: no rateLimit
	user    *cuser   // nil: no end-user conditions
}

// Caller rate limit bounds.
const (
	maxLimitRequests = 1_000_000_000
	minLimitPeriod   = time.Millisecond
	maxLimitPeriod   = 24 * time.Hour
)

// climit is a compiled caller rate limit.
type climit struct {
	per             string // PerWorkload or PerDevice
	requests, burst uint32
	period          int64 // nanoseconds
	perSecond       float64
}

func newCLimit(per string, requests uint32, period int64, burst uint32) *climit {
	return &climit{per: per, requests: requests, burst: burst, period: period,
		perSecond: float64(requests) / time.Duration(period).Seconds()}
}

type cversion struct {
	id        string
	dryRun    bool
	source    VersionSource
	allowed   []allowEntry // empty: any version
	deniedAll []version    // deny every build of these versions
	deniedExt []version    // deny exactly these builds
}

// allowEntry is one compiled entry of a version rule's allowed list.
type allowEntry struct {
	text   string // the range as written (named by the sunset reason)
	r      versionRange
	until  int64  // Unix nanoseconds; 0: no sunset
	reason string // the sunset's deny reason (sunset entries only)
}

// sunsetReason is the reason of a version denied because the only entries
// approving it have reached their until.
func sunsetReason(text string, until int64) string {
	return "software version approved by \"" + text + "\" until " + FormatInstant(time.Unix(0, until)) + ": sunset passed"
}

type cdevice struct {
	name     string
	order    int32    // index in Engine.devices (document order)
	ids      []string // lower-case, sorted, unique; nil = any id (see hasID)
	classes  []string
	vendors  []string
	models   []string
	firmware versionRange
	hasFW    bool
	limit    *RateLimit
	subj     int32 // subject trie root in the forest

	subjects *snode // the pointer trie while compiling; nil afterwards
}

// revocations maps revoked identities to the name of the (earliest)
// Revocations document listing them; device ids are lower-case.
type revocations struct {
	ids, devices, jtis map[string]string
}

func newRevocations() revocations {
	return revocations{ids: map[string]string{}, devices: map[string]string{}, jtis: map[string]string{}}
}

// Engine is a compiled, immutable policy set. Decide is safe for concurrent use.
type Engine struct {
	rules    []crule // workload and device rules in source order
	versions []cversion
	devices  []*cdevice
	f        forest
	subj     int32  // root of the workload and version subject trie
	subjects *snode // that trie while compiling; nil afterwards

	// Every DevicePolicy's controlPaths in one trie (payload unused), and
	// every target path template in another (payload: the index of the
	// segment naming the device); none when absent.
	ctrl, target            int32
	controlTrie, targetTrie *pnode // while compiling
	targetHeaders           []string

	devByID    map[string][]*cdevice // while compiling; nil afterwards
	byID       devIndex              // the device policies selecting each id
	devByClass map[string][]*cdevice
	devAny     []*cdevice
	verByClass map[string][]int32

	revoked, dryRevoked       revocations
	anyRevoked, anyDryRevoked bool // so Decide skips empty tables

	trustDomains map[string][]byte
	issuers      []cissuer
	counts       Counts

	up upstreamTables // the caller's side (upstream.go)
}

// Counts summarises a compiled engine.
type Counts struct {
	WorkloadRules, DeviceRules, VersionRules, Revocations, TrustDomains, Issuers int
}

// Counts returns how many rules and entries the engine holds.
func (e *Engine) Counts() Counts { return e.counts }

// UsesPeerVersion reports whether any version rule reads the Istio peer
// metadata version label, so callers can skip fetching it otherwise.
func (e *Engine) UsesPeerVersion() bool {
	for i := range e.versions {
		if e.versions[i].source.PeerLabel {
			return true
		}
	}
	return false
}

// NextSunset returns the earliest until instant after now among the
// allowed entries of enforced (not dry-run) version rules: when the next
// transition window closes. ok is false when none is ahead.
func (e *Engine) NextSunset(now time.Time) (next time.Time, ok bool) {
	n, best := now.UnixNano(), int64(0)
	for i := range e.versions {
		v := &e.versions[i]
		if v.dryRun {
			continue
		}
		for k := range v.allowed {
			if u := v.allowed[k].until; u > n && (best == 0 || u < best) {
				best = u
			}
		}
	}
	if best == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, best), true
}

// JWKS returns the JWT bundle declared for a trust domain.
func (e *Engine) JWKS(trustDomain string) ([]byte, bool) {
	b, ok := e.trustDomains[trustDomain]
	return b, ok && len(b) > 0
}

// TrustDomains returns the declared trust domain names.
func (e *Engine) TrustDomains() []string {
	out := make([]string, 0, len(e.trustDomains))
	for n := range e.trustDomains {
		out = append(out, n)
	}
	return out
}

// segments splits a pattern into trie segments; "**" may only end it.
func segments(p string) ([]string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case s == "**":
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%q: ** may only be the last segment", p)
			}
		case s == "*" || (len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}'):
			segs[i] = "*"
		case strings.ContainsAny(s, "*{}"):
			return nil, fmt.Errorf("%q: wildcards must be whole segments (*, {name}, or a final **)", p)
		}
	}
	return segs, nil
}

func (n *pnode) insert(segs []string) (node *pnode, rest bool) {
	for i, s := range segs {
		if s == "**" && i == len(segs)-1 {
			return n, true
		}
		if s == "*" {
			if n.wild == nil {
				n.wild = &pnode{}
			}
			n = n.wild
			continue
		}
		if n.lit == nil {
			n.lit = map[string]*pnode{}
		}
		c := n.lit[s]
		if c == nil {
			c = &pnode{}
			n.lit[s] = c
		}
		n = c
	}
	return n, false
}

func (n *snode) insert(segs []string) (node *snode, rest bool) {
	for i, s := range segs {
		if s == "**" && i == len(segs)-1 {
			return n, true
		}
		if s == "*" {
			if n.wild == nil {
				n.wild = &snode{}
			}
			n = n.wild
			continue
		}
		if n.lit == nil {
			n.lit = map[string]*snode{}
		}
		c := n.lit[s]
		if c == nil {
			c = &snode{}
			n.lit[s] = c
		}
		n = c
	}
	return n, false
}

// subjectSegments turns subject and trust-domain patterns into trie paths.
func subjectSegments(subjects, tds []Pattern) ([][]string, error) {
	var out [][]string
	for _, s := range subjects {
		rest, ok := strings.CutPrefix(s.Text, "spiffe://")
		if !ok {
			return nil, fmt.Errorf("%s: subject %q must start with spiffe://", s.Pos, s.Text)
		}
		segs, err := segments(rest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Pos, err)
		}
		if len(segs) == 0 || segs[0] == "*" || segs[0] == "**" {
			return nil, fmt.Errorf("%s: subject %q: the trust domain cannot be a wildcard", s.Pos, s.Text)
		}
		out = append(out, segs)
	}
	for _, td := range tds {
		out = append(out, []string{td.Text, "**"})
	}
	if len(subjects) == 0 && len(tds) == 0 {
		out = append(out, []string{"**"})
	}
	return out, nil
}

func pathSegments(paths []Pattern) ([][]string, error) {
	var out [][]string
	for _, p := range paths {
		if !strings.HasPrefix(p.Text, "/") {
			return nil, fmt.Errorf("%s: path %q must start with /", p.Pos, p.Text)
		}
		segs, err := segments(p.Text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Pos, err)
		}
		out = append(out, segs)
	}
	if len(paths) == 0 {
		out = append(out, []string{"**"})
	}
	return out, nil
}

// Compile builds an Engine from a set (normally one returned by Load).
func Compile(s *Set) (*Engine, error) {
	e := &Engine{subjects: &snode{}, devByID: map[string][]*cdevice{}, devByClass: map[string][]*cdevice{},
		verByClass: map[string][]int32{}, revoked: newRevocations(), dryRevoked: newRevocations(),
		trustDomains: map[string][]byte{}, controlTrie: &pnode{}, targetTrie: &pnode{}}
	devs := make([]*cdevice, len(s.Devices))
	for i, d := range s.Devices {
		c, err := e.addDevice(d)
		if err != nil {
			return nil, err
		}
		devs[i] = c
	}
	// Rules of every kind are numbered in source order (file, then
	// position), so "the earliest matching rule" means the same across
	// WorkloadPolicy and DevicePolicy documents.
	type entry struct {
		r   *AccessRule
		dev *cdevice
	}
	var all []entry
	for _, w := range s.Workloads {
		for _, r := range w.Rules {
			all = append(all, entry{r, nil})
		}
		e.counts.WorkloadRules += len(w.Rules)
	}
	for i, d := range s.Devices {
		for _, r := range d.Rules {
			all = append(all, entry{r, devs[i]})
		}
		e.counts.DeviceRules += len(d.Rules)
	}
	slices.SortStableFunc(all, func(a, b entry) int { return comparePos(a.r.Pos, b.r.Pos) })
	for _, en := range all {
		root := e.subjects
		if en.dev != nil {
			root = en.dev.subjects
		}
		if err := e.addRule(root, en.r, en.dev); err != nil {
			return nil, err
		}
	}
	for _, v := range s.Versions {
		for _, r := range v.Rules {
			if err := e.addVersion(r); err != nil {
				return nil, err
			}
		}
	}
	if err := e.compileUpstream(s); err != nil {
		return nil, err
	}
	for _, r := range s.Revocations {
		rv := &e.revoked
		if r.DryRun {
			rv = &e.dryRevoked
		}
		for _, p := range r.SPIFFEIDs {
			putFirst(rv.ids, p.Text, r.Name)
		}
		for _, p := range r.DeviceIDs {
			putFirst(rv.devices, asciiLower(p.Text), r.Name)
		}
		for _, p := range r.JTIs {
			putFirst(rv.jtis, p.Text, r.Name)
		}
		e.counts.Revocations += len(r.SPIFFEIDs) + len(r.DeviceIDs) + len(r.JTIs)
	}
	for _, td := range s.TrustDomains {
		e.trustDomains[td.Name] = td.JWKS
	}
	e.counts.TrustDomains = len(s.TrustDomains)
	if err := e.addIssuers(s.Issuers); err != nil {
		return nil, err
	}
	slices.Sort(e.targetHeaders)
	e.targetHeaders = slices.Compact(e.targetHeaders)
	e.anyRevoked, e.anyDryRevoked = e.revoked.any(), e.dryRevoked.any()
	e.byID, e.devByID = newDevIndex(e.devByID), nil
	e.flatten()
	return e, nil
}

// comparePos orders positions by file name, line and column: the order in
// which Parse reads documents.
func comparePos(a, b Pos) int {
	if c := strings.Compare(a.File, b.File); c != 0 {
		return c
	}
	if a.Line != b.Line {
		return a.Line - b.Line
	}
	return a.Col - b.Col
}

func putFirst(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// asciiLower lower-cases ASCII letters only (device ids fold this way, so
// no Unicode case mapping can make two ids equal).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for k := i; k < len(b); k++ {
				if b[k] >= 'A' && b[k] <= 'Z' {
					b[k] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// flatten moves the pointer tries into the forest.
func (e *Engine) flatten() {
	// Size the arrays once: a large set would otherwise copy them log n
	// times while growing.
	var sz forestSize
	sz.subjects(e.subjects)
	for _, c := range e.devices {
		sz.subjects(c.subjects)
	}
	sz.paths(e.controlTrie)
	sz.paths(e.targetTrie)
	e.f.nodes = make([]fnode, 0, sz.nodes)
	e.f.edges = make([]fedge, 0, sz.edges)
	e.f.ints = make([]int32, 0, sz.ints)
	e.subj = e.f.addSubjects(e.subjects)
	e.subjects = nil
	for _, c := range e.devices {
		c.subj = e.f.addSubjects(c.subjects)
		c.subjects = nil
	}
	e.ctrl, e.target = none, none
	if !e.controlTrie.empty() {
		e.ctrl = e.f.addPaths(e.controlTrie)
	}
	if !e.targetTrie.empty() {
		e.target = e.f.addPaths(e.targetTrie)
	}
	e.controlTrie, e.targetTrie = nil, nil
	// The arrays are final: drop append slack.
	e.f.nodes = slices.Clip(e.f.nodes)
	e.f.edges = slices.Clip(e.f.edges)
	e.f.ints = slices.Clip(e.f.ints)
}

// forestSize counts what flattening pointer tries will append.
type forestSize struct{ nodes, edges, ints int }

func (z *forestSize) paths(n *pnode) {
	if n == nil {
		return
	}
	z.nodes++
	z.edges += len(n.lit)
	z.ints += len(n.end) + len(n.rest)
	for _, c := range n.lit {
		z.paths(c)
	}
	z.paths(n.wild)
}

func (z *forestSize) subjects(n *snode) {
	if n == nil {
		return
	}
	z.nodes++
	z.edges += len(n.lit)
	z.ints += len(n.endVers) + len(n.restVers)
	for _, c := range n.lit {
		z.subjects(c)
	}
	z.subjects(n.wild)
	z.paths(n.endPaths)
	z.paths(n.restPath)
}

func (n *pnode) empty() bool {
	return len(n.lit) == 0 && n.wild == nil && len(n.end) == 0 && len(n.rest) == 0
}

func (e *Engine) addRule(root *snode, r *AccessRule, dev *cdevice) error {
	c := crule{id: r.ID, effect: r.Effect, dryRun: r.DryRun, audit: r.Audit, access: r.Access, dev: dev, user: newCUser(r)}
	for _, cl := range r.Claims {
		if cl.Name == "" || cl.Op < ClaimEquals || cl.Op > ClaimIn || len(cl.Values) == 0 || cl.Op != ClaimIn && len(cl.Values) != 1 {
			return fmt.Errorf("%s: invalid claim condition", cl.Pos)
		}
	}
	if l := r.RateLimit; l != nil {
		if r.Effect != Allow || (l.Per != PerWorkload && l.Per != PerDevice && l.Per != PerUser) || l.Requests == 0 || l.Burst == 0 ||
			l.Period < minLimitPeriod || l.Period > maxLimitPeriod {
			return fmt.Errorf("%s: invalid rateLimit", l.Pos)
		}
		c.limit = newCLimit(l.Per, l.Requests, int64(l.Period), l.Burst)
	}
	for _, m := range r.Methods {
		b := methodBit(m)
		if b == 0 {
			return fmt.Errorf("%s: unknown method %q", r.Pos, m)
		}
		c.methods |= b
	}
	if c.methods == 0 {
		c.methods = methodsAll
	}
	for _, h := range r.Headers {
		c.headers = append(c.headers, hdr{name: strings.ToLower(h.Name), equals: h.Equals, present: h.Present})
	}
	idx := int32(len(e.rules))
	e.rules = append(e.rules, c)
	subs, err := subjectSegments(r.Subjects, r.TrustDomains)
	if err != nil {
		return err
	}
	paths, err := pathSegments(r.Paths)
	if err != nil {
		return err
	}
	for _, ss := range subs {
		sn, srest := root.insert(ss)
		var pt **pnode = &sn.endPaths
		if srest {
			pt = &sn.restPath
		}
		if *pt == nil {
			*pt = &pnode{}
		}
		for _, ps := range paths {
			pn, prest := (*pt).insert(ps)
			if prest {
				pn.rest = appendOnce(pn.rest, idx)
			} else {
				pn.end = appendOnce(pn.end, idx)
			}
		}
	}
	return nil
}

func appendOnce(l []int32, i int32) []int32 {
	if len(l) > 0 && l[len(l)-1] == i {
		return l
	}
	return append(l, i)
}

func (e *Engine) addVersion(r *VersionRule) error {
	c, err := e.versionCore(r)
	if err != nil {
		return err
	}
	idx := int32(len(e.versions))
	e.versions = append(e.versions, c)
	e.counts.VersionRules++
	for _, cl := range r.DeviceClasses {
		e.verByClass[cl] = append(e.verByClass[cl], idx)
	}
	if len(r.Subjects) == 0 && len(r.TrustDomains) == 0 {
		return nil
	}
	subs, err := subjectSegments(r.Subjects, r.TrustDomains)
	if err != nil {
		return err
	}
	for _, ss := range subs {
		sn, rest := e.subjects.insert(ss)
		if rest {
			sn.restVers = appendOnce(sn.restVers, idx)
		} else {
			sn.endVers = appendOnce(sn.endVers, idx)
		}
	}
	return nil
}

// addDevice compiles a device policy's selector, target and control paths;
// its rules are added in source order by Compile. A dry-run policy only
// contributes its (dry-run) rules: its target, control paths and rate
// limit would change decisions.
func (e *Engine) addDevice(d *DevicePolicy) (*cdevice, error) {
	c := &cdevice{name: d.Name, order: int32(len(e.devices)), classes: d.Devices.Classes, vendors: d.Devices.Vendors,
		models: d.Devices.Models, limit: d.WriteLimit, subjects: &snode{}}
	if d.DryRun {
		c.limit = nil
		d = &DevicePolicy{Meta: d.Meta, Devices: d.Devices, Rules: d.Rules}
	}
	if d.Devices.Firmware != "" {
		vr, err := parseRange(d.Devices.Firmware)
		if err != nil {
			return nil, fmt.Errorf("%s: firmware: %w", d.Devices.Pos, err)
		}
		c.firmware, c.hasFW = vr, true
	}
	if len(d.ControlPaths) > 0 {
		segs, err := pathSegments(d.ControlPaths)
		if err != nil {
			return nil, err
		}
		for _, s := range segs {
			n, rest := e.controlTrie.insert(s)
			if rest {
				n.rest = appendOnce(n.rest, 0)
			} else {
				n.end = appendOnce(n.end, 0)
			}
		}
	}
	if t := d.Target; t != nil {
		for _, p := range t.Paths {
			segs, k, err := targetSegments(p)
			if err != nil {
				return nil, err
			}
			n, rest := e.targetTrie.insert(segs)
			if rest {
				n.rest = appendOnce(n.rest, int32(k))
			} else {
				n.end = appendOnce(n.end, int32(k))
			}
		}
		if t.Header != "" {
			e.targetHeaders = append(e.targetHeaders, strings.ToLower(t.Header))
		}
	}
	e.devices = append(e.devices, c)
	switch {
	case len(d.Devices.IDs) > 0:
		seen := map[string]bool{}
		for _, id := range d.Devices.IDs {
			id = asciiLower(id)
			if !seen[id] {
				seen[id] = true
				e.devByID[id] = append(e.devByID[id], c)
			}
		}
		c.ids = sortedKeys(seen)
	case len(c.classes) > 0:
		seen := map[string]bool{}
		for _, cl := range c.classes {
			if !seen[cl] {
				seen[cl] = true
				e.devByClass[cl] = append(e.devByClass[cl], c)
			}
		}
	default:
		e.devAny = append(e.devAny, c)
	}
	return c, nil
}

// targetSegments splits a target path template; exactly one segment is a
// {param}, whose index is returned.
func targetSegments(p Pattern) ([]string, int, error) {
	segs, err := pathSegments([]Pattern{p})
	if err != nil {
		return nil, 0, err
	}
	k := -1
	raw := strings.Split(strings.TrimPrefix(p.Text, "/"), "/")
	for i, s := range raw {
		switch {
		case len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}':
			if k >= 0 {
				return nil, 0, fmt.Errorf("%s: target path %q: more than one {param} segment", p.Pos, p.Text)
			}
			k = i
		case s == "*":
			return nil, 0, fmt.Errorf("%s: target path %q: use {param} for the device segment and literal segments elsewhere", p.Pos, p.Text)
		}
	}
	if k < 0 {
		return nil, 0, fmt.Errorf("%s: target path %q needs one {param} segment naming the device", p.Pos, p.Text)
	}
	return segs[0], k, nil
}

// devIndex maps lower-case device ids to the device policies selecting
// them: sorted keys searched in place, so an image of 100k ids loads
// without building a map.
type devIndex struct {
	keys  []string
	lists [][]*cdevice
}

// newDevIndex indexes m (sorted by key).
func newDevIndex(m map[string][]*cdevice) devIndex {
	x := devIndex{keys: sortedKeys(m)}
	x.lists = make([][]*cdevice, len(x.keys))
	for i, k := range x.keys {
		x.lists[i] = m[k]
	}
	return x
}

// get returns the policies selecting id, compared by the device-id case
// rule (no allocation).
func (x *devIndex) get(id string) []*cdevice {
	var buf [MaxDeviceIDLen]byte
	if len(id) > len(buf) || len(x.keys) == 0 {
		return nil
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	k := buf[:len(id)]
	lo, hi := 0, len(x.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if compareBytes(x.keys[m], k) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(x.keys) && compareBytes(x.keys[lo], k) == 0 {
		return x.lists[lo]
	}
	return nil
}
