package decisionlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
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
		var ref tlog.HashReaderFunc
		var refHashes []tlog.Hash
		ref = func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for i, x := range idx {
				out[i] = refHashes[x]
			}
			return out, nil
		}
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
			line, err := seal(r, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			// What the log reads back is what it wrote and what the client
			// sent, by exact name.
			stripped := bytes.TrimSuffix(line, []byte{'\n'})
			seq, err := parseStored(stripped)
			if err != nil || seq != uint64(i+1) {
				t.Fatalf("stored line reads back as seq %d (%v), want %d", seq, err, i+1)
			}
			if _, ok := r[FieldSeq]; ok {
				t.Fatal("seal left seq in the caller's record")
			}
			for _, f := range []string{"decision", "subject", "time"} {
				want, _ := r.str(f)
				if got := storedString(stripped, f); got != want {
					t.Fatalf("indexed field %q reads back as %q, the record has %q", f, got, want)
				}
			}
			hs, err := tlog.StoredHashes(int64(i), stripped, ref)
			if err != nil {
				t.Fatal(err)
			}
			refHashes = append(refHashes, hs...)
			buf.Write(line)
		}
		v, _ := NewTreeVerifier(Anchor{})
		if err := v.VerifyReader("fuzz", &buf); err != nil {
			t.Fatalf("sealed records do not verify: %v", err)
		}
		if v.Count != uint64(len(recs)) {
			t.Fatalf("verified %d of %d", v.Count, len(recs))
		}
		// The verifier's O(log n) rebuild gives the root of the full tree.
		root, err := tlog.TreeHash(int64(len(recs)), ref)
		if err != nil || v.Head().Hash != root.String() {
			t.Fatalf("verifier root %s, reference %s (%v)", v.Head().Hash, root, err)
		}
	})
}

// FuzzVerifyReader: the audit log reader never panics on arbitrary segment
// content, and accepting it means every line carried a consistent chain.
func FuzzVerifyReader(f *testing.F) {
	good := func(n int) []byte {
		var buf bytes.Buffer
		for i := 0; i < n; i++ {
			r, _ := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"allow","reason":"x"}`))
			line, _ := seal(r, uint64(i+1))
			buf.Write(line)
		}
		return buf.Bytes()
	}
	f.Add(good(3))
	f.Add(good(1)[:30])
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, _ := NewTreeVerifier(Anchor{})
		if err := v.VerifyReader("fuzz", bytes.NewReader(data)); err != nil {
			return
		}
		if v.Count != uint64(bytes.Count(data, []byte{'\n'})) {
			t.Fatalf("accepted %d records from %d lines", v.Count, bytes.Count(data, []byte{'\n'}))
		}
	})
}

// FuzzOpenDir: arbitrary segment and checkpoint files never crash the
// offline verifier or crash recovery, and a directory that verifies
// always opens.
func FuzzOpenDir(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(dir, Options{Key: testKey})
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		r, _ := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"deny"}`))
		if _, err := l.Append([]Record{r}); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	seg, _ := os.ReadFile(filepath.Join(dir, segName(1)))
	cp, _ := os.ReadFile(filepath.Join(dir, checkpointFile))
	f.Add(seg, cp)
	f.Add(seg[:len(seg)-7], cp)
	f.Add([]byte{}, []byte("meshguard.test/decisions\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Fuzz(func(t *testing.T, seg, cp []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, checkpointFile), cp, 0o640); err != nil {
			t.Fatal(err)
		}
		_, verr := VerifyDir(dir, VerifyOptions{Key: testKey.Verifier})
		l, oerr := Open(dir, Options{Key: testKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if oerr == nil {
			l.Close()
		}
		if verr == nil && oerr != nil {
			t.Fatalf("verified directory does not open: %v", oerr)
		}
	})
}

// FuzzTornTail: whatever an interrupted write leaves after the last
// complete record (bytes without a newline), offline verification calls it
// a recoverable torn tail ending at the real head, never tampering, and
// the log reopens at that head and then verifies clean.
func FuzzTornTail(f *testing.F) {
	f.Add(uint8(3), []byte(`{"decision":"deny","hash":"`))
	f.Add(uint8(1), []byte{0})
	f.Add(uint8(0), []byte(`{"seq":1}`))
	f.Fuzz(func(t *testing.T, n uint8, junk []byte) {
		if len(junk) == 0 || bytes.IndexByte(junk, '\n') >= 0 {
			return
		}
		dir := t.TempDir()
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		l, err := Open(dir, Options{Key: testKey, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(n % 8) {
			r, _ := DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:00Z","decision":"allow","decision_id":"%d"}`, i))
			if _, err := l.Append([]Record{r}); err != nil {
				t.Fatal(err)
			}
		}
		head := l.Head()
		l.Close()
		seg := filepath.Join(dir, segName(1))
		fh, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.Write(junk)
		fh.Close()

		rep, err := verifyDir(dir)
		var torn *TornTailError
		if !errors.As(err, &torn) {
			t.Fatalf("torn tail reported as %T %v", err, err)
		}
		if rep.Head != head || torn.Head != head || torn.Bytes != int64(len(junk)) {
			t.Fatalf("torn tail %+v, report %+v, want head %+v", torn, rep, head)
		}
		l, err = Open(dir, Options{Key: testKey, Logger: quiet})
		if err != nil {
			t.Fatalf("recoverable tail does not open: %v", err)
		}
		if l.Head() != head {
			t.Fatalf("reopened at %+v, want %+v", l.Head(), head)
		}
		l.Close()
		if _, err := verifyDir(dir); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
}

// FuzzAppendDedupe: batches of records with arbitrary (uploader,
// decision_id) pairs store every pair exactly once, and the counts in the
// answers add up.
func FuzzAppendDedupe(f *testing.F) {
	f.Add([]byte{0x01, 0x01, 0x12, 0x01, 0x11}, uint8(2))
	f.Add([]byte{0xff, 0x00, 0xff}, uint8(1))
	f.Fuzz(func(t *testing.T, pairs []byte, batch uint8) {
		if len(pairs) > 256 {
			pairs = pairs[:256]
		}
		size := int(batch%5) + 1
		dir := t.TempDir()
		l, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		want := map[string]bool{}
		accepted, dups := 0, 0
		for i := 0; i < len(pairs); i += size {
			var recs []Record
			for _, p := range pairs[i:min(i+size, len(pairs))] {
				r, _ := DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:00Z","decision":"allow","decision_id":"%d"}`, p&0x0f))
				Stamp([]Record{r}, fmt.Sprint("proxy-", p>>4), time.Unix(0, 0))
				recs = append(recs, r)
				want[fmt.Sprint(p>>4, "/", p&0x0f)] = true
			}
			res, err := l.Append(recs)
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted+res.Duplicates != len(recs) {
				t.Fatalf("answer %+v for %d records", res, len(recs))
			}
			accepted, dups = accepted+res.Accepted, dups+res.Duplicates
		}
		got := map[string]bool{}
		err = l.scan(1, func(_ uint64, line []byte) (bool, error) {
			k := storedString(line, FieldReceivedBy) + "/" + storedString(line, FieldDecisionID)
			if got[k] {
				t.Fatalf("pair %s stored twice", k)
			}
			got[k] = true
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || accepted != len(want) || accepted+dups != len(pairs) {
			t.Fatalf("stored %d pairs, %d distinct sent, accepted %d, duplicates %d of %d", len(got), len(want), accepted, dups, len(pairs))
		}
	})
}
