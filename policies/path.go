package policies

import "errors"

// The canonical-path procedure. Policies match paths segment by segment, so
// every spelling an upstream would resolve to the same resource must either
// be refused or rewritten to one spelling before matching: otherwise
// `allow /v1/**` + `deny /v1/admin/**` is bypassed by /v1/./admin,
// /v1//admin, /v1/%61dmin or /v1/x/..%2Fadmin. policies/README.md ("Request
// paths") is the specification; CanonicalPath implements it, Decide refuses
// any path that is not canonical, and the guard, `policy eval` and
// `policy test` call CanonicalPath first.

// PathOptions chooses what CanonicalPath does with a path that is not
// canonical. The zero value refuses it.
type PathOptions struct {
	// Normalize rewrites the path instead (RFC 3986 §6.2.2: percent-encoding
	// case and unreserved characters, dot segments). What cannot be
	// normalised safely is still refused.
	Normalize bool
	// MergeSlashes, with Normalize, merges runs of "/" instead of refusing
	// empty segments.
	MergeSlashes bool
}

// ErrNonCanonicalPath is matched (errors.Is) by every CanonicalPath error.
var ErrNonCanonicalPath = errors.New("non-canonical request path")

// PathError says why a request target was refused. Its message is a
// constant, so refusing allocates nothing.
type PathError struct{ msg string }

func (e *PathError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrNonCanonicalPath) hold.
func (e *PathError) Is(target error) bool { return target == ErrNonCanonicalPath }

// Reasons a request target is refused.
var (
	ErrPathEmpty           = &PathError{"request path is empty"}
	ErrPathNotAbsolute     = &PathError{"request path does not start with /"}
	ErrPathFragment        = &PathError{"request target contains a fragment (#)"}
	ErrPathControl         = &PathError{"request target contains a control byte, space or non-ASCII byte"}
	ErrPathCharacter       = &PathError{"request path contains a character a URI path may not (\\ \" < > [ ] ^ ` { | })"}
	ErrPathParameter       = &PathError{"request path contains a path parameter (;), which some servers strip"}
	ErrPathBadEscape       = &PathError{"request path has an invalid percent-encoding"}
	ErrPathLowerHex        = &PathError{"request path has a percent-encoding with lower-case hex digits"}
	ErrPathEncodedChar     = &PathError{"request path percent-encodes an unreserved character"}
	ErrPathEncodedSlash    = &PathError{"request path percent-encodes / or \\"}
	ErrPathEncodedControl  = &PathError{"request path percent-encodes a control byte"}
	ErrPathDoubleEncoding  = &PathError{"request path is percent-encoded twice (%25 followed by two hex digits)"}
	ErrPathDotSegment      = &PathError{"request path has a dot segment (. or ..)"}
	ErrPathEmptySegment    = &PathError{"request path has an empty segment (//)"}
	ErrPathAmbiguousDotDot = &PathError{"request path has .. after an empty segment (servers resolve it differently)"}
)

// CanonicalPath checks a request target (path and optional query) and
// returns it when it is canonical, without allocating. Otherwise it refuses
// it with a *PathError, or with opt.Normalize returns the normalised target
// (query unchanged) or refuses what cannot be normalised safely.
func CanonicalPath(target string, opt PathOptions) (string, error) {
	err := checkPath(target)
	if err == nil || !opt.Normalize {
		return target, err
	}
	return normalizePath(target, opt.MergeSlashes)
}

// Byte classes of a request target. Ordinary path bytes are 0, so the
// strict check skips runs of them in a tight loop.
const (
	cPchar     = iota // pchar other than '%' and ';' (unreserved, sub-delims, ':', '@')
	cBad              // refused anywhere in the target: controls, space, non-ASCII
	cForbidden        // not allowed in a URI path
	cSemicolon
	cPercent
	cSlash
	cQuery
	cHash
)

var pathClass = func() (t [256]uint8) {
	for c := range t {
		if c <= 0x20 || c >= 0x7f {
			t[c] = cBad
		}
	}
	for _, c := range "\\\"<>[]^`{|}" {
		t[c] = cForbidden
	}
	t[';'], t['%'], t['/'], t['?'], t['#'] = cSemicolon, cPercent, cSlash, cQuery, cHash
	return t
}()

// unreserved reports whether c is an RFC 3986 unreserved character.
func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// escape reads the percent-encoding at s[i] ('%'): the octet, whether the
// hex digits were upper-case, or ErrPathBadEscape.
func escape(s string, i int) (octet byte, upper bool, err error) {
	if i+2 >= len(s) {
		return 0, false, ErrPathBadEscape
	}
	h, ok1 := unhex(s[i+1])
	l, ok2 := unhex(s[i+2])
	if !ok1 || !ok2 {
		return 0, false, ErrPathBadEscape
	}
	upper = !(s[i+1] >= 'a' && s[i+1] <= 'f' || s[i+2] >= 'a' && s[i+2] <= 'f')
	return h<<4 | l, upper, nil
}

// escapedOctetErr is why a decoded octet may never be percent-encoded in a
// path (in either mode); s[i] is the '%' and o its octet.
func escapedOctetErr(s string, i int, o byte) error {
	switch {
	case o == '/' || o == '\\':
		return ErrPathEncodedSlash
	case o < 0x20 || o == 0x7f:
		return ErrPathEncodedControl
	case o == '%' && i+4 < len(s):
		if _, ok := unhex(s[i+3]); ok {
			if _, ok := unhex(s[i+4]); ok {
				return ErrPathDoubleEncoding
			}
		}
	}
	return nil
}

// checkQuery checks the query (after '?'): opaque except for bytes no
// request target may carry.
func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		switch pathClass[q[i]] {
		case cBad:
			return ErrPathControl
		case cHash:
			return ErrPathFragment
		}
	}
	return nil
}

// checkPath is the strict procedure: nil when target is canonical.
func checkPath(t string) error {
	_, err := scanPath(t)
	return err
}

// scanPath reads the target once, left to right, and reports the first
// problem, or where the path ends (the '?' or len(t)). Ordinary bytes cost
// one table load each; each '/' looks at the byte after it for an empty or
// dot segment.
func scanPath(t string) (end int, err error) {
	if t == "" {
		return 0, ErrPathEmpty
	}
	if t[0] != '/' {
		return 0, ErrPathNotAbsolute
	}
	i, n := 0, len(t)
	for {
		// t[i] is '/': the segment after it must not be empty (unless
		// the path ends here) or a dot segment.
		i++
		if i == n {
			return n, nil
		}
		if c := t[i]; c == '/' || c == '?' || c == '.' {
			switch {
			case c == '/':
				return 0, ErrPathEmptySegment
			case c == '?':
				return i, checkQuery(t[i+1:])
			}
			k := i + 1
			if k < n && t[k] == '.' {
				k++
			}
			if k == n || t[k] == '/' || t[k] == '?' {
				return 0, ErrPathDotSegment
			}
		}
		for {
			for i < n && pathClass[t[i]] == cPchar {
				i++
			}
			if i == n {
				return n, nil
			}
			c := t[i]
			if c == '/' {
				break
			}
			switch pathClass[c] {
			case cBad:
				return 0, ErrPathControl
			case cForbidden:
				return 0, ErrPathCharacter
			case cSemicolon:
				return 0, ErrPathParameter
			case cHash:
				return 0, ErrPathFragment
			case cQuery:
				return i, checkQuery(t[i+1:])
			}
			// '%'
			o, upper, err := escape(t, i)
			if err != nil {
				return 0, err
			}
			if err := escapedOctetErr(t, i, o); err != nil {
				return 0, err
			}
			if unreserved(o) {
				return 0, ErrPathEncodedChar
			}
			if !upper {
				return 0, ErrPathLowerHex
			}
			i += 3
		}
	}
}

// normalizePath rewrites a non-canonical target: percent-encodings of
// unreserved characters are decoded and the others upper-cased, dot
// segments are removed (RFC 3986 §5.2.4), and with merge runs of "/" are
// merged; anything else checkPath refuses is still refused.
func normalizePath(target string, merge bool) (string, error) {
	if target == "" {
		return "", ErrPathEmpty
	}
	if target[0] != '/' {
		return "", ErrPathNotAbsolute
	}
	path, query, hasQuery := target, "", false
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			path, query, hasQuery = target[:i], target[i+1:], true
			break
		}
	}
	if err := checkQuery(query); err != nil {
		return "", err
	}
	// 1. Percent-encoding (RFC 3986 §6.2.2.1, §6.2.2.2), one pass, so an
	// encoded '%' is never decoded twice.
	dec := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch pathClass[c] {
		case cBad:
			return "", ErrPathControl
		case cForbidden:
			return "", ErrPathCharacter
		case cSemicolon:
			return "", ErrPathParameter
		case cHash:
			return "", ErrPathFragment
		case cPercent:
			o, _, err := escape(path, i)
			if err != nil {
				return "", err
			}
			if err := escapedOctetErr(path, i, o); err != nil {
				return "", err
			}
			if unreserved(o) {
				dec = append(dec, o)
			} else {
				const hexUpper = "0123456789ABCDEF"
				dec = append(dec, '%', hexUpper[o>>4], hexUpper[o&15])
			}
			i += 2
			continue
		}
		dec = append(dec, c)
	}
	// 2. Dot segments (RFC 3986 §5.2.4), then 3. empty segments, on the
	// decoded segments; a final "" is a trailing slash.
	segs := make([]string, 0, 8)
	s := string(dec[1:])
	for {
		seg, rest, more := cut(s, '/')
		switch seg {
		case ".", "..":
			if n := len(segs); seg == ".." && n > 0 {
				if segs[n-1] == "" {
					return "", ErrPathAmbiguousDotDot
				}
				segs = segs[:n-1]
			}
			if !more {
				// "/a/." and "/a/b/.." keep the slash: "/a/".
				segs = append(segs, "")
			}
		default:
			segs = append(segs, seg)
		}
		if !more {
			break
		}
		s = rest
	}
	out := make([]byte, 0, len(dec)+1+len(query))
	for i, seg := range segs {
		if seg == "" {
			if i == len(segs)-1 {
				break
			}
			if !merge {
				return "", ErrPathEmptySegment
			}
			continue
		}
		out = append(out, '/')
		out = append(out, seg...)
	}
	if len(segs) == 0 || segs[len(segs)-1] == "" {
		out = append(out, '/')
	}
	if hasQuery {
		out = append(out, '?')
		out = append(out, query...)
	}
	res := string(out)
	if err := checkPath(res); err != nil {
		// Unreachable: normalising yields canonical targets (fuzzed).
		return "", err
	}
	return res, nil
}

func cut(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
