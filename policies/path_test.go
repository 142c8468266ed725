package policies

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refCanonical is the README's definition of a canonical target, written
// plainly: the fast checkPath must agree with it.
func refCanonical(t string) bool {
	if strings.ContainsRune(t, '#') {
		return false
	}
	path, query, _ := strings.Cut(t, "?")
	for _, c := range []byte(query) {
		if c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	if !strings.HasPrefix(path, "/") {
		return false
	}
	segs := strings.Split(path[1:], "/")
	for i, seg := range segs {
		if seg == "" && i != len(segs)-1 || seg == "." || seg == ".." {
			return false
		}
		for k := 0; k < len(seg); k++ {
			c := seg[k]
			switch {
			case c <= 0x20 || c >= 0x7f || strings.IndexByte("\\\"<>[]^`{|};", c) >= 0:
				return false
			case c == '%':
				if k+2 >= len(seg) || !strings.ContainsRune("0123456789ABCDEF", rune(seg[k+1])) || !strings.ContainsRune("0123456789ABCDEF", rune(seg[k+2])) {
					return false
				}
				o, _ := strconv.ParseUint(seg[k+1:k+3], 16, 8)
				if o < 0x20 || o == 0x7f || o == '/' || o == '\\' || unreserved(byte(o)) {
					return false
				}
				if o == '%' && k+4 < len(seg) && strings.ContainsAny(seg[k+3:k+4], "0123456789ABCDEFabcdef") && strings.ContainsAny(seg[k+4:k+5], "0123456789ABCDEFabcdef") {
					return false
				}
				k += 2
			}
		}
	}
	return true
}

func TestCanonicalPath(t *testing.T) {
	norm := PathOptions{Normalize: true}
	merge := PathOptions{Normalize: true, MergeSlashes: true}
	for _, c := range []struct {
		in         string
		strict     error  // nil: canonical
		normalized string // with Normalize ("" = refused with strict's error or normErr)
		normErr    error
		merged     string // with MergeSlashes too ("" = same as normalized)
	}{
		{in: "/", normalized: "/"},
		{in: "/v1/meters/m-1/readings", normalized: "/v1/meters/m-1/readings"},
		{in: "/v1/meters/", normalized: "/v1/meters/"},
		{in: "/v1/a?x=/../%zz&y=%2F", normalized: "/v1/a?x=/../%zz&y=%2F"},
		{in: "/v1/caf%C3%A9/%20x/%3F/%25zz/:@!$&'()*+,=", normalized: "/v1/caf%C3%A9/%20x/%3F/%25zz/:@!$&'()*+,="},
		{in: "", strict: ErrPathEmpty},
		{in: "v1/x", strict: ErrPathNotAbsolute},
		{in: "*", strict: ErrPathNotAbsolute},
		{in: "http://h/v1", strict: ErrPathNotAbsolute},
		{in: "/v1/./admin", strict: ErrPathDotSegment, normalized: "/v1/admin"},
		{in: "/v1/x/../admin", strict: ErrPathDotSegment, normalized: "/v1/admin"},
		{in: "/v1/x/..", strict: ErrPathDotSegment, normalized: "/v1/"},
		{in: "/v1/.", strict: ErrPathDotSegment, normalized: "/v1/"},
		{in: "/..", strict: ErrPathDotSegment, normalized: "/"},
		{in: "/../../etc", strict: ErrPathDotSegment, normalized: "/etc"},
		{in: "/v1/...", normalized: "/v1/..."},
		{in: "/v1//admin", strict: ErrPathEmptySegment, normErr: ErrPathEmptySegment, merged: "/v1/admin"},
		{in: "//v1", strict: ErrPathEmptySegment, normErr: ErrPathEmptySegment, merged: "/v1"},
		{in: "/v1//", strict: ErrPathEmptySegment, normErr: ErrPathEmptySegment, merged: "/v1/"},
		{in: "/v1/x//../admin", strict: ErrPathEmptySegment, normErr: ErrPathAmbiguousDotDot},
		{in: "/v1/%61dmin", strict: ErrPathEncodedChar, normalized: "/v1/admin"},
		{in: "/v1/%2e%2e/admin", strict: ErrPathEncodedChar, normalized: "/admin"},
		{in: "/v1/%2E/admin", strict: ErrPathEncodedChar, normalized: "/v1/admin"},
		{in: "/v1/%7Eu/%5F", strict: ErrPathEncodedChar, normalized: "/v1/~u/_"},
		{in: "/v1/a%2fb", strict: ErrPathEncodedSlash},
		{in: "/v1/a%2Fb", strict: ErrPathEncodedSlash},
		{in: "/v1/..%2F..%2Finverters", strict: ErrPathEncodedSlash},
		{in: "/v1/a%5Cb", strict: ErrPathEncodedSlash},
		{in: "/v1/a%5cb", strict: ErrPathEncodedSlash},
		{in: "/v1\\admin", strict: ErrPathCharacter},
		{in: "/v1/a%3fb", strict: ErrPathLowerHex, normalized: "/v1/a%3Fb"},
		{in: "/v1/a%c3%a9", strict: ErrPathLowerHex, normalized: "/v1/a%C3%A9"},
		{in: "/v1/a%2", strict: ErrPathBadEscape},
		{in: "/v1/a%", strict: ErrPathBadEscape},
		{in: "/v1/a%G1", strict: ErrPathBadEscape},
		{in: "/v1/a%252e", strict: ErrPathDoubleEncoding},
		{in: "/v1/a%252F", strict: ErrPathDoubleEncoding},
		{in: "/v1/a%00", strict: ErrPathEncodedControl},
		{in: "/v1/a%0A", strict: ErrPathEncodedControl},
		{in: "/v1/a%7F", strict: ErrPathEncodedControl},
		{in: "/v1/a\x00", strict: ErrPathControl},
		{in: "/v1/a b", strict: ErrPathControl},
		{in: "/v1/a\tb", strict: ErrPathControl},
		{in: "/v1/caf\xc3\xa9", strict: ErrPathControl},
		{in: "/v1/a?x=\x01", strict: ErrPathControl},
		{in: "/v1/a#frag", strict: ErrPathFragment},
		{in: "/v1/a?x#frag", strict: ErrPathFragment},
		{in: "/v1/admin;jsessionid=1/x", strict: ErrPathParameter},
		{in: "/v1/..;/admin", strict: ErrPathParameter},
		{in: "/v1/{id}", strict: ErrPathCharacter},
		{in: "/v1/[x]", strict: ErrPathCharacter},
		{in: "/v1/./a//b?q", strict: ErrPathDotSegment, normErr: ErrPathEmptySegment, merged: "/v1/a/b?q"},
	} {
		t.Run(c.in, func(t *testing.T) {
			assert.Equal(t, c.strict == nil, refCanonical(c.in), "reference")
			got, err := CanonicalPath(c.in, PathOptions{})
			if c.strict == nil {
				require.NoError(t, err)
				assert.Equal(t, c.in, got)
			} else {
				assert.Equal(t, c.strict, err)
				assert.ErrorIs(t, err, ErrNonCanonicalPath)
			}
			want, wantErr := c.normalized, c.normErr
			if want == "" && wantErr == nil {
				wantErr = c.strict
			}
			got, err = CanonicalPath(c.in, norm)
			assert.Equal(t, wantErr, err)
			if wantErr == nil {
				assert.Equal(t, want, got)
			}
			if c.merged != "" {
				want, wantErr = c.merged, nil
			}
			got, err = CanonicalPath(c.in, merge)
			assert.Equal(t, wantErr, err, "merge")
			if wantErr == nil {
				assert.Equal(t, want, got, "merge")
			}
		})
	}
}

// TestCanonicalPathAllocs: checking a canonical path, or refusing one,
// allocates nothing in either mode.
func TestCanonicalPathAllocs(t *testing.T) {
	for _, p := range []string{"/v1/meters/3e4f45ab31edfe5b67e343e5e4562e31984e23e5/readings?from=2026-01-01", "/v1/%2F", "/v1/a;b"} {
		for _, opt := range []PathOptions{{}, {Normalize: true, MergeSlashes: true}} {
			assert.Zero(t, testing.AllocsPerRun(200, func() { _, _ = CanonicalPath(p, opt) }), "%s %+v", p, opt)
		}
	}
}

// FuzzCanonicalPath: no input panics; a canonical target is returned as is
// by every mode; a normalised target is canonical and normalising it again
// changes nothing; and no refused target is accepted by normalising with a
// different answer than a second normalisation.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/v1/meters/m-1/readings?x=1", "/v1/./admin", "/v1//admin", "/v1/%61dmin", "/v1/%2e%2e/%2e%2e/inverters",
		"/v1/meters/..%2F..%2Finverters%2Finv-1/readings", "/v1\\admin", "/v1/a%252e", "/v1/x//../y", "/v1/a;b", "/a/b/c/./../../g",
		"/v1/a%c3%a9?q#f", "/v1/\x00", "//", "/..", "/v1/caf%C3%A9/", "*", ""} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, merge bool) {
		opt := PathOptions{Normalize: true, MergeSlashes: merge}
		strict, serr := CanonicalPath(in, PathOptions{})
		if ref := refCanonical(in); ref != (serr == nil) {
			t.Fatalf("%q: strict check says %v, the reference %v", in, serr, ref)
		}
		got, nerr := CanonicalPath(in, opt)
		if serr == nil {
			if strict != in || nerr != nil || got != in {
				t.Fatalf("canonical %q: strict %q, normalised %q %v", in, strict, got, nerr)
			}
			return
		}
		if !errors.Is(serr, ErrNonCanonicalPath) {
			t.Fatalf("%q: error %v does not match ErrNonCanonicalPath", in, serr)
		}
		if nerr != nil {
			return
		}
		if err := checkPath(got); err != nil {
			t.Fatalf("%q normalised to %q, which is not canonical: %v", in, got, err)
		}
		again, err := CanonicalPath(got, opt)
		if err != nil || again != got {
			t.Fatalf("normalising %q again: %q %v", got, again, err)
		}
		// The query is never touched.
		if i := strings.IndexByte(in, '?'); i >= 0 {
			if j := strings.IndexByte(got, '?'); j < 0 || got[j:] != in[i:] {
				t.Fatalf("%q: query changed in %q", in, got)
			}
		}
	})
}

// BenchmarkCanonicalPath measures the strict check of a typical path.
// go test ./policies -run '^$' -bench CanonicalPath -benchmem
func BenchmarkCanonicalPath(b *testing.B) {
	for _, p := range []string{"/v1/svc4321/items/42", "/v1/meters/3e4f45ab31edfe5b67e343e5e4562e31984e23e5/readings?from=2026-01-01"} {
		b.Run(fmt.Sprintf("len=%d", len(p)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalPath(p, PathOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
