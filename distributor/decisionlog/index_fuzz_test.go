package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

// FuzzScanEntry: the index's one-pass reader yields exactly what the
// map-based reader does on every valid JSON object, and never panics.
func FuzzScanEntry(f *testing.F) {
	f.Add([]byte(`{"bundle_revision":7,"decision":"deny","path":"/a","rule_ids":["r1","r2"],"subject":"spiffe://x/y","time":"2026-11-23T08:00:00Z"}`))
	f.Add([]byte(`{"decision":"allow","decision":"deny","time":null,"rule_ids":["a",null],"bundle_revision":1.5}`))
	f.Add([]byte(`{"path":"\u002fescaped\n","device_id":"caf\u00e9","proxy":"\xff\xfe","received_by":5,"x":{"time":"nested"}}`))
	f.Add([]byte(`{"Decision":"deny","TIME":"2026-11-23T08:00:00Z","rule_ids":"r1","bundle_revision":18446744073709551616}`))
	f.Add([]byte(` { } `))
	f.Fuzz(func(t *testing.T, line []byte) {
		got, ok := scanEntry(line)
		var m map[string]json.RawMessage
		if json.Unmarshal(line, &m) != nil {
			return // not an object: the caller falls back to parseEntry
		}
		if !ok {
			t.Fatalf("scanEntry gave up on a valid object: %q", line)
		}
		want := parseEntry(line)
		if len(got.rules) == 0 && len(want.rules) == 0 {
			got.rules, want.rules = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("scanEntry and parseEntry differ on %q:\n%+v\n%+v", line, got, want)
		}
	})
}

// FuzzIndexDir: an index over arbitrary segment content never panics,
// never calls a record verified that is not in an intact chain, and keeps
// every answer within its bounds.
func FuzzIndexDir(f *testing.F) {
	var buf bytes.Buffer
	for i := range 3 {
		r, _ := DecodeRecord([]byte(`{"time":"2026-11-23T08:00:00Z","decision":"deny","rule_ids":["r"],"path":"/p"}`))
		line, _ := seal(r, uint64(i+1))
		buf.Write(line)
	}
	f.Add(buf.Bytes(), uint8(2))
	f.Add(bytes.Replace(buf.Bytes(), []byte("/p"), []byte("/q"), 1), uint8(3))
	f.Add([]byte("{}\n[1]\n"), uint8(2))
	f.Fuzz(func(t *testing.T, seg []byte, cut uint8) {
		dir := t.TempDir()
		// Split the content into two segments at a line boundary.
		lines := bytes.SplitAfter(seg, []byte{'\n'})
		k := min(int(cut), len(lines))
		first := bytes.Join(lines[:k], nil)
		if err := os.WriteFile(filepath.Join(dir, segName(1)), first, 0o640); err != nil {
			t.Fatal(err)
		}
		if k < len(lines) {
			rest := bytes.Join(lines[k:], nil)
			if err := os.WriteFile(filepath.Join(dir, segName(uint64(bytes.Count(first, []byte{'\n'})+1))), rest, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		_, verr := VerifyDir(dir, VerifyOptions{})
		n := uint64(bytes.Count(seg, []byte{'\n'}))
		// The tree the distributor builds from whatever the files hold.
		l := &Log{dir: dir, head: Head{Seq: n}}
		tree, err := openHashStore(filepath.Join(dir, hashFile))
		if err != nil {
			t.Fatal(err)
		}
		defer tree.f.Close()
		l.tree = tree
		var leaves int64
		if err := l.scan(1, func(_ uint64, line []byte) (bool, error) {
			leaves++
			return true, tree.add(leaves-1, LeafHash(line))
		}); err != nil || tree.flush() != nil {
			t.Fatal(err)
		}
		ix := OpenIndex(l, IndexOptions{Poll: time.Hour, Logger: quiet()})
		defer ix.Close()
		ctx := context.Background()
		_ = ix.CatchUp(ctx)
		in := ix.Integrity()
		if in.Verified > ix.Indexed() || ix.Indexed() > n {
			t.Fatalf("verified %d, indexed %d of %d", in.Verified, ix.Indexed(), n)
		}
		var torn *TornTailError
		if errors.As(verr, &torn) {
			verr = nil // an interrupted write after the last record, not a bad record
		}
		if in.Verified == n && in.Problem == "" && verr != nil {
			t.Fatalf("index verified a log VerifyDir refuses: %v", verr)
		}
		p, err := ix.Search(ctx, Filter{}, PageRequest{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if p.Total != ix.Indexed() {
			t.Fatalf("total %d, indexed %d", p.Total, ix.Indexed())
		}
		for _, r := range p.Records {
			if r.Verified && r.Seq > in.Verified {
				t.Fatalf("seq %d verified beyond %d", r.Seq, in.Verified)
			}
			if !json.Valid(r.Record) {
				t.Fatalf("record %d is not JSON: %q", r.Seq, r.Record)
			}
		}
		if _, err := ix.Stats(ctx, Filter{Rule: "r"}, StatsRequest{Buckets: 3}); err != nil {
			t.Fatal(err)
		}
		for _, c := range Columns {
			vs, err := ix.Values(ctx, c, 5)
			if err != nil || len(vs) > 5 || !slices.IsSortedFunc(vs, func(a, b ValueCount) int { return int(b.Count) - int(a.Count) }) {
				t.Fatalf("values of %s: %v %v", c, vs, err)
			}
		}
	})
}
