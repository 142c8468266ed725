package decisionlog

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// scanEntry reads the indexed fields of a stored line in one pass over
// the top-level object, without building a map: the index reads every
// record of a log that may hold millions. On valid JSON it yields exactly
// what parseEntry does (exact keys, the last duplicate wins, wrong types
// read as absent); on anything else it reports false and the caller falls
// back to parseEntry (the chain check flags such a line anyway).
func scanEntry(line []byte) (entry, bool) {
	e := entry{time: noTime, dec: decOther}
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return e, false
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return e, skipSpace(line, i+1) == len(line)
	}
	for {
		key, j, ok := scanString(line, i)
		if !ok {
			return e, false
		}
		i = skipSpace(line, j)
		if i >= len(line) || line[i] != ':' {
			return e, false
		}
		i = skipSpace(line, i+1)
		end, err := skipValue(line, i)
		if err != nil {
			return e, false
		}
		e.set(key, line[i:end])
		i = skipSpace(line, end)
		if i >= len(line) {
			return e, false
		}
		switch line[i] {
		case ',':
			i = skipSpace(line, i+1)
		case '}':
			return e, skipSpace(line, i+1) == len(line)
		default:
			return e, false
		}
	}
}

// set stores one top-level field as parseEntry would read it.
func (e *entry) set(key string, raw []byte) {
	switch key {
	case "time":
		e.time = noTime
		if s, ok := stringValue(raw); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil && t.Year() > 1677 && t.Year() < 2262 {
				e.time = t.UnixNano()
			}
		}
	case "decision":
		s, _ := stringValue(raw)
		e.dec = decisionCode(s)
	case "rule_ids":
		e.rules = stringArray(raw)
	case "bundle_revision":
		e.rev = 0
		if len(raw) > 0 && raw[0] >= '0' && raw[0] <= '9' {
			if n, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
				e.rev = n
			}
		}
	default:
		for c, f := range strColField {
			if key == f {
				e.str[c], _ = stringValue(raw)
			}
		}
	}
}

// stringValue is a JSON string token's value ("" and false for another type).
func stringValue(raw []byte) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	s, _, ok := scanString(raw, 0)
	return s, ok
}

// stringArray reads an array of strings as json.Unmarshal into []string
// does (null elements are ""); nil for anything else.
func stringArray(raw []byte) []string {
	if len(raw) == 0 || raw[0] != '[' {
		return nil
	}
	out := []string{}
	i := skipSpace(raw, 1)
	if i < len(raw) && raw[i] == ']' {
		return out
	}
	for i < len(raw) {
		var s string
		switch {
		case raw[i] == '"':
			var ok bool
			if s, i, ok = scanString(raw, i); !ok {
				return nil
			}
		case len(raw)-i >= 4 && string(raw[i:i+4]) == "null":
			i += 4
		default:
			return nil
		}
		out = append(out, s)
		i = skipSpace(raw, i)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			return out
		}
		return nil
	}
	return nil
}

// scanString decodes the string token at b[i] and returns the index after
// it. Plain printable text is taken as is; escapes, control characters
// and invalid UTF-8 go through encoding/json so the value is the same.
func scanString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	plain := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if plain && (utf8.Valid(b[i+1 : j])) {
				return string(b[i+1 : j]), j + 1, true
			}
			var s string
			if json.Unmarshal(b[i:j+1], &s) != nil {
				return "", j + 1, false
			}
			return s, j + 1, true
		case c == '\\':
			plain = false
			j++
		case c < 0x20:
			return "", j, false
		}
	}
	return "", len(b), false
}
