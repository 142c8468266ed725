package decisionlog

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
		if !ndjson {
			// No accepted top-level member may be a duplicate: counting the
			// members in the text must give the map's size.
			var raw []json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil || len(raw) != len(recs) {
				t.Fatalf("accepted body does not split into %d records: %v", len(recs), err)
			}
			for i, el := range raw {
				n := 0
				_ = topLevel(el, func(_, _ []byte) bool { n++; return true })
				if n != len(recs[i]) {
					t.Fatalf("record %d: %d members in the text, %d kept: a duplicate name was accepted", i, n, len(recs[i]))
				}
			}
		}
		for i, r := range recs {
			for name := range r {
				for _, f := range namedFields {
					if name != f && strings.EqualFold(name, f) {
						t.Fatalf("accepted field %q, which folds onto %q", name, f)
					}
				}
			}
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
			// What the log reads back is what it wrote and what the client
			// sent, by exact name.
			stripped := bytes.TrimSuffix(line, []byte{'\n'})
			_, st, err := parseStored(stripped)
			if err != nil || st.Seq != uint64(i+1) || st.PrevHash != prev || st.Hash != h {
				t.Fatalf("stored line reads back as %+v (%v), want seq %d prev %s hash %s", st, err, i+1, prev, h)
			}
			for _, f := range []string{"decision", "subject", "time"} {
				want, _ := r.str(f)
				if got := storedString(stripped, f); got != want {
					t.Fatalf("indexed field %q reads back as %q, the record has %q", f, got, want)
				}
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
