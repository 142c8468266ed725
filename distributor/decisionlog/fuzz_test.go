package decisionlog

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: any body either fails with an error or yields records whose
// canonical form is stable and that seal into a verifiable chain.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`[{"time":"2026-11-23T08:00:00Z","decision":"allow","x":{"b":[1,2.50e3],"a":null}}]`), false)
	f.Add([]byte("{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"deny\",\"rule_ids\":[\"a\"]}\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		recs, err := Decode(body, ndjson)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		prev := GenesisHash
		for i, r := range recs {
			c1, err := r.Canonical()
			if err != nil {
				t.Fatalf("canonical: %v", err)
			}
			r2, err := DecodeRecord(c1)
			if err != nil {
				t.Fatalf("canonical form does not decode: %v\n%s", err, c1)
			}
			c2, err := r2.Canonical()
			if err != nil || !bytes.Equal(c1, c2) {
				t.Fatalf("canonical form unstable:\n%s\n%s", c1, c2)
			}
			line, h, err := seal(r, uint64(i+1), prev)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(line)
			prev = h
		}
		var v ChainVerifier
		if err := v.VerifyReader("fuzz", &buf); err != nil {
			t.Fatalf("sealed records do not verify: %v", err)
		}
		if v.Count != uint64(len(recs)) {
			t.Fatalf("verified %d of %d", v.Count, len(recs))
		}
	})
}

// FuzzVerifyReader: the audit log reader never panics on arbitrary segment
// content, and accepting it means every line carried a consistent chain.
func FuzzVerifyReader(f *testing.F) {
	good := func(n int) []byte {
		var buf bytes.Buffer
		prev := GenesisHash
		for i := 0; i < n; i++ {
			r, _ := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"allow","reason":"x"}`))
			line, h, _ := seal(r, uint64(i+1), prev)
			buf.Write(line)
			prev = h
		}
		return buf.Bytes()
	}
	f.Add(good(3))
	f.Add(good(1)[:30])
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v ChainVerifier
		if err := v.VerifyReader("fuzz", bytes.NewReader(data)); err != nil {
			return
		}
		if v.Count != uint64(bytes.Count(data, []byte{'\n'})) {
			t.Fatalf("accepted %d records from %d lines", v.Count, bytes.Count(data, []byte{'\n'}))
		}
	})
}

// FuzzOpenDir: arbitrary segment and HEAD files never crash the offline
// verifier or crash recovery, and a directory that verifies always opens.
func FuzzOpenDir(f *testing.F) {
	var buf bytes.Buffer
	prev := GenesisHash
	for i := 0; i < 2; i++ {
		r, _ := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"deny"}`))
		line, h, _ := seal(r, uint64(i+1), prev)
		buf.Write(line)
		prev = h
	}
	f.Add(buf.Bytes(), []byte(`{"seq":2,"hash":"`+prev+`"}`))
	f.Add(buf.Bytes()[:buf.Len()-7], []byte(`{"seq":1,"hash":"x"}`))
	f.Add([]byte{}, []byte(`{"seq":0}`))
	f.Fuzz(func(t *testing.T, seg, head []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, headFile), head, 0o640); err != nil {
			t.Fatal(err)
		}
		_, verr := VerifyDir(dir)
		l, oerr := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if oerr == nil {
			l.Close()
		}
		if verr == nil && oerr != nil {
			t.Fatalf("verified directory does not open: %v", oerr)
		}
	})
}
