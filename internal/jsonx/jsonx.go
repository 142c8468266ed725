// Package jsonx is a small, strict JSON (RFC 8259) parser for the guard
// filter, which cannot afford encoding/json's reflection-driven decoder in
// its module (about 1 MB of the wasm). Parse reads one document into a
// tree of Values that callers map onto their own types by hand.
//
// It is stricter than encoding/json on purpose, since every document it
// reads is hostile until verified: a duplicate object member, invalid
// UTF-8, an unpaired UTF-16 surrogate escape, nesting deeper than MaxDepth
// or anything but whitespace after the value is an error (encoding/json
// keeps the last duplicate and replaces bad text with U+FFFD).
package jsonx

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects.
const MaxDepth = 128

// ErrSyntax is wrapped by every Parse error.
var ErrSyntax = errors.New("invalid JSON")

// Kind is a Value's JSON type.
type Kind uint8

// The JSON types.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"null", "boolean", "number", "string", "array", "object"}

func (k Kind) String() string { return kindNames[k] }

// Value is one parsed JSON value.
type Value struct {
	// Kind is the value's type.
	Kind Kind
	// Raw is the value's exact text, a sub-slice of the parsed input.
	Raw []byte
	// Str is a String's decoded text or a Number's literal.
	Str string
	// True is a Bool's value.
	True bool
	// Items are an Array's elements.
	Items []Value
	// Members are an Object's members in document order (names unique).
	Members []Member
}

// Member is one name/value pair of an object.
type Member struct {
	Name  string
	Value Value
}

// Get returns the object member called name.
func (v *Value) Get(name string) (*Value, bool) {
	for i := range v.Members {
		if v.Members[i].Name == name {
			return &v.Members[i].Value, true
		}
	}
	return nil, false
}

// Int returns a Number that is an integer literal within int64.
func (v *Value) Int() (int64, error) {
	if v.Kind != Number {
		return 0, fmt.Errorf("want a number, got %s", v.Kind)
	}
	n, err := strconv.ParseInt(v.Str, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %s is not an integer in range", v.Str)
	}
	return n, nil
}

// Uint returns a Number that is a non-negative integer literal within uint64.
func (v *Value) Uint() (uint64, error) {
	if v.Kind != Number {
		return 0, fmt.Errorf("want a number, got %s", v.Kind)
	}
	n, err := strconv.ParseUint(v.Str, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %s is not an unsigned integer in range", v.Str)
	}
	return n, nil
}

// Float returns a Number as a float64 (an error when out of range).
func (v *Value) Float() (float64, error) {
	if v.Kind != Number {
		return 0, fmt.Errorf("want a number, got %s", v.Kind)
	}
	f, err := strconv.ParseFloat(v.Str, 64)
	if err != nil {
		return 0, fmt.Errorf("number %s is out of range", v.Str)
	}
	return f, nil
}

// Valid reports whether data is one JSON value that Parse accepts.
func Valid(data []byte) bool {
	_, err := Parse(data)
	return err == nil
}

// Parse reads exactly one JSON value, with optional surrounding whitespace.
func Parse(data []byte) (Value, error) {
	p := parser{b: data}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.space()
	if p.i != len(p.b) {
		return Value{}, p.fail("trailing data after the value")
	}
	return v, nil
}

type parser struct {
	b []byte
	i int
}

func (p *parser) fail(msg string) error {
	return fmt.Errorf("%w at offset %d: %s", ErrSyntax, p.i, msg)
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (Value, error) {
	if p.i >= len(p.b) {
		return Value{}, p.fail("unexpected end of input")
	}
	start := p.i
	var v Value
	var err error
	switch c := p.b[p.i]; {
	case c == '{':
		v, err = p.object(depth + 1)
	case c == '[':
		v, err = p.array(depth + 1)
	case c == '"':
		v.Kind = String
		v.Str, err = p.str()
	case c == 't':
		v.Kind, v.True, err = Bool, true, p.lit("true")
	case c == 'f':
		v.Kind, err = Bool, p.lit("false")
	case c == 'n':
		v.Kind, err = Null, p.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		v.Kind = Number
		err = p.number()
		v.Str = string(p.b[start:p.i])
	default:
		return Value{}, p.fail(fmt.Sprintf("unexpected character %q", c))
	}
	if err != nil {
		return Value{}, err
	}
	v.Raw = p.b[start:p.i:p.i]
	return v, nil
}

func (p *parser) lit(word string) error {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return p.fail("invalid literal")
	}
	p.i += len(word)
	return nil
}

func (p *parser) object(depth int) (Value, error) {
	if depth > MaxDepth {
		return Value{}, p.fail("nesting too deep")
	}
	v := Value{Kind: Object}
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		v.Members = []Member{}
		return v, nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return Value{}, p.fail("want a member name")
		}
		at := p.i
		name, err := p.str()
		if err != nil {
			return Value{}, err
		}
		for _, m := range v.Members {
			if m.Name == name {
				p.i = at
				return Value{}, p.fail(fmt.Sprintf("duplicate member %q", name))
			}
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return Value{}, p.fail("want ':' after a member name")
		}
		p.i++
		p.space()
		mv, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		v.Members = append(v.Members, Member{Name: name, Value: mv})
		p.space()
		if p.i >= len(p.b) {
			return Value{}, p.fail("unexpected end of input in an object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return v, nil
		default:
			return Value{}, p.fail("want ',' or '}' in an object")
		}
	}
}

func (p *parser) array(depth int) (Value, error) {
	if depth > MaxDepth {
		return Value{}, p.fail("nesting too deep")
	}
	v := Value{Kind: Array, Items: []Value{}}
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.space()
		item, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		v.Items = append(v.Items, item)
		p.space()
		if p.i >= len(p.b) {
			return Value{}, p.fail("unexpected end of input in an array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return v, nil
		default:
			return Value{}, p.fail("want ',' or ']' in an array")
		}
	}
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// number checks the RFC 8259 number grammar.
func (p *parser) number() error {
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return p.fail("invalid number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return p.fail("invalid number: no digits after '.'")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return p.fail("invalid number: no exponent digits")
		}
	}
	return nil
}

func (p *parser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
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
	p.i += 4
	return r, true
}

// str reads a string token (p.b[p.i] == '"') and returns its text.
func (p *parser) str() (string, error) {
	p.i++
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := p.b[start:p.i]
			if !utf8.Valid(s) {
				return "", p.fail("string is not valid UTF-8")
			}
			p.i++
			return string(s), nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		p.i++
	}
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", p.fail("string is not valid UTF-8")
			}
			p.i++
			return string(out), nil
		case c < 0x20:
			return "", p.fail("control character in a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		p.i++ // backslash
		if p.i >= len(p.b) {
			break
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.fail("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				if len(p.b)-p.i < 6 || p.b[p.i] != '\\' || p.b[p.i+1] != 'u' {
					return "", p.fail("unpaired surrogate escape")
				}
				p.i += 2
				r2, ok := p.hex4()
				if !ok {
					return "", p.fail("invalid \\u escape")
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return "", p.fail("unpaired surrogate escape")
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", p.fail("invalid escape")
		}
	}
	return "", p.fail("unterminated string")
}
