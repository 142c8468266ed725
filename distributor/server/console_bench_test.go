package server

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/internal/decisiongen"
	"github.com/meshguard/meshguard/distributor/internal/pgtest"
)

var consoleBenchRecords = flag.Int("console-bench-records", 1_000_000, "decision records behind BenchmarkConsolePageLoad")

// BenchmarkConsolePageLoad loads each console page over HTTP from a real
// distributor whose decision log holds -console-bench-records generated
// records (written through the log's Append, indexed and chain-verified by
// the server as at any start). One op is one page load: every API request
// the page makes, one after another (the browser makes them in parallel,
// so this is an upper bound). It reports p50 and p99 per page.
func BenchmarkConsolePageLoad(b *testing.B) {
	n := *consoleBenchRecords
	cfg := testConfig(b)
	base := time.Now().UTC().Add(-time.Duration(n) * time.Second)
	start := time.Now()
	l, err := decisionlog.Open(filepath.Join(cfg.Data, "decisions"), decisionlog.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := decisiongen.Fill(l, n, base, time.Second, "spiffe://grid.example/ns/grid/sa/guard"); err != nil {
		b.Fatal(err)
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	wrote := time.Since(start)
	ts := startServer(b, cfg, Options{})
	start = time.Now()
	for ts.Search().Integrity().Verified < uint64(n) {
		time.Sleep(50 * time.Millisecond)
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("index not ready after 10 minutes: %+v", ts.Search().Integrity())
		}
	}
	b.Logf("%d records: written in %s, indexed and verified by the server in %s", n, wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	consolePageLoad(b, ts, n, base)
}

// BenchmarkConsolePageLoadPostgres is BenchmarkConsolePageLoad with
// state.backend postgres: the records are appended through the server's
// shared decision log (the sequencer transaction, as ingest stores them),
// and the pages are served by SQL over the indexed columns.
func BenchmarkConsolePageLoadPostgres(b *testing.B) {
	n := *consoleBenchRecords
	_, dbURL := pgtest.Database(b)
	cfg := haConfig(b, dbURL)
	ts := startServer(b, cfg, Options{})
	base := time.Now().UTC().Add(-time.Duration(n) * time.Second)
	start := time.Now()
	for i := 0; i < n; i += 5000 {
		batch := make([]decisionlog.Record, 0, 5000)
		for j := i; j < min(n, i+5000); j++ {
			r, err := decisionlog.DecodeRecord(decisiongen.JSON(j, base, time.Second))
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, r)
		}
		decisionlog.Stamp(batch, "spiffe://grid.example/ns/grid/sa/guard", base)
		if _, err := ts.dlog.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
	wrote := time.Since(start)
	start = time.Now()
	if err := ts.pgSearch.Verify(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := ts.pgSearch.Vacuum(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d records: appended in %s, verified by the server in %s", n, wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	consolePageLoad(b, ts, n, base)
}

// consolePageLoad measures each console page's API requests.
func consolePageLoad(b *testing.B, ts *testServer, n int, base time.Time) {
	get := func(path string, q url.Values) {
		u := ts.URL + "/ui/api/" + path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		res, err := http.Get(u) // loopback: the default config lets it audit
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", u, res.StatusCode)
		}
	}
	// valueLists are the suggestion lists every filter form loads.
	valueLists := func() {
		for _, c := range []string{"rule", "subject", "device", "path", "revision", "proxy", "uploader"} {
			get("decisions/values/"+c, url.Values{"limit": {"50"}})
		}
	}
	since := base.Add(time.Duration(n/2) * time.Second).Format(time.RFC3339)
	pages := []struct {
		name string
		load func()
	}{
		{"channels", func() { get("status", nil) }},
		{"decisions", func() {
			get("status", nil)
			get("decisions/search", url.Values{"limit": {"50"}})
			valueLists()
		}},
		{"decisions-filtered", func() {
			get("status", nil)
			get("decisions/search", url.Values{"limit": {"50"}, "decision": {"deny"}, "rule": {decisiongen.RuleRevoked}, "path": {"/api/v1/inverters/*"}})
			valueLists()
		}},
		{"decisions-rare-device-old-page", func() {
			get("status", nil)
			get("decisions/search", url.Values{"limit": {"50"}, "device": {"inv-0042"}, "since": {since}, "before": {fmt.Sprint(n / 3 * 2)}})
			valueLists()
		}},
		{"record", func() {
			get("status", nil)
			get(fmt.Sprintf("decisions/records/%d", n/2), nil)
		}},
		{"charts", func() {
			get("status", nil)
			get("decisions/stats", url.Values{"buckets": {"60"}, "top": {"8"}})
			get("decisions/stats", url.Values{"buckets": {"1"}, "top": {"12"}, "decision": {"dry-run-deny"}})
			valueLists()
		}},
		{"charts-filtered", func() {
			get("status", nil)
			get("decisions/stats", url.Values{"buckets": {"120"}, "top": {"8"}, "subject": {decisiongen.Subjects[1]}, "since": {since}})
			get("decisions/stats", url.Values{"buckets": {"1"}, "top": {"12"}, "decision": {"dry-run-deny"}, "subject": {decisiongen.Subjects[1]}, "since": {since}})
			valueLists()
		}},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				t := time.Now()
				p.load()
				lat = append(lat, time.Since(t))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			at := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(at(0.5), "p50-ms")
			b.ReportMetric(at(0.99), "p99-ms")
		})
	}
}
