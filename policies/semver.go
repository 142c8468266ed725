package policies

import (
	"errors"
	"strings"
)

// version is a parsed semantic version; strings are views into the input.
type version struct {
	major, minor, patch uint64
	pre, build          string
}

// parseVersion parses "[v]MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]" without
// allocating (used on the request path).
func parseVersion(s string) (version, bool) {
	var v version
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		s = s[1:]
	}
	if i := strings.IndexByte(s, '+'); i >= 0 {
		v.build, s = s[i+1:], s[:i]
		if v.build == "" {
			return v, false
		}
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre, s = s[i+1:], s[:i]
		if v.pre == "" {
			return v, false
		}
	}
	part := 0
	for {
		var n uint64
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if n > (1<<63)/10 {
				return v, false
			}
			n = n*10 + uint64(s[i]-'0')
			i++
		}
		if i == 0 {
			return v, false
		}
		switch part {
		case 0:
			v.major = n
		case 1:
			v.minor = n
		case 2:
			v.patch = n
		}
		s = s[i:]
		if s == "" {
			return v, true
		}
		if s[0] != '.' || part == 2 {
			return v, false
		}
		s = s[1:]
		part++
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

// compare orders versions by semver precedence (build metadata ignored).
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
	return comparePre(a.pre, b.pre)
}

func comparePre(a, b string) int {
	if a == b {
		return 0
	}
	if a == "" {
		return 1
	}
	if b == "" {
		return -1
	}
	for a != "" && b != "" {
		var x, y string
		x, a, _ = strings.Cut(a, ".")
		y, b, _ = strings.Cut(b, ".")
		xn, xok := numeric(x)
		yn, yok := numeric(y)
		switch {
		case xok && yok:
			if c := cmpU(xn, yn); c != 0 {
				return c
			}
		case xok:
			return -1
		case yok:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	}
	return 1
}

func numeric(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n, true
}

type op uint8

const (
	opEQ op = iota
	opNE
	opGT
	opGE
	opLT
	opLE
)

type comparison struct {
	op op
	v  version
}

// versionRange is an OR of AND-groups of comparisons.
type versionRange [][]comparison

func (r versionRange) contains(v version) bool {
	if len(r) == 0 {
		return true
	}
	for _, group := range r {
		ok := true
		for _, c := range group {
			d := v.compare(c.v)
			switch c.op {
			case opEQ:
				ok = d == 0
			case opNE:
				ok = d != 0
			case opGT:
				ok = d > 0
			case opGE:
				ok = d >= 0
			case opLT:
				ok = d < 0
			case opLE:
				ok = d <= 0
			}
			if !ok {
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// parseRange parses the range syntax the engine evaluates: comparisons
// (=, !=, >, >=, <, <=, ~, ^ or a bare version) joined by "," or spaces
// (AND) and "||" (OR).
func parseRange(s string) (versionRange, error) {
	var r versionRange
	for _, alt := range strings.Split(s, "||") {
		var group []comparison
		for _, tok := range strings.FieldsFunc(alt, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
			cs, err := parseComparison(tok)
			if err != nil {
				return nil, err
			}
			group = append(group, cs...)
		}
		if len(group) == 0 {
			return nil, errors.New("empty range alternative")
		}
		r = append(r, group)
	}
	return r, nil
}

func parseComparison(tok string) ([]comparison, error) {
	o, rest := opEQ, tok
	for _, p := range []struct {
		s string
		o op
	}{{">=", opGE}, {"<=", opLE}, {"!=", opNE}, {"==", opEQ}, {">", opGT}, {"<", opLT}, {"=", opEQ}} {
		if strings.HasPrefix(tok, p.s) {
			o, rest = p.o, tok[len(p.s):]
			break
		}
	}
	tilde, caret := false, false
	if rest == tok {
		if strings.HasPrefix(tok, "~") {
			tilde, rest = true, strings.TrimPrefix(tok[1:], ">")
		} else if strings.HasPrefix(tok, "^") {
			caret, rest = true, tok[1:]
		}
	}
	v, ok := parseVersion(rest)
	if !ok {
		return nil, errors.New("invalid version " + quote(rest) + " in range (wildcards and hyphen ranges are not supported; use >= and <)")
	}
	if v.build != "" {
		return nil, errors.New("build metadata is not allowed in a range; deny-list builds with denied")
	}
	parts := strings.Count(strings.SplitN(strings.SplitN(strings.TrimLeft(rest, "vV"), "-", 2)[0], "+", 2)[0], ".") + 1
	switch {
	case tilde:
		hi := version{major: v.major + 1}
		if parts >= 2 {
			hi = version{major: v.major, minor: v.minor + 1}
		}
		return []comparison{{opGE, v}, {opLT, hi}}, nil
	case caret:
		var hi version
		switch {
		case v.major > 0 || parts == 1:
			hi = version{major: v.major + 1}
		case v.minor > 0 || parts == 2:
			hi = version{minor: v.minor + 1}
		default:
			hi = version{patch: v.patch + 1}
		}
		return []comparison{{opGE, v}, {opLT, hi}}, nil
	}
	return []comparison{{o, v}}, nil
}

func quote(s string) string { return "\"" + s + "\"" }
