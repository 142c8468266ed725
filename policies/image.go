package policies

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// An engine image is a compiled Engine in a compact binary form, so a proxy
// can load a large policy set without parsing YAML or building tries: the
// image is read in one pass with a handful of allocations. Signed bundles
// carry it (package policies/bundle decides where and checks it against
// the sources).
//
// Layout: the magic ImageMagic, the format version, then every table of the
// engine in a fixed order. Integers are unsigned varints, strings and byte
// strings are a varint length and the bytes, maps are written in key order,
// so the image of an engine is deterministic. Trie nodes are in preorder;
// their edge and payload ranges are implicit (running offsets) and child
// references are written as the distance from the parent, which is always
// positive.

// ImageMagic starts every engine image.
const ImageMagic = "MGENGINE"

// imageVersion is bumped on any change of the layout.
// v3: version rules' allowed is a list of entries with optional sunsets;
// access rules carry caller rate limits.
// v4: access rules carry end-user conditions (issuers, scopes, claims);
// the Issuer table follows the trust domains; the caller's side
// (UpstreamVersionPolicy rules, DeviceRegistry entries) follows the forest.
const imageVersion = 4

// ErrImage is wrapped by every UnmarshalEngine error.
var ErrImage = errors.New("invalid engine image")

// MarshalEngine returns the engine's image (see UnmarshalEngine). It is a
// function, not a MarshalBinary method: a proxy that only loads images
// keeps every method of a type its interfaces reach, and would link the
// writer with the reader.
func MarshalEngine(e *Engine) ([]byte, error) {
	w := &imgWriter{b: make([]byte, 0, 64+len(e.f.nodes)*4+len(e.f.edges)*8+len(e.rules)*24)}
	w.b = append(w.b, ImageMagic...)
	w.uint(imageVersion)
	for _, n := range []int{e.counts.WorkloadRules, e.counts.DeviceRules, e.counts.VersionRules, e.counts.Revocations, e.counts.TrustDomains} {
		w.uint(uint64(n))
	}
	devIdx := make(map[*cdevice]int, len(e.devices))
	for i, c := range e.devices {
		devIdx[c] = i
	}
	w.uint(uint64(len(e.rules)))
	for i := range e.rules {
		r := &e.rules[i]
		w.str(r.id)
		w.b = append(w.b, byte(r.effect), b2byte(r.dryRun)|b2byte(r.audit)<<1, byte(r.access))
		w.uint(uint64(r.methods))
		w.uint(uint64(len(r.headers)))
		for _, h := range r.headers {
			w.str(h.name)
			w.str(h.equals)
			w.b = append(w.b, b2byte(h.present))
		}
		if r.dev == nil {
			w.uint(0)
		} else {
			w.uint(uint64(devIdx[r.dev]) + 1)
		}
		switch {
		case r.limit == nil:
			w.b = append(w.b, 0)
		case r.limit.per == PerWorkload:
			w.b = append(w.b, 1)
		case r.limit.per == PerDevice:
			w.b = append(w.b, 2)
		default:
			w.b = append(w.b, 3)
		}
		if l := r.limit; l != nil {
			w.uint(uint64(l.requests))
			w.uint(uint64(l.period))
			w.uint(uint64(l.burst))
		}
		w.user(r.user)
	}
	w.uint(uint64(len(e.versions)))
	for i := range e.versions {
		v := &e.versions[i]
		w.str(v.id)
		w.b = append(w.b, b2byte(v.dryRun), b2byte(v.source.DeviceFirmware), b2byte(v.source.PeerLabel))
		w.str(v.source.JWTClaim)
		w.str(v.source.Header)
		w.uint(uint64(len(v.allowed)))
		for _, a := range v.allowed {
			w.str(a.text)
			w.vrange(a.r)
			w.uint(uint64(a.until))
		}
		for _, l := range [2][]version{v.deniedAll, v.deniedExt} {
			w.uint(uint64(len(l)))
			for _, d := range l {
				w.version(d)
			}
		}
	}
	w.uint(uint64(len(e.devices)))
	for _, c := range e.devices {
		w.str(c.name)
		if c.ids == nil {
			w.uint(0)
		} else {
			w.uint(uint64(len(c.ids)) + 1)
			for _, id := range c.ids {
				w.str(id)
			}
		}
		w.strs(c.classes)
		w.strs(c.vendors)
		w.strs(c.models)
		w.b = append(w.b, b2byte(c.hasFW))
		w.vrange(c.firmware)
		if c.limit == nil {
			w.b = append(w.b, 0)
		} else {
			w.b = append(w.b, 1)
			w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(c.limit.PerSecond))
			w.uint(uint64(c.limit.Burst))
		}
		w.ref(c.subj)
	}
	w.devIndex(&e.byID, devIdx)
	w.devMap(e.devByClass, devIdx)
	w.uint(uint64(len(e.devAny)))
	for _, c := range e.devAny {
		w.uint(uint64(devIdx[c]))
	}
	keys := sortedKeys(e.verByClass)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.ints(e.verByClass[k])
	}
	w.strs(e.targetHeaders)
	for _, m := range []map[string]string{e.revoked.ids, e.revoked.devices, e.revoked.jtis,
		e.dryRevoked.ids, e.dryRevoked.devices, e.dryRevoked.jtis} {
		keys := sortedKeys(m)
		w.uint(uint64(len(keys)))
		for _, k := range keys {
			w.str(k)
			w.str(m[k])
		}
	}
	keys = sortedKeys(e.trustDomains)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(string(e.trustDomains[k]))
	}
	w.uint(uint64(len(e.issuers)))
	for i := range e.issuers {
		is := &e.issuers[i]
		w.str(is.name)
		w.str(is.url)
		w.strs(is.audiences)
		w.strs(is.algorithms)
		w.str(string(is.jwks))
		w.str(is.header)
		w.b = append(w.b, b2byte(is.strictType))
		w.uint(uint64(is.leeway))
		w.uint(uint64(len(is.forwarded)))
		for _, f := range is.forwarded {
			w.str(f.Claim)
			w.str(f.Header)
		}
	}
	w.ref(e.subj)
	w.ref(e.ctrl)
	w.ref(e.target)
	if err := w.forest(&e.f); err != nil {
		return nil, err
	}
	w.upstream(&e.up)
	return w.b, nil
}

// user writes a rule's end-user conditions: 0, or 1 and the issuers,
// scopes and claim conditions.
func (w *imgWriter) user(u *cuser) {
	if u == nil {
		w.b = append(w.b, 0)
		return
	}
	w.b = append(w.b, 1)
	w.strs(u.issuers)
	w.strs(u.scopes)
	w.uint(uint64(len(u.claims)))
	for _, c := range u.claims {
		w.str(c.name)
		w.b = append(w.b, byte(c.op))
		w.uint(uint64(len(c.values)))
		for _, v := range c.values {
			w.str(v.text)
		}
	}
}

func b2byte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

type imgWriter struct{ b []byte }

func (w *imgWriter) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }

func (w *imgWriter) str(s string) {
	w.uint(uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *imgWriter) strs(l []string) {
	w.uint(uint64(len(l)))
	for _, s := range l {
		w.str(s)
	}
}

func (w *imgWriter) ints(l []int32) {
	w.uint(uint64(len(l)))
	for _, i := range l {
		w.uint(uint64(i))
	}
}

// ref writes a node reference: 0 for none, else index+1.
func (w *imgWriter) ref(n int32) { w.uint(uint64(n + 1)) }

func (w *imgWriter) version(v version) {
	w.uint(v.major)
	w.uint(v.minor)
	w.uint(v.patch)
	w.str(v.pre)
	w.str(v.build)
}

func (w *imgWriter) vrange(r versionRange) {
	w.uint(uint64(len(r)))
	for _, g := range r {
		w.uint(uint64(len(g.cmps)))
		for _, c := range g.cmps {
			w.b = append(w.b, byte(c.op), c.dirty)
			w.version(c.v)
		}
	}
}

// devIndex writes an index as devMap writes a map (keys in order).
func (w *imgWriter) devIndex(x *devIndex, idx map[*cdevice]int) {
	w.uint(uint64(len(x.keys)))
	for i, k := range x.keys {
		w.str(k)
		w.uint(uint64(len(x.lists[i])))
		for _, c := range x.lists[i] {
			w.uint(uint64(idx[c]))
		}
	}
}

func (w *imgWriter) devMap(m map[string][]*cdevice, idx map[*cdevice]int) {
	keys := sortedKeys(m)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.uint(uint64(len(m[k])))
		for _, c := range m[k] {
			w.uint(uint64(idx[c]))
		}
	}
}

// Node flags: which optional fields follow.
const (
	nfWild = 1 << iota
	nfEndPaths
	nfRestPath
	nfEnd
	nfRest
	nfEndVers
	nfRestVers
	nfAll = 1<<iota - 1
)

func (w *imgWriter) forest(f *forest) error {
	w.uint(uint64(len(f.nodes)))
	w.uint(uint64(len(f.edges)))
	w.uint(uint64(len(f.ints)))
	var e, in int32
	for id := range f.nodes {
		n := &f.nodes[id]
		// Ranges are implicit: they must follow each other in node order.
		for _, s := range []span{n.end, n.rest, n.endVers, n.restVers} {
			if !s.empty() && s.lo != in {
				return fmt.Errorf("engine image: node %d payload out of order", id)
			}
			in += s.hi - s.lo
		}
		if !n.edges.empty() && n.edges.lo != e {
			return fmt.Errorf("engine image: node %d edges out of order", id)
		}
		e += n.edges.hi - n.edges.lo
		var flags byte
		if n.wild != none {
			flags |= nfWild
		}
		if n.endPaths != none {
			flags |= nfEndPaths
		}
		if n.restPath != none {
			flags |= nfRestPath
		}
		for i, s := range []span{n.end, n.rest, n.endVers, n.restVers} {
			if !s.empty() {
				flags |= nfEnd << i
			}
		}
		w.b = append(w.b, flags)
		w.uint(uint64(n.edges.hi - n.edges.lo))
		for _, c := range []int32{n.wild, n.endPaths, n.restPath} {
			if c != none {
				w.uint(uint64(c - int32(id)))
			}
		}
		for _, s := range []span{n.end, n.rest, n.endVers, n.restVers} {
			if !s.empty() {
				w.uint(uint64(s.hi - s.lo))
			}
		}
	}
	for id := range f.nodes {
		n := &f.nodes[id]
		for _, ed := range f.edges[n.edges.lo:n.edges.hi] {
			w.str(ed.seg)
			w.uint(uint64(ed.child - int32(id)))
		}
	}
	for _, i := range f.ints {
		w.uint(uint64(i))
	}
	return nil
}

// UnmarshalEngine loads an engine image written by MarshalEngine. Every
// index and range is checked, so no image can make Decide fail or loop;
// errors wrap ErrImage.
func UnmarshalEngine(b []byte) (*Engine, error) {
	if len(b) < len(ImageMagic) || string(b[:len(ImageMagic)]) != ImageMagic {
		return nil, fmt.Errorf("%w: no %s magic", ErrImage, ImageMagic)
	}
	// One copy of the whole image; every string of the engine is a
	// substring of it.
	r := &imgReader{s: string(b), off: len(ImageMagic)}
	if v := r.uint(); r.err == nil && v != imageVersion {
		return nil, fmt.Errorf("%w: format version %d, this engine reads version %d only: rebuild the bundle with this release's `meshguard policy bundle`",
			ErrImage, v, imageVersion)
	}
	e := &Engine{}
	cnt := []*int{&e.counts.WorkloadRules, &e.counts.DeviceRules, &e.counts.VersionRules, &e.counts.Revocations, &e.counts.TrustDomains}
	for _, p := range cnt {
		*p = r.int(math.MaxInt32)
	}
	nr := r.count(8)
	e.rules = make([]crule, nr)
	devRefs := make([]int, nr)
	for i := range e.rules {
		c := &e.rules[i]
		c.id = r.str()
		c.effect = Effect(r.byte())
		flags := r.byte()
		c.dryRun, c.audit = flags&1 != 0, flags&2 != 0
		c.access = Access(r.byte())
		c.methods = uint16(r.int(math.MaxUint16))
		if nh := r.count(3); nh > 0 {
			c.headers = make([]hdr, nh)
			for k := range c.headers {
				c.headers[k] = hdr{name: r.str(), equals: r.str(), present: r.byte() != 0}
			}
		}
		devRefs[i] = r.int(math.MaxInt32)
		if r.err == nil && (c.effect != Allow && c.effect != Deny || c.access > AccessWrite || flags > 3) {
			r.fail("rule %d: bad effect, access or flags", i)
		}
		if per := r.byte(); per != 0 {
			req, period, burst := r.int(maxLimitRequests), r.int(uint64(maxLimitPeriod)), r.int(maxLimitRequests)
			if r.err == nil && (per > 3 || c.effect != Allow || req == 0 || burst == 0 || period < int(minLimitPeriod)) {
				r.fail("rule %d: bad rate limit", i)
			}
			kind := PerWorkload
			switch per {
			case 2:
				kind = PerDevice
			case 3:
				kind = PerUser
			}
			if r.err == nil {
				c.limit = newCLimit(kind, uint32(req), int64(period), uint32(burst))
			}
		}
		c.user = r.user(i)
	}
	nv := r.count(8)
	e.versions = make([]cversion, nv)
	for i := range e.versions {
		v := &e.versions[i]
		v.id = r.str()
		v.dryRun, v.source.DeviceFirmware, v.source.PeerLabel = r.byte() != 0, r.byte() != 0, r.byte() != 0
		v.source.JWTClaim, v.source.Header = r.str(), r.str()
		if n := r.count(4); n > 0 {
			v.allowed = make([]allowEntry, n)
			for k := range v.allowed {
				a := &v.allowed[k]
				a.text, a.r = r.str(), r.vrange()
				if len(a.r) == 0 && r.err == nil {
					r.fail("version rule %d: allowed entry %d has an empty range", i, k)
				}
				if u := r.uint(); u != 0 {
					if u >= uint64(maxInstant.UnixNano()) {
						r.fail("version rule %d: allowed entry %d: until %d out of range", i, k, u)
					}
					a.until = int64(u)
					a.reason = sunsetReason(a.text, a.until)
				}
			}
		}
		for _, l := range [2]*[]version{&v.deniedAll, &v.deniedExt} {
			if n := r.count(5); n > 0 {
				*l = make([]version, n)
				for k := range *l {
					(*l)[k] = r.version()
				}
			}
		}
	}
	nd := r.count(10)
	e.devices = make([]*cdevice, nd)
	devs := make([]cdevice, nd)
	for i := range devs {
		c := &devs[i]
		e.devices[i] = c
		c.name, c.order = r.str(), int32(i)
		if n := r.int(math.MaxInt32); n > 0 {
			n--
			if n > r.left() {
				r.fail("device %d: %d ids", i, n)
				break
			}
			// Views of the image, sorted and unique (checked): no map
			// to build, however many ids a policy selects.
			c.ids = make([]string, n)
			for k := range c.ids {
				c.ids[k] = r.str()
				if k > 0 && r.err == nil && c.ids[k] <= c.ids[k-1] {
					r.fail("device %d: ids not sorted and unique", i)
				}
			}
		}
		c.classes, c.vendors, c.models = r.strs(), r.strs(), r.strs()
		c.hasFW = r.byte() != 0
		c.firmware = r.vrange()
		if r.byte() != 0 {
			bits := r.fixed64()
			c.limit = &RateLimit{PerSecond: math.Float64frombits(bits), Burst: uint32(r.int(math.MaxUint32))}
		}
		c.subj = r.ref()
	}
	for i, ref := range devRefs {
		switch {
		case ref == 0:
		case ref-1 < nd:
			e.rules[i].dev = e.devices[ref-1]
		default:
			r.fail("rule %d: device %d of %d", i, ref-1, nd)
		}
	}
	e.byID, e.devByClass = r.devIndex(e.devices), r.devMap(e.devices)
	if n := r.count(1); n > 0 {
		e.devAny = make([]*cdevice, n)
		for k := range e.devAny {
			e.devAny[k] = r.dev(e.devices)
		}
	}
	n := r.count(2)
	e.verByClass = make(map[string][]int32, n)
	for range n {
		k := r.str()
		l := r.ints(nv)
		e.verByClass[k] = l
	}
	e.targetHeaders = r.strs()
	maps := []*map[string]string{&e.revoked.ids, &e.revoked.devices, &e.revoked.jtis,
		&e.dryRevoked.ids, &e.dryRevoked.devices, &e.dryRevoked.jtis}
	for _, m := range maps {
		n := r.count(2)
		*m = make(map[string]string, n)
		for range n {
			k := r.str()
			(*m)[k] = r.str()
		}
	}
	n = r.count(2)
	e.trustDomains = make(map[string][]byte, n)
	for range n {
		k := r.str()
		e.trustDomains[k] = []byte(r.str())
	}
	if n := r.count(10); n > 0 {
		e.issuers = make([]cissuer, n)
		for i := range e.issuers {
			is := &e.issuers[i]
			is.name, is.url, is.audiences, is.algorithms = r.str(), r.str(), r.strs(), r.strs()
			is.jwks, is.header = []byte(r.str()), r.str()
			is.strictType = r.byte() != 0
			is.leeway = int64(r.int(uint64(MaxIssuerLeeway)))
			if nf := r.count(2); nf > 0 {
				is.forwarded = make([]ForwardedClaim, nf)
				for k := range is.forwarded {
					is.forwarded[k] = ForwardedClaim{Claim: r.str(), Header: r.str()}
				}
			}
			if r.err == nil && (is.url == "" || len(is.audiences) == 0 || len(is.algorithms) == 0 || len(is.jwks) == 0 || is.header == "") {
				r.fail("issuer %d: incomplete", i)
			}
			for _, a := range is.algorithms {
				if r.err == nil && !in(IssuerAlgorithms, a) {
					r.fail("issuer %d: algorithm %q not allowed", i, a)
				}
			}
		}
	}
	e.counts.Issuers = len(e.issuers)
	e.anyRevoked, e.anyDryRevoked = e.revoked.any(), e.dryRevoked.any()
	e.subj, e.ctrl, e.target = r.ref(), r.ref(), r.ref()
	r.forest(e, nv)
	r.upstream(&e.up)
	if r.err == nil && r.off != len(r.s) {
		r.fail("%d trailing bytes", len(r.s)-r.off)
	}
	if r.err != nil {
		return nil, r.err
	}
	return e, nil
}

// user reads a rule's end-user conditions (see imgWriter.user).
func (r *imgReader) user(rule int) *cuser {
	switch r.byte() {
	case 0:
		return nil
	case 1:
	default:
		r.fail("rule %d: bad end-user flag", rule)
		return nil
	}
	u := &cuser{issuers: r.strs(), scopes: r.strs()}
	u.scopeText = strings.Join(u.scopes, " ")
	if n := r.count(3); n > 0 {
		u.claims = make([]cclaim, n)
		for k := range u.claims {
			c := &u.claims[k]
			c.name, c.op = r.str(), ClaimOp(r.byte())
			nv := r.count(1)
			if r.err == nil && (c.op < ClaimEquals || c.op > ClaimIn || nv == 0 || c.op != ClaimIn && nv != 1) {
				r.fail("rule %d: bad claim condition %d", rule, k)
				return nil
			}
			c.values = make([]cvalue, nv)
			for j := range c.values {
				c.values[j] = newCValue(r.str())
			}
		}
	}
	return u
}

type imgReader struct {
	s   string
	off int
	err error
}

func (r *imgReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at byte %d: %s", ErrImage, r.off, fmt.Sprintf(format, args...))
	}
}

func (r *imgReader) left() int { return len(r.s) - r.off }

func (r *imgReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if r.off >= len(r.s) || shift > 63 {
			r.fail("truncated or overlong varint")
			return 0
		}
		c := r.s[r.off]
		r.off++
		if shift == 63 && c > 1 {
			r.fail("varint overflows 64 bits")
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

// int reads a varint that must not exceed max.
func (r *imgReader) int(max uint64) int {
	v := r.uint()
	if v > max {
		r.fail("value %d above %d", v, max)
		return 0
	}
	return int(v)
}

// count reads a length whose elements take at least minBytes each, so a
// forged length cannot make the reader allocate beyond the image's size.
func (r *imgReader) count(minBytes int) int {
	n := r.int(math.MaxInt32)
	if n > r.left()/max(minBytes, 1) {
		r.fail("count %d exceeds the remaining %d bytes", n, r.left())
		return 0
	}
	return n
}

func (r *imgReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.s) {
		r.fail("truncated")
		return 0
	}
	c := r.s[r.off]
	r.off++
	return c
}

func (r *imgReader) fixed64() uint64 {
	if r.err != nil {
		return 0
	}
	if r.left() < 8 {
		r.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64([]byte(r.s[r.off : r.off+8]))
	r.off += 8
	return v
}

func (r *imgReader) str() string {
	n := r.int(math.MaxInt32)
	if r.err != nil {
		return ""
	}
	if n > r.left() {
		r.fail("string of %d bytes, %d left", n, r.left())
		return ""
	}
	s := r.s[r.off : r.off+n]
	r.off += n
	return s
}

func (r *imgReader) strs() []string {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = r.str()
	}
	return l
}

// ints reads a list of indexes below limit.
func (r *imgReader) ints(limit int) []int32 {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	l := make([]int32, n)
	for i := range l {
		l[i] = int32(r.int(math.MaxInt32))
		if r.err == nil && int(l[i]) >= limit {
			r.fail("index %d of %d", l[i], limit)
		}
	}
	return l
}

func (r *imgReader) ref() int32 {
	return int32(r.int(math.MaxInt32)) - 1
}

func (r *imgReader) version() version {
	return version{major: r.uint(), minor: r.uint(), patch: r.uint(), pre: r.str(), build: r.str()}
}

// vrange reads a version range; each group's pre-release flag is derived
// from its comparisons, as parseRange derives it.
func (r *imgReader) vrange() versionRange {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	vr := make(versionRange, n)
	for i := range vr {
		m := r.count(7)
		if m == 0 {
			if r.err == nil {
				r.fail("empty version range group")
			}
			continue
		}
		g := &vr[i]
		g.cmps = make([]comparison, m)
		for k := range g.cmps {
			o, dirty := op(r.byte()), r.byte()
			if r.err == nil && (o > opMax || dirty > dirtyAll) {
				r.fail("version operator %d, flags %#x", o, dirty)
			}
			g.cmps[k] = comparison{op: o, dirty: dirty, v: r.version()}
			g.pre = g.pre || g.cmps[k].v.pre != ""
		}
	}
	return vr
}

func (r *imgReader) dev(devs []*cdevice) *cdevice {
	i := r.int(math.MaxInt32)
	if r.err == nil && i >= len(devs) {
		r.fail("device %d of %d", i, len(devs))
	}
	if r.err != nil {
		return &cdevice{subj: none}
	}
	return devs[i]
}

// devIndex reads what imgWriter.devIndex wrote: keys must be sorted and
// unique (checked), so lookups can search them.
func (r *imgReader) devIndex(devs []*cdevice) devIndex {
	n := r.count(2)
	x := devIndex{keys: make([]string, n), lists: make([][]*cdevice, n)}
	var backing []*cdevice
	for i := range n {
		x.keys[i] = r.str()
		if i > 0 && r.err == nil && x.keys[i] <= x.keys[i-1] {
			r.fail("device id index not sorted and unique")
		}
		c := r.count(1)
		if cap(backing)-len(backing) < c {
			backing = make([]*cdevice, 0, max(c, n))
		}
		start := len(backing)
		for range c {
			backing = append(backing, r.dev(devs))
		}
		x.lists[i] = backing[start:len(backing):len(backing)]
	}
	if r.err != nil {
		return devIndex{}
	}
	return x
}

func (r *imgReader) devMap(devs []*cdevice) map[string][]*cdevice {
	n := r.count(2)
	m := make(map[string][]*cdevice, n)
	// The lists share one backing array, grown as needed: one allocation
	// for a table of 100k ids of one device each, not 100k.
	var backing []*cdevice
	for range n {
		k := r.str()
		c := r.count(1)
		if cap(backing)-len(backing) < c {
			backing = make([]*cdevice, 0, max(c, n))
		}
		start := len(backing)
		for range c {
			backing = append(backing, r.dev(devs))
		}
		m[k] = backing[start:len(backing):len(backing)]
	}
	return m
}

// Node kinds, for checking what each node's payload indexes.
const (
	kindNone byte = iota
	kindSubject
	kindPath
	kindControl
	kindTarget
)

// maxTargetSegment bounds the segment index a target template names.
const maxTargetSegment = 1 << 16

func (r *imgReader) forest(e *Engine, nVersions int) {
	f := &e.f
	nn, ne, ni := r.count(2), r.count(2), r.count(1)
	if r.err != nil {
		return
	}
	f.nodes = make([]fnode, nn)
	f.edges = make([]fedge, ne)
	f.ints = make([]int32, ni)
	var eo, io int32
	for id := range f.nodes {
		n := &f.nodes[id]
		flags := r.byte()
		if r.err == nil && flags > nfAll {
			r.fail("node %d flags %#x", id, flags)
		}
		k := int32(r.int(math.MaxInt32))
		n.edges = span{eo, eo + k}
		eo += k
		for _, p := range []struct {
			bit byte
			dst *int32
		}{{nfWild, &n.wild}, {nfEndPaths, &n.endPaths}, {nfRestPath, &n.restPath}} {
			*p.dst = none
			if flags&p.bit != 0 {
				*p.dst = int32(id) + r.child(id, nn)
			}
		}
		for i, s := range []*span{&n.end, &n.rest, &n.endVers, &n.restVers} {
			k := int32(0)
			if flags&(nfEnd<<i) != 0 {
				if k = int32(r.int(math.MaxInt32)); k == 0 && r.err == nil {
					r.fail("node %d: empty list flagged present", id)
				}
			}
			*s = span{io, io + k}
			io += k
		}
		if r.err != nil {
			return
		}
		if eo > int32(ne) || io > int32(ni) || eo < 0 || io < 0 {
			r.fail("node %d ranges exceed the tables", id)
			return
		}
	}
	if eo != int32(ne) || io != int32(ni) {
		r.fail("tables hold %d edges and %d ints, nodes use %d and %d", ne, ni, eo, io)
		return
	}
	for id := range f.nodes {
		n := &f.nodes[id]
		for i := n.edges.lo; i < n.edges.hi; i++ {
			f.edges[i] = fedge{seg: r.str(), child: int32(id) + r.child(id, nn)}
			if r.err == nil && i > n.edges.lo && f.edges[i-1].seg >= f.edges[i].seg {
				r.fail("node %d edges not sorted", id)
			}
		}
	}
	for i := range f.ints {
		f.ints[i] = int32(r.int(math.MaxInt32))
	}
	if r.err != nil {
		return
	}
	// Every node has exactly one parent (or is a root) and a kind fixed by
	// it; payloads must index what that kind indexes.
	kind := make([]byte, nn)
	claim := func(n int32, k byte, what string) {
		if n == none || r.err != nil {
			return
		}
		if n < 0 || int(n) >= nn {
			r.fail("%s: node %d of %d", what, n, nn)
			return
		}
		if kind[n] != kindNone {
			r.fail("%s: node %d has two parents", what, n)
			return
		}
		kind[n] = k
	}
	claim(e.subj, kindSubject, "subject root")
	claim(e.ctrl, kindControl, "control paths")
	claim(e.target, kindTarget, "target paths")
	for i, c := range e.devices {
		claim(c.subj, kindSubject, fmt.Sprintf("device %d subjects", i))
	}
	for id := range f.nodes {
		if r.err != nil {
			return
		}
		n := &f.nodes[id]
		k := kind[id]
		if k == kindNone {
			r.fail("node %d is unreachable", id)
			return
		}
		for i := n.edges.lo; i < n.edges.hi; i++ {
			claim(f.edges[i].child, k, "edge")
		}
		claim(n.wild, k, "wildcard")
		var limit int
		switch k {
		case kindSubject:
			claim(n.endPaths, kindPath, "paths")
			claim(n.restPath, kindPath, "paths")
			if !n.end.empty() || !n.rest.empty() {
				r.fail("subject node %d has rule payload", id)
			}
			for _, l := range [2][]int32{f.list(n.endVers), f.list(n.restVers)} {
				for _, v := range l {
					if int(v) >= nVersions {
						r.fail("subject node %d: version %d of %d", id, v, nVersions)
					}
				}
			}
			continue
		case kindPath:
			limit = len(e.rules)
		case kindControl:
			limit = math.MaxInt32
		case kindTarget:
			limit = maxTargetSegment
		}
		if n.endPaths != none || n.restPath != none || !n.endVers.empty() || !n.restVers.empty() {
			r.fail("path node %d has subject payload", id)
		}
		for _, l := range [2][]int32{f.list(n.end), f.list(n.rest)} {
			for _, v := range l {
				if int(v) >= limit {
					r.fail("path node %d: rule %d of %d", id, v, limit)
				}
			}
		}
	}
}

// child reads a child reference of node id: a positive distance.
func (r *imgReader) child(id, nn int) int32 {
	d := r.int(math.MaxInt32)
	if r.err == nil && (d == 0 || id+d >= nn) {
		r.fail("node %d: child at distance %d of %d nodes", id, d, nn)
		return 0
	}
	return int32(d)
}
