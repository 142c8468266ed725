package decisionlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/meshguard/meshguard/internal/contract"
)

// checkIJSON enforces the I-JSON profile (RFC 7493) on one JSON text: valid
// UTF-8 (2.1), no escaped unpaired surrogates (2.1), no duplicate member
// names in any object (2.3), and at most maxDepth levels of nesting.
// encoding/json alone would silently replace bad text with U+FFFD and keep
// the last of duplicate names, so what the log stores would differ from
// what the client meant.
func checkIJSON(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("record is not valid UTF-8 (RFC 7493 section 2.1)")
	}
	if err := checkSurrogates(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		keys    map[string]struct{} // nil for an array
		wantKey bool
	}
	var stack []frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record is not valid JSON: %w", err)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) >= maxDepth {
					return fmt.Errorf("record nests more than %d levels deep", maxDepth)
				}
				f := frame{}
				if t == '{' {
					f = frame{keys: map[string]struct{}{}, wantKey: true}
				}
				stack = append(stack, f)
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].wantKey {
				top := &stack[n-1]
				if _, dup := top.keys[t]; dup {
					return fmt.Errorf("member name %q appears twice in one object (RFC 7493 section 2.3)", t)
				}
				top.keys[t] = struct{}{}
				top.wantKey = false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// checkSurrogates refuses \uD800-\uDFFF escapes that do not form a pair.
func checkSurrogates(data []byte) error {
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		if i+1 < len(data) && data[i+1] != 'u' {
			i++ // skip the escaped character (it may be a backslash)
			continue
		}
		r, ok := hex4(data, i+2)
		if !ok {
			continue // the JSON parser reports the bad escape
		}
		switch {
		case r >= 0xD800 && r <= 0xDBFF:
			lo, ok := rune(0), false
			if i+11 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
				lo, ok = hex4(data, i+8)
			}
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return fmt.Errorf("escaped unpaired surrogate \\u%04X (RFC 7493 section 2.1)", r)
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return fmt.Errorf("escaped unpaired surrogate \\u%04X (RFC 7493 section 2.1)", r)
		default:
			i += 5
		}
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// namedFields are the field names the log assigns, reads back or indexes.
// A client field that equals one of them under Unicode simple case folding
// without being it ("Decision", "haſh" with U+017F) is refused: a reader that
// matches names case-insensitively (encoding/json struct decoding, many SQL
// and document stores) would take it for the real one.
var namedFields = append([]string{FieldSeq, FieldPrevHash, FieldHash, FieldReceivedBy, FieldReceivedAt,
	contract.FieldTime, contract.FieldDecision, contract.FieldRuleIDs, contract.FieldBundleRevision}, contract.RecordStringFields...)

// checkFolding refuses a member name that folds onto a named field.
func checkFolding(name string) error {
	for _, f := range namedFields {
		if name != f && strings.EqualFold(name, f) {
			return fmt.Errorf("field %q is the name %q under Unicode case folding; refused so that no reader confuses them", name, f)
		}
	}
	return nil
}

// topLevel calls fn with the raw name (quotes included) and raw value of
// every member of the JSON object obj, in order, until fn returns false. It
// matches names by their exact bytes: stored lines are canonical, so a name
// is never escaped there, and an escaped or folded look-alike is simply
// another field. obj must be valid JSON (a stored line or a checked record).
func topLevel(obj []byte, fn func(name, value []byte) bool) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errors.New("not a JSON object")
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return errors.New("malformed object: member name expected")
		}
		end, err := skipValue(obj, i)
		if err != nil {
			return err
		}
		name := obj[i:end]
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return errors.New("malformed object: ':' expected")
		}
		i = skipSpace(obj, i+1)
		vend, err := skipValue(obj, i)
		if err != nil {
			return err
		}
		if !fn(name, obj[i:vend]) {
			return nil
		}
		i = skipSpace(obj, vend)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
			continue
		}
		if i < len(obj) && obj[i] == '}' {
			return nil
		}
		return errors.New("malformed object: ',' or '}' expected")
	}
	return errors.New("malformed object: unexpected end")
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("malformed JSON: value expected")
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			j++
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(b) {
				return 0, errors.New("malformed JSON: unterminated string")
			}
			if depth == 0 {
				return j + 1, nil
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return j, nil // end of a scalar directly before the closer (not reached for valid input)
			}
			if depth == 0 {
				return j + 1, nil
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j, nil
			}
		}
	}
	if depth != 0 {
		return 0, errors.New("malformed JSON: unexpected end")
	}
	return len(b), nil
}

// storedField returns the raw value of the member named exactly name.
func storedField(line []byte, name string) (json.RawMessage, bool) {
	var out []byte
	found := false
	_ = topLevel(line, func(n, v []byte) bool {

		if len(n) == len(name)+2 && string(n[1:len(n)-1]) == name {
			out, found = v, true
			return false
		}
		return true
	})
	return out, found
}

// storedString returns a string member named exactly name ("" if absent or
// not a string).
func storedString(line []byte, name string) string {
	v, ok := storedField(line, name)
	if !ok || len(v) == 0 || v[0] != '"' {
		return ""
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1])
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

// storedIs reports whether the string member named exactly name equals
// want, without allocating for the common unescaped case.
func storedIs(line []byte, name, want string) bool {
	v, ok := storedField(line, name)
	if !ok || len(v) < 2 || v[0] != '"' {
		return false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1:len(v)-1]) == want // no allocation: compiler-optimised comparison
	}
	return storedString(line, name) == want
}
