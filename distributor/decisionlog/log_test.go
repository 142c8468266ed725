package decisionlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func rec(t testing.TB, i int, decision, subject string) Record {
	t.Helper()
	body := fmt.Sprintf(`{"time":%q,"decision_id":"d-%d","decision":%q,"rule_ids":["r1"],"reason":"<x> & y","bundle_revision":7,
	"subject":%q,"method":"POST","path":"/meter/%d","vendor_ext":{"z":1,"a":[1.50,"k"]}}`,
		t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), i, decision, subject, i)
	r, err := DecodeRecord([]byte(body))
	require.NoError(t, err)
	return r
}

// testKey signs the test logs' checkpoints.
var testKey = func() *Key {
	k, _, err := NewKey("meshguard.test/decisions")
	if err != nil {
		panic(err)
	}
	return &k
}()

// keyed is opts with the test key.
func keyed(opts Options) Options {
	opts.Key = testKey
	return opts
}

// verifyDir verifies dir offline against the test key.
func verifyDir(dir string, earlier ...[]byte) (Report, error) {
	return VerifyDir(dir, VerifyOptions{Key: testKey.Verifier, Earlier: earlier})
}

func fill(t *testing.T, dir string, n, batch int, opts Options) *Log {
	l, err := Open(dir, keyed(opts))
	require.NoError(t, err)
	for i := 0; i < n; i += batch {
		var b []Record
		for j := i; j < i+batch && j < n; j++ {
			d := "allow"
			if j%3 == 0 {
				d = "deny"
			}
			b = append(b, rec(t, j, d, fmt.Sprintf("spiffe://grid.example/meter-%d", j%2)))
		}
		_, err := l.Append(b)
		require.NoError(t, err)
	}
	return l
}

func TestDecodeAcceptsArrayAndNDJSONAndKeepsUnknownFields(t *testing.T) {
	arr := `[{"time":"2026-11-23T08:00:00.123456789Z","decision":"deny","x_custom":{"b":2,"a":1}},
	        {"time":"2026-11-23T08:00:01Z","decision":"allow","bundle_revision":3}]`
	recs, err := Decode([]byte(arr), false)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	c, err := recs[0].Canonical()
	require.NoError(t, err)
	assert.Equal(t, `{"decision":"deny","time":"2026-11-23T08:00:00.123456789Z","x_custom":{"a":1,"b":2}}`, string(c))

	nd := "{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"error\"}\n\n{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"dry-run-deny\"}"
	recs, err = Decode([]byte(nd), true)
	require.NoError(t, err)
	assert.Len(t, recs, 2)
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	for name, tc := range map[string]struct {
		body   string
		ndjson bool
		want   string
	}{
		"not array":        {`{"time":"2026-11-23T08:00:00Z","decision":"allow"}`, false, "JSON array"},
		"empty":            {`[]`, false, "no records"},
		"missing time":     {`[{"decision":"allow"}]`, false, `record 0: field "time"`},
		"bad time":         {`[{"time":"yesterday","decision":"allow"}]`, false, `field "time"`},
		"bad decision":     {`[{"time":"2026-11-23T08:00:00Z","decision":"maybe"}]`, false, `"maybe"`},
		"reserved seq":     {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","seq":1}]`, false, `"seq"`},
		"rule ids":         {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","rule_ids":"r1"}]`, false, "rule_ids"},
		"revision":         {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","bundle_revision":-1}]`, false, "bundle_revision"},
		"subject type":     {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","subject":5}]`, false, `"subject"`},
		"ndjson bad line":  {"{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"allow\"}\n[1]", true, "line 2"},
		"too deep":         {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}]`, false, "levels deep"},
		"ndjson truncated": {"{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"al", true, "line 1"},
		// Names that fold (Unicode simple case folding) onto reserved or
		// indexed fields, duplicates and non-I-JSON text.
		"folded hash (U+017F)":     {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","haſh":"x"}]`, false, `"haſh" is the name "hash"`},
		"folded seq":               {`[{"time":"2026-11-23T08:00:00Z","decision":"allow","ſeq":1000000}]`, false, `"seq" under Unicode case folding`},
		"folded decision":          {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","deciſion":"allow"}]`, false, `"decision" under`},
		"folded subject":           {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","ſubject":"x"}]`, false, `"subject" under`},
		"capitalised decision":     {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","Decision":"allow"}]`, false, `"Decision"`},
		"folded reason":            {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","reaſon":"x"}]`, false, `"reason" under`},
		"escaped folded name":      {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","SUBJECT":"x"}]`, false, `"subject" under`},
		"duplicate decision":       {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","decision":"allow"}]`, false, `"decision" appears twice`},
		"duplicate escaped":        {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","\u0064ecision":"allow"}]`, false, "appears twice"},
		"duplicate nested":         {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","x":[{"a":1,"a":2}]}]`, false, `"a" appears twice`},
		"invalid UTF-8":            {"[{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"deny\",\"reason\":\"\xff\"}]", false, "UTF-8"},
		"unpaired high surrogate":  {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","reason":"\ud800x"}]`, false, "unpaired surrogate"},
		"unpaired low surrogate":   {`[{"time":"2026-11-23T08:00:00Z","decision":"deny","reason":"\udc00"}]`, false, "unpaired surrogate"},
		"ndjson duplicate on line": {"{\"time\":\"2026-11-23T08:00:00Z\",\"decision\":\"allow\"}\n{\"time\":\"2026-11-23T08:00:00Z\",\"time\":\"x\",\"decision\":\"allow\"}", true, "line 2"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.body), tc.ndjson)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestDecodeKeepsPairedSurrogatesAndLookalikesOfUnknownFields(t *testing.T) {
	recs, err := Decode([]byte(`[{"time":"2026-11-23T08:00:00Z","decision":"deny","reason":"\ud83d\ude00 \\ud800","ext":{"Decision":1,"decision":2}}]`), false)
	require.NoError(t, err)
	c, err := recs[0].Canonical()
	require.NoError(t, err)
	assert.Equal(t, `{"decision":"deny","ext":{"Decision":1,"decision":2},"reason":"😀 \\ud800","time":"2026-11-23T08:00:00Z"}`, string(c))
}

// TestStoredLookalikesReadByExactName: a log an older distributor wrote
// with look-alike names (they were accepted then) verifies, reopens at its
// real seq and answers queries by the real fields only.
func TestStoredLookalikesReadByExactName(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, keyed(Options{}))
	require.NoError(t, err)
	old := func(body string) Record {
		var r Record
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		return r
	}
	_, err = l.Append([]Record{
		old(`{"time":"2026-11-23T08:00:00Z","decision":"deny","subject":"spiffe://grid.example/a","haſh":"x","ſeq":1000000}`),
		old(`{"time":"2026-11-23T08:00:01Z","decision":"deny","deciſion":"allow","ſubject":"spiffe://grid.example/b","subject":"spiffe://grid.example/a"}`),
		old(`{"time":"2026-11-23T08:00:02Z","decision":"allow","haſh":"last"}`),
	})
	require.NoError(t, err)
	require.NoError(t, l.Close())

	rep, err := verifyDir(dir)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), rep.Head.Seq)
	l, err = Open(dir, keyed(Options{}))
	require.NoError(t, err, "a look-alike hash in the last record must not stop a restart")
	defer l.Close()
	assert.Equal(t, uint64(3), l.Head().Seq, "ſeq must not be adopted as the sequence number")
	res, err := l.Query(Query{Decision: "deny", Subject: "spiffe://grid.example/a"})
	require.NoError(t, err)
	assert.Len(t, res.Records, 2, "deciſion/ſubject must not hide the deny")
	res, err = l.Query(Query{Subject: "spiffe://grid.example/b"})
	require.NoError(t, err)
	assert.Empty(t, res.Records)
}

func TestVerifyRefusesNonCanonicalLines(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 3, 3, Options{}).Close()
	_, lines := segLines(t, dir)
	for name, edit := range map[string]func(string) string{
		"duplicate hash member": func(l string) string { return strings.Replace(l, `{`, `{"hash":"00",`, 1) },
		"escaped name":          func(l string) string { return strings.Replace(l, `"seq"`, `"\u0073eq"`, 1) },
		"spaces":                func(l string) string { return strings.Replace(l, `,`, `, `, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			ls := append([]string(nil), lines[names0()]...)
			ls[1] = edit(ls[1])
			writeLines(t, dir, names0(), ls)
			_, err := verifyDir(dir)
			var ce *ChainError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, 2, ce.Line)
		})
	}
}

func TestAppendVerifyReopen(t *testing.T) {
	dir := t.TempDir()
	l := fill(t, dir, 250, 20, Options{SegmentBytes: 16 << 10})
	head := l.Head()
	assert.Equal(t, uint64(250), head.Seq)
	require.NoError(t, l.Close())

	rep, err := verifyDir(dir)
	require.NoError(t, err)
	assert.Equal(t, uint64(250), rep.Records)
	assert.Greater(t, rep.Segments, 2, "segments roll at 16 KiB")
	assert.Equal(t, head, rep.Head)

	l, err = Open(dir, keyed(Options{SegmentBytes: 16 << 10}))
	require.NoError(t, err)
	res, err := l.Append([]Record{rec(t, 999, "allow", "s")})
	require.NoError(t, err)
	assert.Equal(t, uint64(251), res.First)
	assert.Equal(t, uint64(251), res.Last)
	require.NoError(t, l.Close())
	_, err = verifyDir(dir)
	require.NoError(t, err)
}

// lines returns the segment files and their lines.
func segLines(t *testing.T, dir string) (names []string, lines map[string][]string) {
	segs, err := segments(dir)
	require.NoError(t, err)
	lines = map[string][]string{}
	for _, s := range segs {
		b, err := os.ReadFile(filepath.Join(dir, s.name))
		require.NoError(t, err)
		names = append(names, s.name)
		lines[s.name] = strings.SplitAfter(string(b), "\n")
		if last := lines[s.name]; len(last) > 0 && last[len(last)-1] == "" {
			lines[s.name] = last[:len(last)-1]
		}
	}
	return names, lines
}

func writeLines(t *testing.T, dir, name string, lines []string) {
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "")), 0o640))
}

// resign is what someone with the files (and the key next to them) does
// after editing records: drop the tree and checkpoint and let the
// distributor rebuild and sign them.
func resign(t *testing.T, dir string) {
	require.NoError(t, os.Remove(filepath.Join(dir, hashFile)))
	require.NoError(t, os.Remove(filepath.Join(dir, checkpointFile)))
	l, err := Open(dir, keyed(Options{SegmentBytes: 4 << 10}))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	_, err = verifyDir(dir)
	require.NoError(t, err, "the rewritten files agree with each other")
}

func TestVerifyDetectsTampering(t *testing.T) {
	cases := map[string]struct {
		tamper func(t *testing.T, dir string)
		want   []string // substrings of the error
	}{
		"edited field": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			l := lines[names[0]]
			l[4] = strings.Replace(l[4], `"reason":"<x> & y"`, `"reason":"nothing"`, 1)
			require.Contains(t, l[4], `"seq":5`)
			writeLines(t, dir, names[0], l)
		}, []string{names0(), ":5:", "at seq 5", "tree.hash does not hold the tree hashes of this record"}},
		"edited, tree rebuilt and re-signed": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			l := lines[names[0]]
			l[3] = strings.Replace(l[3], `"reason":"<x> & y"`, `"reason":"forged"`, 1)
			writeLines(t, dir, names[0], l)
			resign(t, dir)
		}, []string{"earlier checkpoint 1", "the tree of the first 60 records hashes to", "rewritten, or the log forked"}},
		"last record deleted and re-signed": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			last := names[len(names)-1]
			l := lines[last]
			writeLines(t, dir, last, l[:len(l)-1])
			resign(t, dir)
		}, []string{"earlier checkpoint 1", "the log ends at seq 59", "records 60..60 were removed", "truncated"}},
		"reordered": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			l := lines[names[0]]
			l[6], l[7] = l[7], l[6]
			writeLines(t, dir, names[0], l)
		}, []string{":7:", "found seq 8", "out of order"}},
		"deleted": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			l := lines[names[0]]
			writeLines(t, dir, names[0], append(l[:9:9], l[10:]...))
		}, []string{":10:", "records 10..10 are missing"}},
		"truncated tail": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			last := names[len(names)-1]
			l := lines[last]
			writeLines(t, dir, last, l[:len(l)-3])
		}, []string{"checkpoint", "records 58..60 were removed", "truncated"}},
		"torn last line": {func(t *testing.T, dir string) {
			names, lines := segLines(t, dir)
			last := names[len(names)-1]
			l := lines[last]
			l[len(l)-1] = l[len(l)-1][:40]
			writeLines(t, dir, last, l)
		}, []string{"incomplete last line", "truncated"}},
		"segment deleted": {func(t *testing.T, dir string) {
			names, _ := segLines(t, dir)
			require.Greater(t, len(names), 2)
			require.NoError(t, os.Remove(filepath.Join(dir, names[1])))
		}, []string{"a segment was deleted"}},
		"first segment deleted": {func(t *testing.T, dir string) {
			names, _ := segLines(t, dir)
			require.NoError(t, os.Remove(filepath.Join(dir, names[0])))
		}, []string{"seq 1 was expected", "records 1..", "are missing (a segment was deleted)"}},
		"checkpoint deleted": {func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, checkpointFile)))
		}, []string{"checkpoint", "no signed checkpoint"}},
		"checkpoint signed by another key": {func(t *testing.T, dir string) {
			other, _, err := NewKey("meshguard.test/decisions")
			require.NoError(t, err)
			require.NoError(t, os.Remove(filepath.Join(dir, checkpointFile)))
			l, err := Open(dir, Options{Key: &other, SegmentBytes: 4 << 10})
			require.NoError(t, err)
			require.NoError(t, l.Close())
		}, []string{"checkpoint", "signature"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := fill(t, dir, 60, 7, Options{SegmentBytes: 4 << 10})
			require.NoError(t, l.Close())
			earlier, err := os.ReadFile(filepath.Join(dir, checkpointFile))
			require.NoError(t, err)
			_, err = verifyDir(dir, earlier)
			require.NoError(t, err)
			tc.tamper(t, dir)
			_, err = verifyDir(dir, earlier)
			require.Error(t, err)
			var ce *ChainError
			require.True(t, errors.As(err, &ce), "%T %v", err, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func names0() string { return segName(1) }

func TestOpenRefusesTruncatedLogAndRecoversTornWrite(t *testing.T) {
	dir := t.TempDir()
	l := fill(t, dir, 30, 10, Options{})
	require.NoError(t, l.Close())
	names, lines := segLines(t, dir)

	// A torn write after the last HEAD update (crash mid-batch): the partial
	// line is cut and the log continues from the head.
	f, err := os.OpenFile(filepath.Join(dir, names[0]), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"decision":"allow","hash":"ab`)
	require.NoError(t, err)
	f.Close()
	l, err = Open(dir, keyed(Options{}))
	require.NoError(t, err)
	assert.Equal(t, uint64(30), l.Head().Seq)
	_, err = l.Append([]Record{rec(t, 31, "deny", "s")})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	_, err = verifyDir(dir)
	require.NoError(t, err)

	// Records removed below HEAD: refused.
	writeLines(t, dir, names[0], lines[names[0]][:20])
	_, err = Open(dir, keyed(Options{}))
	require.ErrorIs(t, err, ErrTruncated)
}

func TestQuery(t *testing.T) {
	dir := t.TempDir()
	l := fill(t, dir, 100, 25, Options{SegmentBytes: 10 << 10})
	defer l.Close()

	res, err := l.Query(Query{Decision: "deny", Subject: "spiffe://grid.example/meter-0", Limit: 5})
	require.NoError(t, err)
	require.Len(t, res.Records, 5)
	seqs := func(rs []json.RawMessage) []uint64 {
		var out []uint64
		for _, r := range rs {
			seq, err := parseStored(r)
			require.NoError(t, err)
			out = append(out, seq)
		}
		return out
	}
	// deny every 3rd (i%3==0), meter-0 when i even → i%6==0 → seq 1,7,13,...
	assert.Equal(t, []uint64{1, 7, 13, 19, 25}, seqs(res.Records))
	assert.Equal(t, uint64(25), res.Next)
	res, err = l.Query(Query{Decision: "deny", Subject: "spiffe://grid.example/meter-0", Limit: 5, AfterSeq: res.Next})
	require.NoError(t, err)
	assert.Equal(t, []uint64{31, 37, 43, 49, 55}, seqs(res.Records))

	res, err = l.Query(Query{Since: t0.Add(10 * time.Second), Until: t0.Add(12 * time.Second)})
	require.NoError(t, err)
	assert.Equal(t, []uint64{11, 12, 13}, seqs(res.Records))
	assert.Zero(t, res.Next)

	var buf bytes.Buffer
	head := l.Head()
	err = l.WriteLog(&buf, head)
	require.NoError(t, err)
	v, err := NewTreeVerifier(Anchor{})
	require.NoError(t, err)
	require.NoError(t, v.VerifyReader("stream", &buf))
	assert.Equal(t, head, v.Head())
	assert.Equal(t, uint64(100), v.Count)
}

func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{Key: testKey, CheckpointEvery: time.Second})
			require.NoError(b, err)
			defer l.Close()
			recs := make([]Record, batch)
			for i := range recs {
				recs[i] = rec(b, i, "allow", "spiffe://grid.example/meter")
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, err := l.Append(recs)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, keyed(Options{SegmentBytes: 32 << 10}))
	require.NoError(t, err)
	const writers, batches, size = 16, 10, 5
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				recs := make([]Record, size)
				for i := range recs {
					recs[i] = rec(t, w*1000+b*10+i, "allow", fmt.Sprintf("w%d", w))
				}
				res, err := l.Append(recs)
				assert.NoError(t, err)
				first, last := res.First, res.Last
				assert.Equal(t, first+size-1, last)
				mu.Lock()
				for s := first; s <= last; s++ {
					assert.False(t, seen[s], "seq %d assigned twice", s)
					seen[s] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.NoError(t, l.Close())
	assert.Len(t, seen, writers*batches*size)
	rep, err := verifyDir(dir)
	require.NoError(t, err)
	assert.Equal(t, uint64(writers*batches*size), rep.Records)
}

// TestAppendDropsRetriedRecords: a client retrying a batch whose answer it
// lost (also across a restart, records kept after a crash) stores nothing
// twice; the same decision_id from another uploader is another record.
func TestAppendDropsRetriedRecords(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, keyed(Options{}))
	require.NoError(t, err)
	batch := func(by string, ids ...int) []Record {
		var out []Record
		for _, i := range ids {
			r := rec(t, i, "deny", "s")
			Stamp([]Record{r}, by, t0)
			out = append(out, r)
		}
		return out
	}
	res, err := l.Append(batch("spiffe://grid.example/proxy-a", 1, 2, 3))
	require.NoError(t, err)
	assert.Equal(t, Appended{First: 1, Last: 3, Accepted: 3}, res)
	res, err = l.Append(batch("spiffe://grid.example/proxy-a", 2, 3, 4, 4))
	require.NoError(t, err)
	assert.Equal(t, Appended{First: 4, Last: 4, Accepted: 1, Duplicates: 3}, res)
	res, err = l.Append(batch("spiffe://grid.example/proxy-b", 1))
	require.NoError(t, err)
	assert.Equal(t, 1, res.Accepted, "ids are per uploader")
	require.NoError(t, l.Close())

	l, err = Open(dir, keyed(Options{}))
	require.NoError(t, err)
	defer l.Close()
	res, err = l.Append(batch("spiffe://grid.example/proxy-a", 1, 4, 5))
	require.NoError(t, err)
	assert.Equal(t, Appended{First: 6, Last: 6, Accepted: 1, Duplicates: 2}, res, "remembered across a restart")
	res, err = l.Append(batch("spiffe://grid.example/proxy-a", 5))
	require.NoError(t, err)
	assert.Equal(t, Appended{Duplicates: 1}, res)
	rep, err := verifyDir(dir)
	require.NoError(t, err)
	assert.Equal(t, uint64(6), rep.Records)

	// The window forgets the oldest pairs first.
	d := newDedupe(2)
	for _, id := range []string{"a", "b", "c"} {
		d.add(makeKey("p", id))
	}
	assert.False(t, d.has(makeKey("p", "a")))
	assert.True(t, d.has(makeKey("p", "b")) && d.has(makeKey("p", "c")))
}

// TestRetentionKeepsAVerifiableChain: segments past the retention size or
// age go, an anchor records where the kept chain starts, and offline
// verification, reopening, queries and the export all work from there.
func TestRetentionKeepsAVerifiableChain(t *testing.T) {
	now := t0
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4 << 10, RetainBytes: 12 << 10, Now: func() time.Time { return now }}
	l, err := Open(dir, keyed(opts))
	require.NoError(t, err)
	for i := range 120 {
		r := rec(t, i, "deny", "s")
		Stamp([]Record{r}, "p", now)
		_, err := l.Append([]Record{r})
		require.NoError(t, err)
	}
	anchor := l.Anchor()
	require.NotZero(t, anchor.Seq, "older segments were removed")
	names, _ := segLines(t, dir)
	var total int64
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		require.NoError(t, err)
		total += fi.Size()
	}
	assert.LessOrEqual(t, total, int64(12<<10)+4<<10, "what is kept stays near the budget")
	require.Equal(t, segName(anchor.Seq+1), names[0])

	var buf bytes.Buffer
	require.NoError(t, l.WriteLog(&buf, l.Head()))
	v, err := NewTreeVerifier(anchor, l.Latest().Size)
	require.NoError(t, err)
	require.NoError(t, v.VerifyReader("export", &buf))
	assert.Equal(t, l.Head(), v.Head())
	require.NoError(t, v.Check("latest", l.Latest()))
	res, err := l.Query(Query{Limit: 1})
	require.NoError(t, err)
	require.Len(t, res.Records, 1)
	assert.Contains(t, string(res.Records[0]), fmt.Sprintf(`"seq":%d`, anchor.Seq+1))
	require.NoError(t, l.Close())

	rep, err := verifyDir(dir)
	require.NoError(t, err)
	assert.Equal(t, anchor.Seq, rep.Pruned)
	assert.Equal(t, uint64(120), rep.Head.Seq)
	assert.Equal(t, 120-anchor.Seq, rep.Records)

	// By age: everything but the current segment is older than a day.
	now = now.Add(48 * time.Hour)
	l, err = Open(dir, keyed(Options{SegmentBytes: 4 << 10, Retention: 24 * time.Hour, Now: func() time.Time { return now }}))
	require.NoError(t, err)
	defer l.Close()
	names, _ = segLines(t, dir)
	assert.Len(t, names, 1)
	_, err = verifyDir(dir)
	require.NoError(t, err)

	// Removing the anchor is noticed: the kept segments do not start at 1.
	require.NoError(t, os.Remove(filepath.Join(dir, anchorFile)))
	_, err = verifyDir(dir)
	var ce *ChainError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, err.Error(), "missing")
}

// TestCloseRightAfterOpenStopsTheSigner: Close never waits for a signer
// that has not started yet (it once read its stop channel too late).
func TestCloseRightAfterOpenStopsTheSigner(t *testing.T) {
	for range 50 {
		l, err := Open(t.TempDir(), keyed(Options{CheckpointEvery: time.Millisecond, Logger: quiet()}))
		require.NoError(t, err)
		require.NoError(t, l.Close())
	}
	// And the signer signs while the log grows.
	dir := t.TempDir()
	l, err := Open(dir, keyed(Options{CheckpointEvery: 5 * time.Millisecond, Logger: quiet()}))
	require.NoError(t, err)
	defer l.Close()
	_, err = l.Append([]Record{rec(t, 1, "deny", "s")})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return l.Latest().Size == 1 }, 5*time.Second, 5*time.Millisecond)
}
