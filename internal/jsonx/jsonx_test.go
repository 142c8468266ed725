package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// toAny converts a Value to what encoding/json decodes with UseNumber.
func toAny(v *Value) any {
	switch v.Kind {
	case Bool:
		return v.True
	case Number:
		return json.Number(v.Str)
	case String:
		return v.Str
	case Array:
		l := make([]any, len(v.Items))
		for i := range v.Items {
			l[i] = toAny(&v.Items[i])
		}
		return l
	case Object:
		m := make(map[string]any, len(v.Members))
		for i := range v.Members {
			m[v.Members[i].Name] = toAny(&v.Members[i].Value)
		}
		return m
	}
	return nil
}

func stdParse(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

// stricter lists the refusals encoding/json does not make.
var stricter = []string{"duplicate member", "not valid UTF-8", "unpaired surrogate", "nesting too deep"}

func TestParse(t *testing.T) {
	cases := []struct {
		in, err string
	}{
		{in: `{"a":[1,-0.5e+3,"x\u00e9\ud83d\ude00",true,false,null],"b":{}}`},
		{in: " \t\n[ ]\r\n"},
		{in: `"\"\\\/\b\f\n\r\t"`},
		{in: ``, err: "end of input"},
		{in: `{"a":1,"a":2}`, err: `duplicate member "a"`},
		{in: `{"a":1} x`, err: "trailing data"},
		{in: `{"a":1}}`, err: "trailing data"},
		{in: `[01]`, err: "want ',' or ']'"},
		{in: `[1.]`, err: "no digits"},
		{in: `[1e]`, err: "no exponent"},
		{in: `[-]`, err: "invalid number"},
		{in: `["\ud800"]`, err: "unpaired surrogate"},
		{in: `["\udc00\ud800"]`, err: "unpaired surrogate"},
		{in: "[\"\xff\"]", err: "UTF-8"},
		{in: "[\"a\x01\"]", err: "control character"},
		{in: `["\x"]`, err: "invalid escape"},
		{in: `["\u12"]`, err: "invalid \\u"},
		{in: `["abc`, err: "unterminated"},
		{in: `[tru]`, err: "invalid literal"},
		{in: `{"a" 1}`, err: "want ':'"},
		{in: `{1:1}`, err: "member name"},
		{in: `[1,]`, err: "unexpected character"},
		{in: strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), err: "nesting too deep"},
	}
	for _, tc := range cases {
		v, err := Parse([]byte(tc.in))
		if tc.err != "" {
			require.Error(t, err, tc.in)
			assert.ErrorIs(t, err, ErrSyntax)
			assert.Contains(t, err.Error(), tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		want, err := stdParse([]byte(tc.in))
		require.NoError(t, err)
		assert.Equal(t, want, toAny(&v), tc.in)
	}
}

func TestAccessors(t *testing.T) {
	v, err := Parse([]byte(`{"i":-12,"u":18446744073709551615,"f":1.5e3,"s":"x","big":1e400}`))
	require.NoError(t, err)
	i, _ := v.Get("i")
	n, err := i.Int()
	require.NoError(t, err)
	assert.Equal(t, int64(-12), n)
	_, err = i.Uint()
	assert.Error(t, err)
	u, _ := v.Get("u")
	un, err := u.Uint()
	require.NoError(t, err)
	assert.Equal(t, uint64(18446744073709551615), un)
	f, _ := v.Get("f")
	_, err = f.Int()
	assert.Error(t, err, "1.5e3 is not an integer literal")
	fl, err := f.Float()
	require.NoError(t, err)
	assert.Equal(t, 1500.0, fl)
	big, _ := v.Get("big")
	_, err = big.Float()
	assert.Error(t, err)
	s, _ := v.Get("s")
	_, err = s.Int()
	assert.ErrorContains(t, err, "got string")
	assert.Equal(t, `"x"`, string(s.Raw))
	_, ok := v.Get("missing")
	assert.False(t, ok)
}

// FuzzParse checks Parse against encoding/json: whatever Parse accepts,
// encoding/json reads to the same value; whatever encoding/json refuses,
// Parse refuses; Parse refuses more only for its documented reasons.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x"],"b":null}`, `"\ud83d\ude00"`, `{"a":1,"a":2}`, `[[[]]]`, `-0.0e-0`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := Parse(in)
		want, stdErr := stdParse(in)
		switch {
		case err == nil:
			require.NoError(t, stdErr, "accepted what encoding/json refuses")
			require.Equal(t, want, toAny(&v))
			require.Equal(t, string(bytes.TrimSpace(in)), string(v.Raw))
			require.True(t, Valid(in))
		case stdErr == nil:
			ok := false
			for _, s := range stricter {
				ok = ok || strings.Contains(err.Error(), s)
			}
			require.True(t, ok, "refused what encoding/json accepts: %v", err)
		}
	})
}
