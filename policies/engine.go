package policies

import (
	"fmt"
	"slices"
	"strings"
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
	dev     *cdevice
}

type cversion struct {
	id        string
	dryRun    bool
	source    VersionSource
	allowed   versionRange
	deniedAll []version // deny every build of these versions
	deniedExt []string  // deny exactly these version strings (with +build)
}

type cdevice struct {
	name     string
	ids      map[string]bool
	classes  []string
	vendors  []string
	models   []string
	firmware versionRange
	hasFW    bool
	limit    *RateLimit
	ctrl     int32 // control-path trie root in the forest, or none
	subj     int32 // subject trie root in the forest

	// Pointer tries while compiling; nil afterwards.
	control  *pnode
	subjects *snode
}

// Engine is a compiled, immutable policy set. Decide is safe for concurrent use.
type Engine struct {
	rules    []crule
	versions []cversion
	devices  []*cdevice
	f        forest
	subj     int32  // root of the workload and version subject trie
	subjects *snode // that trie while compiling; nil afterwards

	devByID    map[string][]*cdevice
	devByClass map[string][]*cdevice
	devAny     []*cdevice
	verByClass map[string][]int32

	revokedIDs, revokedDevices, revokedJTIs map[string]string // → revocation policy name

	trustDomains map[string][]byte
	counts       Counts
}

// Counts summarises a compiled engine.
type Counts struct {
	WorkloadRules, DeviceRules, VersionRules, Revocations, TrustDomains int
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
		verByClass: map[string][]int32{}, revokedIDs: map[string]string{}, revokedDevices: map[string]string{},
		revokedJTIs: map[string]string{}, trustDomains: map[string][]byte{}}
	for _, w := range s.Workloads {
		for _, r := range w.Rules {
			if err := e.addRule(e.subjects, r, nil); err != nil {
				return nil, err
			}
			e.counts.WorkloadRules++
		}
	}
	for _, v := range s.Versions {
		for _, r := range v.Rules {
			if err := e.addVersion(r); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range s.Devices {
		if err := e.addDevice(d); err != nil {
			return nil, err
		}
	}
	for _, r := range s.Revocations {
		for _, p := range r.SPIFFEIDs {
			e.revokedIDs[p.Text] = r.Name
		}
		for _, p := range r.DeviceIDs {
			e.revokedDevices[strings.ToLower(p.Text)] = r.Name
		}
		for _, p := range r.JTIs {
			e.revokedJTIs[p.Text] = r.Name
		}
		e.counts.Revocations += len(r.SPIFFEIDs) + len(r.DeviceIDs) + len(r.JTIs)
	}
	for _, td := range s.TrustDomains {
		e.trustDomains[td.Name] = td.JWKS
	}
	e.counts.TrustDomains = len(s.TrustDomains)
	e.flatten()
	return e, nil
}

// flatten moves the pointer tries into the forest.
func (e *Engine) flatten() {
	e.subj = e.f.addSubjects(e.subjects)
	e.subjects = nil
	for _, c := range e.devices {
		c.subj = e.f.addSubjects(c.subjects)
		c.ctrl = none
		if c.control != nil && (len(c.control.lit) > 0 || c.control.wild != nil || len(c.control.end) > 0 || len(c.control.rest) > 0) {
			c.ctrl = e.f.addPaths(c.control)
		}
		c.subjects, c.control = nil, nil
	}
	// The arrays are final: drop append slack.
	e.f.nodes = slices.Clip(e.f.nodes)
	e.f.edges = slices.Clip(e.f.edges)
	e.f.ints = slices.Clip(e.f.ints)
}

func (e *Engine) addRule(root *snode, r *AccessRule, dev *cdevice) error {
	c := crule{id: r.ID, effect: r.Effect, dryRun: r.DryRun, audit: r.Audit, access: r.Access, dev: dev}
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
	c := cversion{id: r.ID, dryRun: r.DryRun, source: r.Source}
	if r.Allowed != "" {
		vr, err := parseRange(r.Allowed)
		if err != nil {
			return fmt.Errorf("%s: allowed: %w", r.AllowedPos, err)
		}
		c.allowed = vr
	}
	for _, d := range r.Denied {
		v, ok := parseVersion(d.Text)
		if !ok {
			return fmt.Errorf("%s: denied: invalid version %q", d.Pos, d.Text)
		}
		if v.build != "" {
			c.deniedExt = append(c.deniedExt, strings.TrimLeft(d.Text, "vV"))
		} else {
			c.deniedAll = append(c.deniedAll, v)
		}
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

func (e *Engine) addDevice(d *DevicePolicy) error {
	c := &cdevice{name: d.Name, classes: d.Devices.Classes, vendors: d.Devices.Vendors, models: d.Devices.Models,
		limit: d.WriteLimit, subjects: &snode{}, control: &pnode{}}
	if d.Devices.Firmware != "" {
		vr, err := parseRange(d.Devices.Firmware)
		if err != nil {
			return fmt.Errorf("%s: firmware: %w", d.Devices.Pos, err)
		}
		c.firmware, c.hasFW = vr, true
	}
	if len(d.ControlPaths) > 0 {
		segs, err := pathSegments(d.ControlPaths)
		if err != nil {
			return err
		}
		for _, s := range segs {
			n, rest := c.control.insert(s)
			if rest {
				n.rest = append(n.rest, 0)
			} else {
				n.end = append(n.end, 0)
			}
		}
	}
	e.devices = append(e.devices, c)
	for _, r := range d.Rules {
		if err := e.addRule(c.subjects, r, c); err != nil {
			return err
		}
		e.counts.DeviceRules++
	}
	switch {
	case len(d.Devices.IDs) > 0:
		c.ids = map[string]bool{}
		for _, id := range d.Devices.IDs {
			c.ids[id] = true
			e.devByID[id] = append(e.devByID[id], c)
		}
	case len(c.classes) > 0:
		for _, cl := range c.classes {
			e.devByClass[cl] = append(e.devByClass[cl], c)
		}
	default:
		e.devAny = append(e.devAny, c)
	}
	return nil
}
