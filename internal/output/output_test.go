package output

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type summary struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func (s summary) Rows() ([]string, [][]string) {
	return []string{"name", "count"}, [][]string{{s.Name, fmt.Sprint(s.Count)}}
}

type report struct{ summary }

func (r report) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "%s: %d\n", r.Name, r.Count)
	return err
}

type plain struct {
	A string `json:"a"`
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		f       Format
		v       any
		want    string
		wantErr error
	}{
		{"json indents, keeps <>&", JSON, summary{"a<b>&c", 2}, "{\n  \"name\": \"a<b>&c\",\n  \"count\": 2\n}\n", nil},
		{"yaml has the json names", YAML, summary{"x", 2}, "count: 2\nname: x\n", nil},
		{"table aligns rows", Table, summary{"grid", 12}, "NAME  COUNT\ngrid  12\n", nil},
		{"table prefers the text form", Table, report{summary{"grid", 12}}, "grid: 12\n", nil},
		{"csv", CSV, summary{"a,b", 1}, "name,count\n\"a,b\",1\n", nil},
		{"csv neutralises formulas", CSV, summary{"=HYPERLINK(\"http://x\")", -1}, "name,count\n\"'=HYPERLINK(\"\"http://x\"\")\",'-1\n", nil},
		{"no table form", Table, plain{"x"}, "", ErrNoTable},
		{"no csv form", CSV, plain{"x"}, "", ErrNoTable},
		{"table cells are cleaned", Table, summary{"a\tb\x1b[31mred\u202e", 1}, "NAME                     COUNT\na\\x09b\\x1b[31mred\\u202e  1\n", nil},
		{"empty cell", Table, summary{"", 0}, "NAME  COUNT\n-     0\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			err := Write(&b, tc.f, tc.v)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, b.String())
		})
	}
	require.ErrorContains(t, Write(io.Discard, "xml", plain{}), `unknown output format "xml"`)
}

func TestStream(t *testing.T) {
	recs := []struct {
		raw string
		row []string
	}{
		{`{ "seq": 1, "path": "/a" }`, []string{"1", "/a"}},
		{`{"seq":2,"path":"=cmd"}`, []string{"2", "=cmd"}},
	}
	tests := []struct {
		f    Format
		want string
	}{
		{JSON, "{\"seq\":1,\"path\":\"/a\"}\n{\"seq\":2,\"path\":\"=cmd\"}\n"},
		{YAML, "path: /a\nseq: 1\n---\npath: =cmd\nseq: 2\n"},
		{Table, "SEQ  PATH\n1    /a\n2    =cmd\n"},
		{CSV, "seq,path\n1,/a\n2,'=cmd\n"},
	}
	for _, tc := range tests {
		t.Run(string(tc.f), func(t *testing.T) {
			var b bytes.Buffer
			s := NewStream(&b, tc.f, []string{"seq", "path"})
			for _, r := range recs {
				require.NoError(t, s.Record([]byte(r.raw), r.row))
			}
			require.NoError(t, s.Flush())
			assert.Equal(t, tc.want, b.String())
		})
	}
	require.Error(t, NewStream(io.Discard, JSON, nil).Record([]byte("{"), nil), "a broken record is an error, not output")
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain /v1/meters/é": "plain /v1/meters/é",
		"\x1b]0;pwned\x07":   "\\x1b]0;pwned\\x07",
		"a\u202eb":           "a\\u202eb",
		"\u009b31m":          "\\u009b31m",
		"bad \xff byte":      "bad \\ufffd byte",
		"del\x7f":            "del\\x7f",
	} {
		assert.Equal(t, want, Clean(in), "%q", in)
	}
}
