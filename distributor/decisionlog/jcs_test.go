package decisionlog

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCanonicalIsRFC8785: the examples of RFC 8785 (member order by UTF-16
// code units, section 3.2.3; string escapes, section 3.2.2.2; ECMAScript
// numbers, appendix B) come out as the RFC prints them.
func TestCanonicalIsRFC8785(t *testing.T) {
	canon := func(body string) string {
		t.Helper()
		var r Record
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		b, err := r.Canonical()
		require.NoError(t, err, body)
		return string(b)
	}
	// Section 3.2.3: sorting by UTF-16 code units puts U+1F600 (a
	// surrogate pair, 0xD83D...) before U+FB33, unlike UTF-8 byte order.
	assert.Equal(t, "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\","+
		"\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		canon(`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",
		"\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}`))
	// Section 3.2.2.2: only the required escapes, named where JSON names them.
	assert.Equal(t, `{"s":"€$\u000f\nA'B\"\\\\\"/\b\f\t\u001f"}`,
		canon(`{"s":"\u20ac\u0024\u000F\u000aA'\u0042\u0022\u005c\\\"\/\u0008\u000c\u0009\u001F"}`))
	// Nested objects are sorted too; arrays keep their order.
	assert.Equal(t, `{"a":{"x":[3,{"b":1,"c":2}],"y":null},"b":true}`, canon(`{"b":true,"a":{"y":null,"x":[3,{"c":2,"b":1}]}}`))

	// Appendix B numbers, and numbers written differently from how
	// ECMAScript prints the same double.
	for in, want := range map[string]string{
		"0": "0", "-0": "0", "5e-324": "5e-324", "1.7976931348623157e308": "1.7976931348623157e+308",
		"9007199254740992": "9007199254740992", "-9007199254740992": "-9007199254740992",
		"295147905179352830000": "295147905179352830000", "1e21": "1e+21", "1e20": "100000000000000000000",
		"0.000001": "0.000001", "1e-7": "1e-7", "1.0": "1", "1.50": "1.5", "2.50e3": "2500", "-1E+2": "-100",
		"123456789012345": "123456789012345", "0.1": "0.1",
	} {
		got := canon(`{"n":` + in + `}`)
		assert.Equal(t, `{"n":`+want+`}`, got, in)
	}
}

// TestCanonicalRefusesNumbersItWouldChange: a number a double does not
// hold exactly is an error at decode, never silently rounded.
func TestCanonicalRefusesNumbersItWouldChange(t *testing.T) {
	for _, n := range []string{"9007199254740993", "12345678901234567890", "0.1000000000000000000001", "1e400", "-1e400", "333333333.33333329"} {
		_, err := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"allow","x":` + n + `}`))
		require.Error(t, err, n)
		assert.True(t, strings.Contains(err.Error(), "IEEE 754 double"), err.Error())
	}
	_, err := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"allow","x":[1.0,2e0,-0.0]}`))
	assert.NoError(t, err, "the same value written another way is kept (as the canonical form)")
}

func TestJCSLessIsUTF16Order(t *testing.T) {
	keys := []string{"\ufb33", "😀", "a", "", "ab", "\uffff", "\U0010ffff", "\ue000"}
	for _, a := range keys {
		for _, b := range keys {
			ua, ub := utf16Key(a), utf16Key(b)
			assert.Equal(t, ua < ub, jcsLess(a, b), "%q < %q", a, b)
		}
	}
}

// utf16Key spells s's UTF-16 code units as a string that sorts bytewise.
func utf16Key(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			b.WriteString(string([]byte{byte((0xD800 + r>>10) >> 8), byte(0xD800 + r>>10), byte((0xDC00 + r&0x3ff) >> 8), byte(0xDC00 + r&0x3ff)}))
			continue
		}
		b.WriteString(string([]byte{byte(r >> 8), byte(r)}))
	}
	return b.String()
}
