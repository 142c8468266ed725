// Package searchtest is a conformance suite for decisionlog.Searcher
// implementations: pages checked against a plain reference of the Filter
// semantics, and stats and values checked against the file log's Index
// over the same records.
package searchtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// T0 is the time of the first generated record; record i is 1.5 s later
// per i.
var T0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// Uploader stamps every generated record.
const Uploader = "spiffe://grid.example/ns/grid/sa/guard"

// Gen describes generated record i (the same i always gives the same).
type Gen struct {
	Time                         time.Time // zero: the record has no time
	Decision                     string
	Rules                        []string
	Rev                          uint64
	Subject, Device, Path, Proxy string
}

// Generate is record i: varied values, and every 97th an odd one (a
// clock far off, a NUL byte in the subject, a rule named twice, an aggregate).
func Generate(i int) Gen {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	decs := []string{"allow", "allow", "allow", "deny", "dry-run-deny", "error"}
	g := Gen{
		Time:     T0.Add(time.Duration(i) * 1500 * time.Millisecond),
		Decision: decs[r.IntN(len(decs))],
		Rev:      uint64(1 + r.IntN(12)),
		Subject:  fmt.Sprintf("spiffe://grid.example/ns/grid/sa/%s", []string{"meter", "scada", "historian"}[r.IntN(3)]),
		Device:   []string{"", "inv-0001", "inv-0002", "meter-17"}[r.IntN(4)],
		Path:     fmt.Sprintf("/api/v1/%s/%d", []string{"inverters", "meters"}[r.IntN(2)], r.IntN(5)),
		Proxy:    fmt.Sprintf("sidecar~10.0.0.%d~pod-%d", r.IntN(3), r.IntN(3)),
	}
	switch r.IntN(4) {
	case 0:
	case 1:
		g.Rules = []string{"read-telemetry"}
	case 2:
		g.Rules = []string{"write-setpoint", "bind-device"}
	default:
		g.Rules = []string{"deny-revoked"}
	}
	if i%97 == 5 {
		switch i % 4 {
		case 0:
			g.Time = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) // a clock far off
		case 1:
			g.Subject = "spiffe://grid.example/ns/grid/sa/meter\x00evil"
		case 2:
			g.Rules = []string{"write-setpoint", "write-setpoint"}
		case 3:
			g.Decision = "unavailable"
		}
	}
	return g
}

// Record is the generated record, stamped by Uploader.
func (g Gen) Record(t testing.TB) decisionlog.Record {
	t.Helper()
	m := map[string]any{"decision": g.Decision, "rule_ids": g.Rules,
		"bundle_revision": g.Rev, "subject": g.Subject, "path": g.Path, "proxy": g.Proxy, "method": "GET"}
	if !g.Time.IsZero() {
		m["time"] = g.Time.Format(time.RFC3339Nano)
	}
	if g.Rules == nil {
		m["rule_ids"] = []string{}
	}
	if g.Device != "" {
		m["device_id"] = g.Device
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	r, err := decisionlog.DecodeRecord(b)
	require.NoError(t, err)
	decisionlog.Stamp([]decisionlog.Record{r}, Uploader, T0)
	return r
}

// Matches is the reference: the Filter semantics written plainly.
func (g Gen) Matches(f decisionlog.Filter) bool {
	str := func(pattern, v string) bool {
		if pattern == "" {
			return true
		}
		if pre, ok := strings.CutSuffix(pattern, "*"); ok {
			return strings.HasPrefix(v, pre)
		}
		return v == pattern
	}
	rule := f.Rule == "" || (f.Rule == decisionlog.NoRule && len(g.Rules) == 0)
	for _, r := range g.Rules {
		rule = rule || str(f.Rule, r)
	}
	timed := f.Since.IsZero() && f.Until.IsZero() ||
		!g.Time.IsZero() && (f.Since.IsZero() || !g.Time.Before(f.Since)) && (f.Until.IsZero() || !g.Time.After(f.Until))
	return (f.Decision == "" || f.Decision == g.Decision) && rule &&
		str(f.Subject, g.Subject) && str(f.Device, g.Device) && str(f.Path, g.Path) && str(f.Proxy, g.Proxy) &&
		str(f.Uploader, Uploader) && (f.Revision == nil || *f.Revision == g.Rev) && timed
}

// Batches are records 0..n-1 in batches of 50.
func Batches(t testing.TB, n int) [][]decisionlog.Record {
	var out [][]decisionlog.Record
	for i := 0; i < n; i += 50 {
		var b []decisionlog.Record
		for j := i; j < min(i+50, n); j++ {
			b = append(b, Generate(j).Record(t))
		}
		out = append(out, b)
	}
	return out
}

// Open appends batches to a fresh log and returns its searcher, caught
// up and verified.
type Open func(t *testing.T, batches [][]decisionlog.Record) decisionlog.Searcher

func rev(n uint64) *uint64 { return &n }

// Filters are the filters the suite checks.
var Filters = map[string]decisionlog.Filter{
	"all":             {},
	"deny":            {Decision: "deny"},
	"dry-run":         {Decision: "dry-run-deny"},
	"unavailable":     {Decision: "unavailable"},
	"rule":            {Rule: "bind-device"},
	"rule prefix":     {Rule: "write-*"},
	"no rule":         {Rule: decisionlog.NoRule},
	"subject":         {Subject: "spiffe://grid.example/ns/grid/sa/meter"},
	"subject prefix":  {Subject: "spiffe://grid.example/ns/grid/*"},
	"subject nul":     {Subject: "spiffe://grid.example/ns/grid/sa/meter*"},
	"device":          {Device: "inv-0002"},
	"path prefix":     {Path: "/api/v1/inverters/*"},
	"path exact":      {Path: "/api/v1/meters/3"},
	"everything":      {Path: "*"},
	"revision":        {Revision: rev(2)},
	"proxy":           {Proxy: "sidecar~10.0.0.1~pod-2"},
	"uploader":        {Uploader: Uploader},
	"other uploader":  {Uploader: "token:ci"},
	"time range":      {Since: T0.Add(10 * time.Minute), Until: T0.Add(20 * time.Minute)},
	"since":           {Since: T0.Add(70 * time.Minute)},
	"until":           {Until: T0.Add(3 * time.Minute)},
	"combined":        {Decision: "deny", Path: "/api/v1/inverters/*", Revision: rev(1), Since: T0.Add(5 * time.Minute)},
	"unknown subject": {Subject: "spiffe://elsewhere/x"},
	"like chars":      {Path: "/api/v1/%_*"},
}

// Run checks s against the reference and the file Index.
func Run(t *testing.T, open Open) {
	const n = 3000
	batches := Batches(t, n)
	s := open(t, batches)
	ref := fileIndex(t, batches)
	ctx := context.Background()

	t.Run("search", func(t *testing.T) {
		for name, f := range Filters {
			t.Run(name, func(t *testing.T) {
				var want []uint64
				for i := n - 1; i >= 0; i-- {
					if Generate(i).Matches(f) {
						want = append(want, uint64(i+1))
					}
				}
				got, total := allPages(t, s, f, 97)
				assert.Equal(t, uint64(len(want)), total)
				assert.Equal(t, want, got)
			})
		}
	})
	t.Run("pages", func(t *testing.T) {
		p, err := s.Search(ctx, decisionlog.Filter{}, decisionlog.PageRequest{Limit: 50})
		require.NoError(t, err)
		assert.Equal(t, uint64(n), p.Total)
		assert.Equal(t, uint64(n), p.Head)
		require.Len(t, p.Records, 50)
		assert.Equal(t, uint64(n), p.Records[0].Seq)
		assert.Equal(t, uint64(n-49), p.Next)
		var r decisionlog.Record
		require.NoError(t, json.Unmarshal(p.Records[0].Record, &r))
		assert.JSONEq(t, fmt.Sprint(n), string(r[decisionlog.FieldSeq]), "the stored line, with its chain fields")
		p, err = s.Search(ctx, decisionlog.Filter{}, decisionlog.PageRequest{Before: 21, Limit: 50})
		require.NoError(t, err)
		require.Len(t, p.Records, 20)
		assert.Equal(t, uint64(0), p.Next, "last page")
		p, err = s.Search(ctx, decisionlog.Filter{}, decisionlog.PageRequest{Limit: 100000})
		require.NoError(t, err)
		assert.Len(t, p.Records, decisionlog.MaxPageSize)
		p, err = s.Search(ctx, decisionlog.Filter{}, decisionlog.PageRequest{Before: 1 << 63, Limit: 1})
		require.NoError(t, err)
		require.Len(t, p.Records, 1)
		assert.Equal(t, uint64(n), p.Records[0].Seq)

		sr, err := s.Record(ctx, 7)
		require.NoError(t, err)
		assert.True(t, sr.Verified)
		want, err := ref.Record(ctx, 7)
		require.NoError(t, err)
		assert.JSONEq(t, string(want.Record), string(sr.Record))
		for _, seq := range []uint64{0, n + 1, 1 << 63, 1<<64 - 1} {
			_, err = s.Record(ctx, seq)
			assert.ErrorIs(t, err, decisionlog.ErrNoRecord, "seq %d", seq)
		}
	})
	t.Run("bad filters", func(t *testing.T) {
		for name, tc := range map[string]struct {
			f    decisionlog.Filter
			want string
		}{
			"decision": {decisionlog.Filter{Decision: "maybe"}, `"maybe"`},
			"long":     {decisionlog.Filter{Path: strings.Repeat("a", decisionlog.MaxFilterValue+1)}, "path filter"},
			"nul":      {decisionlog.Filter{Subject: "a\x00b"}, "NUL"},
			"range":    {decisionlog.Filter{Since: T0, Until: T0.Add(-time.Second)}, "before since"},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := s.Search(ctx, tc.f, decisionlog.PageRequest{})
				assert.ErrorContains(t, err, tc.want)
				_, err = s.Stats(ctx, tc.f, decisionlog.StatsRequest{})
				assert.ErrorContains(t, err, tc.want)
			})
		}
		_, err := s.Values(ctx, "colour", 0)
		assert.ErrorContains(t, err, "unknown column")
	})
	t.Run("stats", func(t *testing.T) {
		for name, f := range Filters {
			for _, r := range []decisionlog.StatsRequest{{}, {Buckets: 7, TopRules: 2}, {Buckets: 100000, TopRules: 100000}} {
				t.Run(fmt.Sprintf("%s/%d-%d", name, r.Buckets, r.TopRules), func(t *testing.T) {
					want, err := ref.Stats(ctx, f, r)
					require.NoError(t, err)
					got, err := s.Stats(ctx, f, r)
					require.NoError(t, err)
					assert.Equal(t, want, got)
				})
			}
		}
		// A range far from the records, and one over centuries.
		for _, f := range []decisionlog.Filter{{Since: T0.Add(-48 * time.Hour), Until: T0.Add(-47 * time.Hour)},
			{Since: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}} {
			want, err := ref.Stats(ctx, f, decisionlog.StatsRequest{})
			require.NoError(t, err)
			got, err := s.Stats(ctx, f, decisionlog.StatsRequest{})
			require.NoError(t, err)
			assert.Equal(t, want, got)
		}
	})
	t.Run("values", func(t *testing.T) {
		for _, col := range decisionlog.Columns {
			for _, limit := range []int{0, 1, 3, 5000} {
				want, err := ref.Values(ctx, col, limit)
				require.NoError(t, err)
				got, err := s.Values(ctx, col, limit)
				require.NoError(t, err)
				assert.Equal(t, want, got, "%s limit %d", col, limit)
			}
		}
	})
	t.Run("integrity", func(t *testing.T) {
		in := s.Integrity()
		assert.Equal(t, uint64(n), in.Verified)
		assert.Empty(t, in.Problem)
		assert.Equal(t, ref.Integrity().Head, in.Head, "the same tree as the file log's")
	})
}

// fileIndex is the reference Index over the same batches.
func fileIndex(t *testing.T, batches [][]decisionlog.Record) *decisionlog.Index {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := decisionlog.Open(t.TempDir(), decisionlog.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	for _, b := range batches {
		_, err := l.Append(b)
		require.NoError(t, err)
	}
	ix := decisionlog.OpenIndex(l, decisionlog.IndexOptions{Poll: time.Hour, Logger: quiet})
	t.Cleanup(func() { ix.Close() })
	require.NoError(t, ix.CatchUp(context.Background()))
	return ix
}

// FileIndex is an Open for the file log's Index.
func FileIndex(t *testing.T, batches [][]decisionlog.Record) decisionlog.Searcher {
	return fileIndex(t, batches)
}

// allPages follows Next from the newest page and returns the seqs seen.
func allPages(t *testing.T, s decisionlog.Searcher, f decisionlog.Filter, limit int) ([]uint64, uint64) {
	t.Helper()
	var seqs []uint64
	var before, total uint64
	for range 10000 {
		p, err := s.Search(context.Background(), f, decisionlog.PageRequest{Before: before, Limit: limit})
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
