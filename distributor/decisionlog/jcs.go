package decisionlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Canonical is the record's RFC 8785 (JSON Canonicalization Scheme)
// encoding: no whitespace, object members sorted by the UTF-16 code units
// of their names at every level, strings with only the escapes JSON
// requires (\b \t \n \f \r \" \\ and \u00xx for other control
// characters, lowercase hex), numbers as ECMAScript prints a double.
// The stored line of a record is its canonical form, so the line's bytes
// are what a third-party JCS tool produces and what the Merkle tree's leaf
// hash covers.
func (r Record) Canonical() ([]byte, error) {
	return appendObject(make([]byte, 0, 512), r, 0)
}

// maxDepth bounds nesting of unknown fields.
const maxDepth = 64

// jcsLess orders member names by UTF-16 code units (RFC 8785 section
// 3.2.3). UTF-8 byte order is code point order, which differs only where
// a name holds a character above U+FFFF (a surrogate pair in UTF-16,
// 0xD800..0xDFFF) and the other one at U+E000..U+FFFF in that place.
func jcsLess(a, b string) bool {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return utf16Unit(ra) < utf16Unit(rb) || utf16Unit(ra) == utf16Unit(rb) && ra < rb
		}
		a, b = a[na:], b[nb:]
	}
	return a == "" && b != ""
}

// utf16Unit is the first UTF-16 code unit of r.
func utf16Unit(r rune) rune {
	if r >= 0x10000 {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

// appendObject appends m canonically; depth is m's nesting level.
func appendObject(buf []byte, m map[string]json.RawMessage, depth int) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case jcsLess(a, b):
			return -1
		}
		return 1
	})
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, k)
		buf = append(buf, ':')
		var err error
		if buf, err = appendValue(buf, m[k], depth); err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
	}
	return append(buf, '}'), nil
}

// appendValue appends a raw JSON value canonically.
func appendValue(buf []byte, raw json.RawMessage, depth int) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, errors.New("empty value")
	}
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	switch raw[0] {
	case '"':
		if plainString(raw) {
			// Already what RFC 8785 writes: no escape, no control character.
			return append(buf, raw...), nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return appendString(buf, s), nil
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		return appendObject(buf, m, depth+1)
	case '[':
		var a []json.RawMessage
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		buf = append(buf, '[')
		for i, v := range a {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendValue(buf, v, depth+1); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case 't', 'f', 'n':
		if s := string(raw); s == "true" || s == "false" || s == "null" {
			return append(buf, raw...), nil
		}
		return nil, fmt.Errorf("invalid JSON value %q", raw)
	}
	return appendNumber(buf, raw)
}

// appendNumber appends a JSON number as ECMAScript's Number::toString
// prints the double it denotes (RFC 8785 section 3.2.2.3). A number a
// double cannot hold exactly as written (more digits than a double keeps,
// an integer beyond 2^53 that rounds, a magnitude beyond its range) is
// refused rather than silently changed: I-JSON (RFC 7493 section 2.2)
// asks senders not to use them, and the log must store what was sent.
func appendNumber(buf []byte, raw []byte) ([]byte, error) {
	if plainInt(raw) {
		return append(buf, raw...), nil
	}
	if !json.Valid(raw) || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return nil, fmt.Errorf("invalid JSON value %q", raw)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, fmt.Errorf("number %s is beyond the range of an IEEE 754 double (RFC 7493 section 2.2)", raw)
	}
	start := len(buf)
	if f == 0 {
		buf = append(buf, '0') // -0 too
	} else {
		// encoding/json formats a float64 as ECMAScript does: fixed
		// notation for 1e-6 <= |f| < 1e21, else the shortest exponent form
		// with the exponent's leading zeros removed.
		b, _ := json.Marshal(f)
		buf = append(buf, b...)
	}
	if out := buf[start:]; !bytes.Equal(out, raw) && !sameDecimal(out, raw) {
		return nil, fmt.Errorf("number %s cannot be kept exactly (an IEEE 754 double holds it as %s; RFC 7493 section 2.2): send it as a string", raw, out)
	}
	return buf, nil
}

// sameDecimal reports whether two JSON numbers denote the same value.
func sameDecimal(a, b []byte) bool {
	x, ok1 := new(big.Rat).SetString(string(a))
	y, ok2 := new(big.Rat).SetString(string(b))
	return ok1 && ok2 && x.Cmp(y) == 0
}

const hexDigits = "0123456789abcdef"

// appendString appends s as RFC 8785 does: only '"', '\\' and control
// characters escaped, the named escapes where JSON has them. s comes from
// encoding/json after the I-JSON check, so it is valid UTF-8.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\b':
			buf = append(buf, '\\', 'b')
		case '\f':
			buf = append(buf, '\\', 'f')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// plainString reports whether raw is a JSON string token without escapes
// or control characters in valid UTF-8: its canonical form is itself.
func plainString(raw []byte) bool {
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return false
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(body)
}

// plainInt reports whether raw is an integer of at most 15 digits without
// a leading zero (or 0): a double holds it exactly and ECMAScript prints
// it as written.
func plainInt(raw []byte) bool {
	d := raw
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 15 || d[0] == '0' && (len(d) > 1 || len(raw) > 1) {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
