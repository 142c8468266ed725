package decisionlog

import (
	"context"
	"flag"
	"os"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"
)

var benchRecords = flag.Int("index-bench-records", 1_000_000, "records in the log the index benchmarks query")

var bench struct {
	once sync.Once
	dir  string
	log  *Log
	err  error
}

// benchLog is a real decision log of -index-bench-records generated records,
// written once per test binary run.
func benchLog(b *testing.B) *Log {
	bench.once.Do(func() {
		if bench.dir, bench.err = os.MkdirTemp("", "meshguard-index-bench-"); bench.err != nil {
			return
		}
		start := time.Now()
		bench.log = genLog(b, bench.dir, *benchRecords, Options{Logger: quiet()})
		b.Logf("wrote %d records in %s", *benchRecords, time.Since(start).Round(time.Millisecond))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.log
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bench.log != nil {
		bench.log.Close()
		os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

// BenchmarkIndexBuild indexes the whole log, then verifies its chain (the
// console answers queries once the first step is done); it reports both
// rates.
func BenchmarkIndexBuild(b *testing.B) {
	l := benchLog(b)
	var indexing, verifying time.Duration
	var heap uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ix := OpenIndex(l, IndexOptions{Poll: time.Hour, Logger: quiet()})
		start := time.Now()
		if err := ix.catchUp(context.Background()); err != nil {
			b.Fatal(err)
		}
		indexing += time.Since(start)
		start = time.Now()
		ix.verify(context.Background())
		verifying += time.Since(start)
		if ix.Indexed() != uint64(*benchRecords) || ix.Integrity().Verified != uint64(*benchRecords) {
			b.Fatalf("indexed %d, integrity %+v", ix.Indexed(), ix.Integrity())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		ix.Close()
	}
	b.ReportMetric(float64(heap)/float64(*benchRecords), "index-B/record")
	recs := float64(*benchRecords) * float64(b.N)
	b.ReportMetric(recs/indexing.Seconds(), "indexed/s")
	b.ReportMetric(recs/verifying.Seconds(), "verified/s")
}

// BenchmarkIndexQueries times what the console asks per page load: one
// page of records and the chart aggregation, under typical filters; it
// reports the p50 and p99 of each query.
func BenchmarkIndexQueries(b *testing.B) {
	l := benchLog(b)
	ix := OpenIndex(l, IndexOptions{Poll: time.Hour, Logger: quiet()})
	defer ix.Close()
	ctx := context.Background()
	if err := ix.CatchUp(ctx); err != nil {
		b.Fatal(err)
	}
	mid := t0.Add(time.Duration(*benchRecords/2) * 1500 * time.Millisecond)
	for _, q := range []struct {
		name string
		f    Filter
	}{
		{"all", Filter{}},
		{"deny", Filter{Decision: "deny"}},
		{"rule+path-prefix", Filter{Rule: "write-setpoint", Path: "/api/v1/inverters/*"}},
		{"subject+device+revision", Filter{Subject: "spiffe://grid.example/ns/grid/sa/scada", Device: "inv-0002", Revision: rev(2)}},
		{"proxy+time-range", Filter{Proxy: "sidecar~10.0.0.1~pod-2", Since: mid, Until: mid.Add(24 * time.Hour)}},
		{"no-match", Filter{Subject: "spiffe://elsewhere/x"}},
	} {
		for _, kind := range []string{"search", "stats"} {
			b.Run(q.name+"/"+kind, func(b *testing.B) {
				var lat []time.Duration
				for b.Loop() {
					start := time.Now()
					var err error
					if kind == "search" {
						_, err = ix.Search(ctx, q.f, PageRequest{Limit: DefaultPageSize})
					} else {
						_, err = ix.Stats(ctx, q.f, StatsRequest{})
					}
					if err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				reportPercentiles(b, lat)
			})
		}
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	at := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}
