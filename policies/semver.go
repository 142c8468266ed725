package policies

import (
	"errors"
	"strings"
)

// The engine's semantic versions follow github.com/Masterminds/semver/v3,
// which `policy check` also uses: presented versions parse as its
// StrictNewVersion does, ranges evaluate as its Constraints.Check does
// (pre-release versions only satisfy an AND group that names a pre-release;
// partial versions and x wildcards are "dirty" and widen the comparison the
// way Masterminds does). The implementation is the engine's own: it runs on
// the request path, so it must not allocate and must not pull regexp into
// the proxy module. FuzzSemverDifferential holds the two together.

// maxVersionLen is the longest version string accepted (Masterminds'
// MaxVersionLen).
const maxVersionLen = 256

// Range limits, as Masterminds enforces them; a range version is kept
// short enough that Masterminds' rewrite of a partial one ("1" becomes
// "1.0.0") stays within maxVersionLen.
const (
	maxRangeLen        = 512
	maxRangeGroups     = 32
	maxRangeVersionLen = 250
)

// version is a parsed semantic version; strings are views into the input.
type version struct {
	major, minor, patch uint64
	pre, build          string
}

// parseVersion parses a strict SemVer 2.0.0 version
// (MAJOR.MINOR.PATCH[-PRE][+BUILD], no "v" prefix, no leading zeros) without
// allocating.
func parseVersion(s string) (version, bool) {
	var v version
	if s == "" || len(s) > maxVersionLen {
		return v, false
	}
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return v, false
	}
	maj, rest := s[:i], s[i+1:]
	i = strings.IndexByte(rest, '.')
	if i < 0 {
		return v, false
	}
	min, tail := rest[:i], rest[i+1:]
	if i := strings.IndexByte(tail, '+'); i >= 0 {
		v.build, tail = tail[i+1:], tail[:i]
		if !validIdents(v.build, false) {
			return v, false
		}
	}
	if i := strings.IndexByte(tail, '-'); i >= 0 {
		v.pre, tail = tail[i+1:], tail[:i]
		if !validIdents(v.pre, true) {
			return v, false
		}
	}
	var ok1, ok2, ok3 bool
	v.major, ok1 = versionNumber(maj)
	v.minor, ok2 = versionNumber(min)
	v.patch, ok3 = versionNumber(tail)
	return v, ok1 && ok2 && ok3
}

// versionNumber parses a MAJOR, MINOR or PATCH number: digits, no leading
// zero, within uint64.
func versionNumber(s string) (uint64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	return parseUint(s)
}

// parseUint parses a non-empty decimal that fits uint64 (strconv.ParseUint
// base 10 without allocating an error).
func parseUint(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// validIdents checks a dot-separated pre-release or build identifier list:
// each identifier non-empty, [0-9A-Za-z-] only; numeric pre-release
// identifiers without leading zeros.
func validIdents(s string, pre bool) bool {
	for {
		id, rest, more := strings.Cut(s, ".")
		if id == "" {
			return false
		}
		digits := true
		for i := 0; i < len(id); i++ {
			c := id[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				digits = false
			default:
				return false
			}
		}
		if pre && digits && len(id) > 1 && id[0] == '0' {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compare orders versions by precedence (build metadata ignored), as
// Masterminds' Version.Compare.
func (a version) compare(b version) int {
	if c := cmpU(a.major, b.major); c != 0 {
		return c
	}
	if c := cmpU(a.minor, b.minor); c != 0 {
		return c
	}
	if c := cmpU(a.patch, b.patch); c != 0 {
		return c
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "":
		return 1
	case b.pre == "":
		return -1
	}
	return comparePre(a.pre, b.pre)
}

// comparePre compares two pre-release strings identifier by identifier; a
// missing identifier sorts first, numeric identifiers (those that fit
// uint64) before alphanumeric ones, which compare as bytes.
func comparePre(a, b string) int {
	for a != "" || b != "" {
		var x, y string
		x, a, _ = strings.Cut(a, ".")
		y, b, _ = strings.Cut(b, ".")
		if c := comparePreIdent(x, y); c != 0 {
			return c
		}
	}
	return 0
}

func comparePreIdent(x, y string) int {
	switch {
	case x == y:
		return 0
	case x == "":
		return -1
	case y == "":
		return 1
	}
	xn, xNum := parseUint(x)
	yn, yNum := parseUint(y)
	switch {
	case xNum && yNum:
		if xn > yn {
			return 1
		}
		return -1
	case xNum:
		return -1
	case yNum:
		return 1
	case x > y:
		return 1
	}
	return -1
}

type op uint8

const (
	opEQ    op = iota // "", "="
	opNE              // "!="
	opGT              // ">"
	opGE              // ">=", "=>"
	opLT              // "<"
	opLE              // "<=", "=<"
	opTilde           // "~", "~>"
	opCaret           // "^"
	opMax   = opCaret
)

// Dirty flags of a comparison whose version is partial or has wildcards.
const (
	dirtyAny   = 1 << iota // some part was missing or x/X/*
	dirtyMinor             // the minor part (and so the patch) was
	dirtyPatch             // only the patch part was
	dirtyAll   = 1<<iota - 1
)

type comparison struct {
	op    op
	dirty uint8
	v     version // missing and wildcard parts are 0
}

// rangeGroup is an AND group; pre is set when a comparison names a
// pre-release, which lets pre-release versions satisfy the group.
type rangeGroup struct {
	cmps []comparison
	pre  bool
}

// versionRange is an OR of AND groups; empty means any version.
type versionRange []rangeGroup

func (r versionRange) contains(v version) bool {
	if len(r) == 0 {
		return true
	}
	for i := range r {
		g := &r[i]
		if v.pre != "" && !g.pre {
			continue
		}
		ok := true
		for k := range g.cmps {
			if !g.cmps[k].check(v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (c *comparison) check(v version) bool {
	con := c.v
	dirty := c.dirty&dirtyAny != 0
	minorDirty, patchDirty := c.dirty&dirtyMinor != 0, c.dirty&dirtyPatch != 0
	switch c.op {
	case opEQ:
		if dirty {
			return c.tilde(v)
		}
		return v.compare(con) == 0
	case opNE:
		if dirty {
			switch {
			case con.major != v.major:
				return true
			case con.minor != v.minor && !minorDirty:
				return true
			case minorDirty:
				return false
			case con.patch != v.patch && !patchDirty:
				return true
			case patchDirty:
				return (v.pre != "" || con.pre != "") && comparePre(v.pre, con.pre) != 0
			}
		}
		return v.compare(con) != 0
	case opGT:
		if !dirty {
			return v.compare(con) > 0
		}
		switch {
		case v.major > con.major:
			return true
		case v.major < con.major, minorDirty:
			return false
		case patchDirty:
			return v.minor > con.minor
		}
		return v.compare(con) > 0
	case opGE:
		return v.compare(con) >= 0
	case opLT:
		return v.compare(con) < 0
	case opLE:
		if !dirty {
			return v.compare(con) <= 0
		}
		return !(v.major > con.major || v.major == con.major && v.minor > con.minor && !minorDirty)
	case opTilde:
		return c.tilde(v)
	case opCaret:
		if v.compare(con) < 0 {
			return false
		}
		switch {
		case con.major > 0 || minorDirty:
			return v.major == con.major
		case v.major > 0:
			return false
		case con.minor > 0 || patchDirty:
			return v.minor == con.minor
		case v.minor > 0:
			return false
		}
		return v.patch == con.patch
	}
	return false
}

func (c *comparison) tilde(v version) bool {
	con := c.v
	if v.compare(con) < 0 {
		return false
	}
	minorDirty := c.dirty&dirtyMinor != 0
	if con.major == 0 && con.minor == 0 && con.patch == 0 && c.dirty&(dirtyMinor|dirtyPatch) == 0 {
		return true
	}
	return v.major == con.major && (v.minor == con.minor || minorDirty)
}

// rangeSyntax summarises the range syntax the engine evaluates, for errors.
const rangeSyntax = "comparisons [op]VERSION joined by \",\" or spaces (AND) and \"||\" (OR); ops = != > >= => < <= =< ~ ~> ^; VERSION = [v]MAJOR[.MINOR[.PATCH]][-PRE] with x, X or * wildcards; no hyphen ranges, build metadata or leading zeros"

// parseRange parses the range syntax the engine evaluates (a subset of
// Masterminds' constraint syntax with the same meaning).
func parseRange(s string) (versionRange, error) {
	if len(s) > maxRangeLen {
		return nil, errors.New("range longer than 512 bytes")
	}
	alts := strings.Split(s, "||")
	if len(alts) > maxRangeGroups {
		return nil, errors.New("more than 32 || alternatives")
	}
	r := make(versionRange, 0, len(alts))
	for _, alt := range alts {
		g, err := parseGroup(alt)
		if err != nil {
			return nil, err
		}
		r = append(r, g)
	}
	return r, nil
}

// isRangeSpace is Go regexp's \s, which Masterminds' grammar uses.
func isRangeSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'
}

func parseGroup(s string) (rangeGroup, error) {
	var g rangeGroup
	i := 0
	skip := func() int {
		n := 0
		for i < len(s) && isRangeSpace(s[i]) {
			i++
			n++
		}
		return n
	}
	skip()
	if i == len(s) {
		return g, errors.New("empty range alternative")
	}
	for {
		o, n := rangeOp(s[i:])
		i += n
		skip()
		start := i
		for i < len(s) && rangeVersionByte(s[i]) {
			i++
		}
		if s[start:i] == "-" {
			return g, errors.New("hyphen ranges (A - B) are not supported; write >=A, <=B")
		}
		c, err := parseRangeVersion(s[start:i])
		if err != nil {
			return g, err
		}
		c.op = o
		g.cmps = append(g.cmps, c)
		g.pre = g.pre || c.v.pre != ""
		spaces := skip()
		if i == len(s) {
			return g, nil
		}
		switch {
		case s[i] == ',':
			i++
			skip()
			if i == len(s) {
				return g, errors.New("range ends with \",\"")
			}
		case spaces == 0:
			return g, errors.New("unexpected " + quote(s[i:i+1]) + " in range (" + rangeSyntax + ")")
		}
	}
}

// rangeOp reads an operator (possibly none) and returns its length.
func rangeOp(s string) (op, int) {
	two := []struct {
		s string
		o op
	}{{"!=", opNE}, {">=", opGE}, {"=>", opGE}, {"<=", opLE}, {"=<", opLE}, {"~>", opTilde}}
	for _, p := range two {
		if strings.HasPrefix(s, p.s) {
			return p.o, 2
		}
	}
	if s != "" {
		switch s[0] {
		case '=':
			return opEQ, 1
		case '>':
			return opGT, 1
		case '<':
			return opLT, 1
		case '~':
			return opTilde, 1
		case '^':
			return opCaret, 1
		}
	}
	return opEQ, 0
}

func rangeVersionByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '*' || c == '+'
}

// parseRangeVersion parses [v]MAJOR[.MINOR[.PATCH]][-PRE] where parts may be
// x, X or *; the first missing or wildcard part makes the comparison dirty
// and every later part must be a wildcard too.
func parseRangeVersion(s string) (comparison, error) {
	var c comparison
	bad := func(why string) (comparison, error) {
		return c, errors.New("invalid version " + quote(s) + " in range: " + why + " (" + rangeSyntax + ")")
	}
	if s == "" {
		return bad("missing")
	}
	if len(s) > maxRangeVersionLen {
		return bad("longer than 250 bytes")
	}
	body := strings.TrimPrefix(s, "v")
	if strings.IndexByte(body, '+') >= 0 {
		return bad("build metadata is not allowed in a range; deny-list builds with denied")
	}
	if i := strings.IndexByte(body, '-'); i >= 0 {
		c.v.pre, body = body[i+1:], body[:i]
		if !validIdents(c.v.pre, true) {
			return bad("invalid pre-release")
		}
	}
	parts := strings.Split(body, ".")
	if len(parts) > 3 {
		return bad("more than three parts")
	}
	wild := -1
	for k, p := range parts {
		if p == "x" || p == "X" || p == "*" {
			if wild < 0 {
				wild = k
			}
			continue
		}
		if wild >= 0 {
			return bad("a number after a wildcard")
		}
		n, ok := versionNumber(p)
		if !ok {
			return bad("parts must be numbers without leading zeros or x, X, *")
		}
		switch k {
		case 0:
			c.v.major = n
		case 1:
			c.v.minor = n
		case 2:
			c.v.patch = n
		}
	}
	if wild < 0 && len(parts) < 3 {
		wild = len(parts)
	}
	switch wild {
	case 0:
		c.v.major, c.v.minor, c.v.patch = 0, 0, 0
		c.dirty = dirtyAny
	case 1:
		c.v.minor, c.v.patch = 0, 0
		c.dirty = dirtyAny | dirtyMinor
	case 2:
		c.v.patch = 0
		c.dirty = dirtyAny | dirtyPatch
	}
	return c, nil
}

func quote(s string) string { return "\"" + s + "\"" }
