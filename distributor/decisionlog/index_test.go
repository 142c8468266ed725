package decisionlog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// genRecord is a varied guard record; the same i always gives the same record.
type genRecord struct {
	time                                  time.Time
	decision                              string
	rules                                 []string
	rev                                   uint64
	subject, device, path, proxy, noRules string
}

func gen(i int) genRecord {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	decs := []string{"allow", "allow", "allow", "deny", "dry-run-deny", "error"}
	g := genRecord{
		time:     t0.Add(time.Duration(i) * 1500 * time.Millisecond),
		decision: decs[r.IntN(len(decs))],
		rev:      uint64(1 + r.IntN(3)),
		subject:  fmt.Sprintf("spiffe://grid.example/ns/grid/sa/%s", []string{"meter", "scada", "historian"}[r.IntN(3)]),
		device:   []string{"", "inv-0001", "inv-0002", "meter-17"}[r.IntN(4)],
		path:     fmt.Sprintf("/api/v1/%s/%d", []string{"inverters", "meters"}[r.IntN(2)], r.IntN(5)),
		proxy:    fmt.Sprintf("sidecar~10.0.0.%d~pod-%d", r.IntN(3), r.IntN(3)),
	}
	switch r.IntN(4) {
	case 0:
	case 1:
		g.rules = []string{"read-telemetry"}
	case 2:
		g.rules = []string{"write-setpoint", "bind-device"}
	default:
		g.rules = []string{"deny-revoked"}
	}
	return g
}

func (g genRecord) record(t testing.TB) Record {
	t.Helper()
	m := map[string]any{"time": g.time.Format(time.RFC3339Nano), "decision": g.decision, "rule_ids": g.rules,
		"bundle_revision": g.rev, "subject": g.subject, "path": g.path, "proxy": g.proxy, "method": "GET",
		"reason": "<script>alert(1)</script>"}
	if g.rules == nil {
		m["rule_ids"] = []string{}
	}
	if g.device != "" {
		m["device_id"] = g.device
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	r, err := DecodeRecord(b)
	require.NoError(t, err)
	return r
}

// matches is the reference: Filter semantics written plainly.
func (g genRecord) matches(f Filter, uploader string) bool {
	str := func(pattern, v string) bool {
		if pattern == "" {
			return true
		}
		if pre, ok := strings.CutSuffix(pattern, "*"); ok {
			return strings.HasPrefix(v, pre)
		}
		return v == pattern
	}
	rule := f.Rule == "" || (f.Rule == NoRule && len(g.rules) == 0)
	for _, r := range g.rules {
		rule = rule || str(f.Rule, r)
	}
	return (f.Decision == "" || f.Decision == g.decision) && rule &&
		str(f.Subject, g.subject) && str(f.Device, g.device) && str(f.Path, g.path) && str(f.Proxy, g.proxy) &&
		str(f.Uploader, uploader) && (f.Revision == nil || *f.Revision == g.rev) &&
		(f.Since.IsZero() || !g.time.Before(f.Since)) && (f.Until.IsZero() || !g.time.After(f.Until))
}

const testUploader = "spiffe://grid.example/ns/grid/sa/guard"

// genLog appends records gen(0..n-1) in batches, stamped by testUploader.
func genLog(t testing.TB, dir string, n int, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, keyed(opts))
	require.NoError(t, err)
	appendGen(t, l, 0, n)
	return l
}

func appendGen(t testing.TB, l *Log, from, to int) {
	t.Helper()
	for i := from; i < to; i += 50 {
		var batch []Record
		for j := i; j < min(i+50, to); j++ {
			batch = append(batch, gen(j).record(t))
		}
		Stamp(batch, testUploader, t0)
		_, err := l.Append(batch)
		require.NoError(t, err)
	}
}

func openIndex(t testing.TB, l *Log) *Index {
	t.Helper()
	ix := OpenIndex(l, IndexOptions{Poll: time.Hour, Logger: quiet()})
	t.Cleanup(func() { ix.Close() })
	require.NoError(t, ix.CatchUp(context.Background()))
	return ix
}

func rev(n uint64) *uint64 { return &n }

// allPages follows Next from the newest page and returns the seqs seen.
func allPages(t *testing.T, ix *Index, f Filter, limit int) ([]uint64, uint64) {
	t.Helper()
	var seqs []uint64
	var before, total uint64
	for range 10000 {
		p, err := ix.Search(context.Background(), f, PageRequest{Before: before, Limit: limit})
		require.NoError(t, err)
		total = p.Total
		for _, r := range p.Records {
			seqs = append(seqs, r.Seq)
			assert.True(t, r.Verified, "seq %d", r.Seq)
		}
		if p.Next == 0 {
			return seqs, total
		}
		require.True(t, before == 0 || p.Next < before, "paging goes backwards")
		before = p.Next
	}
	t.Fatal("paging did not end")
	return nil, 0
}

func TestIndexSearchAgreesWithTheReference(t *testing.T) {
	const n = 3000
	l := genLog(t, t.TempDir(), n, Options{SegmentBytes: 64 << 10, Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	require.Equal(t, uint64(n), ix.Indexed())

	for name, f := range map[string]Filter{
		"all":             {},
		"deny":            {Decision: "deny"},
		"dry-run":         {Decision: "dry-run-deny"},
		"rule":            {Rule: "bind-device"},
		"rule prefix":     {Rule: "write-*"},
		"no rule":         {Rule: NoRule},
		"subject":         {Subject: "spiffe://grid.example/ns/grid/sa/meter"},
		"subject prefix":  {Subject: "spiffe://grid.example/ns/grid/*"},
		"device":          {Device: "inv-0002"},
		"path prefix":     {Path: "/api/v1/inverters/*"},
		"path exact":      {Path: "/api/v1/meters/3"},
		"revision":        {Revision: rev(2)},
		"proxy":           {Proxy: "sidecar~10.0.0.1~pod-2"},
		"uploader":        {Uploader: testUploader},
		"other uploader":  {Uploader: "token:ci"},
		"time range":      {Since: t0.Add(10 * time.Minute), Until: t0.Add(20 * time.Minute)},
		"since":           {Since: t0.Add(70 * time.Minute)},
		"combined":        {Decision: "deny", Path: "/api/v1/inverters/*", Revision: rev(1), Since: t0.Add(5 * time.Minute)},
		"unknown subject": {Subject: "spiffe://elsewhere/x"},
	} {
		t.Run(name, func(t *testing.T) {
			var want []uint64
			for i := n - 1; i >= 0; i-- {
				if gen(i).matches(f, testUploader) {
					want = append(want, uint64(i+1))
				}
			}
			got, total := allPages(t, ix, f, 97)
			assert.Equal(t, uint64(len(want)), total)
			if len(want) == 0 {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestIndexPagesAndRecords(t *testing.T) {
	l := genLog(t, t.TempDir(), 120, Options{Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	ctx := context.Background()

	p, err := ix.Search(ctx, Filter{}, PageRequest{Limit: 50})
	require.NoError(t, err)
	assert.Equal(t, uint64(120), p.Total)
	assert.Equal(t, uint64(120), p.Head)
	assert.Equal(t, uint64(120), p.Indexed)
	require.Len(t, p.Records, 50)
	assert.Equal(t, uint64(120), p.Records[0].Seq)
	assert.Equal(t, uint64(71), p.Next)
	var r Record
	require.NoError(t, json.Unmarshal(p.Records[0].Record, &r))
	assert.JSONEq(t, `120`, string(r[FieldSeq]), "the stored line, with its chain fields")

	p, err = ix.Search(ctx, Filter{}, PageRequest{Before: 21, Limit: 50})
	require.NoError(t, err)
	require.Len(t, p.Records, 20)
	assert.Equal(t, uint64(0), p.Next, "last page")

	p, err = ix.Search(ctx, Filter{}, PageRequest{Limit: 100000})
	require.NoError(t, err)
	assert.Len(t, p.Records, 120, "limit capped at MaxPageSize, which is above 120")

	sr, err := ix.Record(ctx, 7)
	require.NoError(t, err)
	assert.True(t, sr.Verified)
	require.NoError(t, json.Unmarshal(sr.Record, &r))
	s, _ := r.str("path")
	assert.Equal(t, gen(6).path, s)
	for _, seq := range []uint64{0, 121} {
		_, err = ix.Record(ctx, seq)
		assert.ErrorIs(t, err, ErrNoRecord)
	}
}

func TestIndexRejectsBadFilters(t *testing.T) {
	l := genLog(t, t.TempDir(), 1, Options{Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	for name, tc := range map[string]struct {
		f    Filter
		want string
	}{
		"decision": {Filter{Decision: "maybe"}, `"maybe"`},
		"long":     {Filter{Path: strings.Repeat("a", MaxFilterValue+1)}, "path filter"},
		"nul":      {Filter{Subject: "a\x00b"}, "NUL"},
		"range":    {Filter{Since: t0, Until: t0.Add(-time.Second)}, "before since"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ix.Search(context.Background(), tc.f, PageRequest{})
			assert.ErrorContains(t, err, tc.want)
			_, err = ix.Stats(context.Background(), tc.f, StatsRequest{})
			assert.ErrorContains(t, err, tc.want)
		})
	}
	_, err := ix.Values(context.Background(), "colour", 10)
	assert.ErrorContains(t, err, "unknown column")
}

func TestIndexFollowsAppendsAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l := genLog(t, dir, 500, Options{SegmentBytes: 32 << 10, Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	appendGen(t, l, 500, 2600)
	// No CatchUp: a query catches up with a small lag itself.
	p, err := ix.Search(context.Background(), Filter{}, PageRequest{Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, uint64(2600), p.Total)
	assert.Equal(t, uint64(2600), p.Records[0].Seq)
	segs, err := segments(dir)
	require.NoError(t, err)
	assert.Greater(t, len(segs), 10)
	for _, seq := range []uint64{1, 499, 500, 501, 1777, 2600} {
		sr, err := ix.Record(context.Background(), seq)
		require.NoError(t, err)
		var r Record
		require.NoError(t, json.Unmarshal(sr.Record, &r))
		assert.Equal(t, fmt.Sprint(seq), string(r[FieldSeq]))
	}
	in := ix.Integrity()
	assert.Empty(t, in.Problem)
	assert.Equal(t, l.Head(), in.Head)
	assert.Equal(t, uint64(2600), in.Verified)
}

func TestIndexStats(t *testing.T) {
	const n = 2400 // one hour at 1.5 s a record
	l := genLog(t, t.TempDir(), n, Options{Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	ctx := context.Background()

	st, err := ix.Stats(ctx, Filter{}, StatsRequest{Buckets: 60, TopRules: 2})
	require.NoError(t, err)
	assert.Equal(t, uint64(n), st.Total)
	assert.Equal(t, uint64(0), st.OutOfRange)
	assert.Equal(t, t0, st.From)
	assert.Equal(t, Duration(time.Minute), st.Bucket)
	require.LessOrEqual(t, len(st.Series), 60)
	var sum, deny uint64
	ruleTotals := map[string]uint64{}
	ruleDryRun := map[string]uint64{}
	for i := range n {
		g := gen(i)
		if g.decision == "deny" {
			deny++
		}
		rules := g.rules
		if len(rules) == 0 {
			rules = []string{NoRule}
		}
		for _, r := range rules {
			ruleTotals[r]++
			if g.decision == "dry-run-deny" {
				ruleDryRun[r]++
			}
		}
	}
	var gotDeny uint64
	for b, s := range st.Series {
		assert.Equal(t, s.Allow+s.Deny+s.DryRun+s.Error, s.Total)
		assert.Equal(t, t0.Add(time.Duration(b)*time.Minute), s.Start)
		sum += s.Total
		gotDeny += s.Deny
	}
	assert.Equal(t, uint64(n), sum)
	assert.Equal(t, deny, gotDeny)
	require.Len(t, st.Rules, 2)
	require.NotNil(t, st.Other)
	var all []RuleCounts
	all = append(all, st.Rules...)
	for _, rc := range all {
		assert.Equal(t, ruleTotals[rc.Rule], rc.Total, rc.Rule)
		assert.Equal(t, ruleDryRun[rc.Rule], rc.DryRun, rc.Rule)
		var c uint64
		for _, v := range rc.Counts {
			c += v
		}
		assert.Equal(t, rc.Total, c)
	}
	var rest uint64
	for r, c := range ruleTotals {
		if r != st.Rules[0].Rule && r != st.Rules[1].Rule {
			rest += c
		}
	}
	assert.Equal(t, rest, st.Other.Total)
	assert.GreaterOrEqual(t, st.Rules[0].Total, st.Rules[1].Total)

	// A filtered, bounded range: records outside are not charted.
	st, err = ix.Stats(ctx, Filter{Decision: "dry-run-deny", Since: t0, Until: t0.Add(10*time.Minute - time.Nanosecond)}, StatsRequest{Buckets: 10})
	require.NoError(t, err)
	var want uint64
	for i := range n {
		if g := gen(i); g.decision == "dry-run-deny" && g.time.Before(t0.Add(10*time.Minute)) {
			want++
		}
	}
	assert.Equal(t, want, st.Total)
	assert.Len(t, st.Series, 10)
	for _, s := range st.Series {
		assert.Equal(t, s.DryRun, s.Total)
	}
}

func TestStatsRangeIsBoundedAgainstWildClocks(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, keyed(Options{Logger: quiet()}))
	require.NoError(t, err)
	defer l.Close()
	now := time.Now().UTC().Truncate(time.Second)
	var batch []Record
	for i, ts := range []time.Time{now.Add(-time.Minute), now, now.AddDate(50, 0, 0), now.AddDate(-30, 0, 0), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r, err := DecodeRecord(fmt.Appendf(nil, `{"time":%q,"decision":"deny","rule_ids":["r%d"]}`, ts.Format(time.RFC3339), i))
		require.NoError(t, err)
		batch = append(batch, r)
	}
	_, err = l.Append(batch)
	require.NoError(t, err)
	ix := openIndex(t, l)
	st, err := ix.Stats(context.Background(), Filter{}, StatsRequest{Buckets: 100})
	require.NoError(t, err)
	assert.Equal(t, uint64(5), st.Total)
	assert.Equal(t, uint64(3), st.OutOfRange, "50 years ahead, year 9999 and 30 years back are not charted")
	assert.LessOrEqual(t, time.Duration(st.Bucket), 7*24*time.Hour, "at most a year is charted")

	st, err = ix.Stats(context.Background(), Filter{Since: time.Date(2, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}, StatsRequest{Buckets: 500})
	require.NoError(t, err)
	assert.LessOrEqual(t, len(st.Series), 500)
	assert.Equal(t, uint64(4), st.Total, "year 9999 is beyond what the index can place in time")
	assert.Equal(t, uint64(1), st.OutOfRange, "the range ends an hour from now: 50 years ahead is out")
}

func TestIndexValues(t *testing.T) {
	const n = 1000
	l := genLog(t, t.TempDir(), n, Options{Logger: quiet()})
	defer l.Close()
	ix := openIndex(t, l)
	count := func(f func(g genRecord) []string) map[string]uint64 {
		m := map[string]uint64{}
		for i := range n {
			for _, v := range f(gen(i)) {
				if v != "" {
					m[v]++
				}
			}
		}
		return m
	}
	for col, f := range map[string]func(g genRecord) []string{
		"decision": func(g genRecord) []string { return []string{g.decision} },
		"subject":  func(g genRecord) []string { return []string{g.subject} },
		"device":   func(g genRecord) []string { return []string{g.device} },
		"path":     func(g genRecord) []string { return []string{g.path} },
		"proxy":    func(g genRecord) []string { return []string{g.proxy} },
		"revision": func(g genRecord) []string { return []string{fmt.Sprint(g.rev)} },
		"uploader": func(genRecord) []string { return []string{testUploader} },
		"rule": func(g genRecord) []string {
			if len(g.rules) == 0 {
				return []string{NoRule}
			}
			return g.rules
		},
	} {
		t.Run(col, func(t *testing.T) {
			want := count(f)
			got, err := ix.Values(context.Background(), col, 3)
			require.NoError(t, err)
			require.Len(t, got, min(3, len(want)))
			for i, vc := range got {
				assert.Equal(t, want[vc.Value], vc.Count, vc.Value)
				if i > 0 {
					assert.GreaterOrEqual(t, got[i-1].Count, vc.Count)
				}
			}
			for v, c := range want {
				if !slices.ContainsFunc(got, func(vc ValueCount) bool { return vc.Value == v }) {
					assert.LessOrEqual(t, c, got[len(got)-1].Count, "%s is more frequent than the listed ones", v)
				}
			}
		})
	}
}

// closedSegmentedLog is a closed log of 300 records in several segments.
func closedSegmentedLog(t *testing.T) (string, []segment) {
	dir := t.TempDir()
	l := genLog(t, dir, 300, Options{SegmentBytes: 16 << 10, Logger: quiet()})
	require.NoError(t, l.Close())
	segs, err := segments(dir)
	require.NoError(t, err)
	require.Greater(t, len(segs), 3)
	return dir, segs
}

func TestIndexReportsTamperingHonestly(t *testing.T) {
	dir, segs := closedSegmentedLog(t)

	// Edit one record's path in the second segment.
	victim := filepath.Join(dir, segs[1].name)
	data, err := os.ReadFile(victim)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(data), "\n")
	lines[2] = strings.Replace(lines[2], `"path":"/api`, `"path":"/API`, 1)
	require.NoError(t, os.WriteFile(victim, []byte(strings.Join(lines, "")), 0o640))
	edited := segs[1].first + 2

	l, err := Open(dir, keyed(Options{Logger: quiet()}))
	require.NoError(t, err)
	defer l.Close()
	ix := openIndex(t, l)
	in := ix.Integrity()
	assert.Equal(t, edited, in.BadSeq)
	assert.Equal(t, edited-1, in.Verified)
	assert.Contains(t, in.Problem, "leaf hash differs from the stored tree")
	assert.Contains(t, in.Problem, fmt.Sprintf("%s line 3", segs[1].name))
	// Every record is still searchable; those past the break are not verified.
	assert.Equal(t, uint64(300), ix.Indexed())
	sr, err := ix.Record(context.Background(), edited)
	require.NoError(t, err)
	assert.False(t, sr.Verified)
	sr, err = ix.Record(context.Background(), edited-1)
	require.NoError(t, err)
	assert.True(t, sr.Verified)
	p, err := ix.Search(context.Background(), Filter{Path: "/API*"}, PageRequest{})
	require.NoError(t, err)
	require.Len(t, p.Records, 1)
	assert.Equal(t, edited, p.Records[0].Seq)
}

func TestIndexKeepsSeqsAcrossADeletedSegment(t *testing.T) {
	dir, segs := closedSegmentedLog(t)
	require.NoError(t, os.Remove(filepath.Join(dir, segs[1].name)))

	l, err := Open(dir, keyed(Options{Logger: quiet()}))
	require.NoError(t, err)
	defer l.Close()
	ix := openIndex(t, l)
	in := ix.Integrity()
	assert.Equal(t, segs[1].first, in.BadSeq)
	assert.Contains(t, in.Problem, "missing")
	assert.Equal(t, uint64(300), ix.Indexed())
	_, err = ix.Record(context.Background(), segs[1].first)
	assert.ErrorIs(t, err, ErrNoRecord)
	sr, err := ix.Record(context.Background(), segs[2].first)
	require.NoError(t, err)
	var r Record
	require.NoError(t, json.Unmarshal(sr.Record, &r))
	assert.Equal(t, fmt.Sprint(segs[2].first), string(r[FieldSeq]), "positions stay seqs after the gap")
	assert.False(t, sr.Verified)
}

func TestIndexLargeLogAnswersWhileIndexing(t *testing.T) {
	l := genLog(t, t.TempDir(), 5000, Options{Logger: quiet()})
	defer l.Close()
	ix := OpenIndex(l, IndexOptions{Poll: time.Hour, WaitLag: 10, Logger: quiet()})
	defer ix.Close()
	// The background indexing may be anywhere; the answer says how far.
	p, err := ix.Search(context.Background(), Filter{}, PageRequest{Limit: 5})
	require.NoError(t, err)
	assert.Equal(t, uint64(5000), p.Head)
	assert.LessOrEqual(t, p.Indexed, p.Head)
	assert.Equal(t, p.Indexed, p.Total)
	require.NoError(t, ix.CatchUp(context.Background()))
	p, err = ix.Search(context.Background(), Filter{}, PageRequest{Limit: 5})
	require.NoError(t, err)
	assert.Equal(t, uint64(5000), p.Indexed)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
