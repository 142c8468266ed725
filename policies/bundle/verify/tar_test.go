package verify

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type tarEntry struct {
	name string
	typ  byte
	body string
}

// writeTar writes entries with archive/tar in the given format.
func writeTar(t testing.TB, format tar.Format, entries ...tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, ModTime: time.Unix(0, 0), Format: format}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		} else {
			h.Linkname = "target"
		}
		require.NoError(t, tw.WriteHeader(h))
		_, err := tw.Write([]byte(e.body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// readAll reads every entry with tarReader.
func readAll(data []byte) ([]tarEntry, error) {
	tr := &tarReader{r: bytes.NewReader(data)}
	var out []tarEntry
	for {
		h, err := tr.next()
		if err == errTarEnd {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Size > 1<<20 {
			return nil, errors.New("too large for the test")
		}
		b := make([]byte, h.Size)
		if err := tr.read(b); err != nil {
			return nil, err
		}
		out = append(out, tarEntry{name: h.Name, typ: h.Typeflag, body: string(b)})
	}
}

func TestTarReader(t *testing.T) {
	long := "policies/" + strings.Repeat("d/", 80) + "p.yaml"
	unsplittable := "policies/" + strings.Repeat("x", 200) + ".yaml"
	cases := []struct {
		name string
		data []byte
		want []tarEntry
		err  string
	}{
		{"ustar", writeTar(t, tar.FormatUSTAR, tarEntry{name: ".manifest", body: "{}"}, tarEntry{name: "policies/a.yaml", body: strings.Repeat("a", 600)}),
			[]tarEntry{{".manifest", '0', "{}"}, {"policies/a.yaml", '0', strings.Repeat("a", 600)}}, ""},
		{"prefix split", writeTar(t, tar.FormatUSTAR, tarEntry{name: long, body: "x"}), []tarEntry{{long, '0', "x"}}, ""},
		{"PAX path", writeTar(t, tar.FormatPAX, tarEntry{name: unsplittable, body: "y"}), []tarEntry{{unsplittable, '0', "y"}}, ""},
		{"PAX UTF-8 path", writeTar(t, tar.FormatPAX, tarEntry{name: "policies/zähler.yaml", body: "z"}), []tarEntry{{"policies/zähler.yaml", '0', "z"}}, ""},
		{"empty file", writeTar(t, tar.FormatUSTAR, tarEntry{name: "data/e"}), []tarEntry{{"data/e", '0', ""}}, ""},
		{"symlink is reported", writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/l", typ: tar.TypeSymlink}), []tarEntry{{"policies/l", tar.TypeSymlink, ""}}, ""},
		{"GNU format", writeTar(t, tar.FormatGNU, tarEntry{name: "policies/a", body: "a"}), nil, "not a POSIX ustar header"},
		{"PAX with other keys", func() []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			require.NoError(t, tw.WriteHeader(&tar.Header{Name: "policies/a", Typeflag: tar.TypeReg, Size: 1, PAXRecords: map[string]string{"comment": "hi"}, Format: tar.FormatPAX}))
			_, _ = tw.Write([]byte("a"))
			require.NoError(t, tw.Close())
			return buf.Bytes()
		}(), nil, `key "comment"`},
		{"checksum", func() []byte {
			b := writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/a", body: "a"})
			b[0] = 'P'
			return b
		}(), nil, "checksum"},
		{"data after the end marker", append(writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/a", body: "a"}), 'x'), nil, "after the end-of-archive"},
		{"no end marker", writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/a", body: "a"})[:1024], nil, "unexpected EOF"},
		{"truncated body", writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/a", body: strings.Repeat("a", 600)})[:700], nil, "unexpected EOF"},
		{"zero padding after the marker", append(writeTar(t, tar.FormatUSTAR, tarEntry{name: "policies/a", body: "a"}), make([]byte, 9000)...), []tarEntry{{"policies/a", '0', "a"}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.data)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzTarReader: no input panics, and whatever tarReader reads the way the
// verifier accepts it (regular files only), archive/tar reads the same way.
func FuzzTarReader(f *testing.F) {
	f.Add(writeTar(f, tar.FormatUSTAR, tarEntry{name: ".manifest", body: "{}"}, tarEntry{name: "policies/a.yaml", body: "a: 1\n"}))
	f.Add(writeTar(f, tar.FormatPAX, tarEntry{name: "policies/" + strings.Repeat("x", 120), body: "y"}))
	f.Add(writeTar(f, tar.FormatUSTAR, tarEntry{name: "policies/l", typ: tar.TypeSymlink}))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readAll(data)
		if err != nil {
			return
		}
		for _, e := range got {
			if e.typ != tar.TypeReg {
				return // the verifier refuses the archive
			}
		}
		tr := tar.NewReader(bytes.NewReader(data))
		for i, e := range got {
			h, err := tr.Next()
			require.NoError(t, err, "archive/tar fails on entry %d that tarReader read", i)
			require.Equal(t, e.name, h.Name)
			require.Equal(t, e.typ, h.Typeflag)
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			require.Equal(t, e.body, string(b))
		}
		_, err = tr.Next()
		require.ErrorIs(t, err, io.EOF)
	})
}
