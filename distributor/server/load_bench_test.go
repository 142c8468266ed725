package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/modules"
)

// BenchmarkLoad runs module pulls, bundle long polls and decision ingest
// at once, as a fleet does: 1,000 clients pulling a 4 MiB module in a
// loop, 500 proxies long-polling a channel that gets a new revision every
// second, and 8 proxies posting 100-record batches. b.N is the number of
// ingest batches. It reports ingest latency and rate, the long-poll
// wake-up latency after each publish and the pull throughput, with the
// default concurrency budgets and without any (pulls unbounded).
//
//	go test ./distributor/server -run '^$' -bench Load -benchtime 3000x
func BenchmarkLoad(b *testing.B) {
	for _, tc := range []struct {
		name    string
		budgets bool
	}{{"budgets", true}, {"unbounded", false}} {
		b.Run(tc.name, func(b *testing.B) { loadRun(b, tc.budgets) })
	}
}

func loadRun(b *testing.B, budgets bool) {
	const pullers, pollers, ingesters, batch = 1000, 500, 8, 100
	k := newSigner(b)
	cfg := testConfig(b)
	cfg.Limits.IngestRate, cfg.Limits.IngestBytesRate = 0, 0
	cfg.Limits.MaxConnections = 4000
	if !budgets {
		cfg.Limits.Concurrency = ConcurrencyConfig{}
	}
	ts := startServer(b, cfg, k.options())
	host := strings.TrimPrefix(ts.URL, "http://")
	wasm := make([]byte, 4<<20)
	_, _ = rand.Read(wasm)
	copy(wasm, "\x00asm\x01\x00\x00\x00")
	pkg, err := modules.Build(wasm, modules.FormatOCIArtifact)
	require.NoError(b, err)
	_, err = modules.Push(context.Background(), pkg, host+"/filters/guard:v1", modules.RemoteOptions{})
	require.NoError(b, err)
	rev := uint64(1)
	require.Equal(b, 201, publish(b, ts.URL, "prod", k.bundle(b, rev, "prod")).Code)
	bundles := map[uint64][]byte{}
	for r := uint64(2); r < 200; r++ {
		bundles[r] = k.bundle(b, r, "prod")
	}
	wasm, pkg = nil, nil

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	client := func(conns int) *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	}

	// Pulls: each client its own connection, downloading in a loop.
	var pulled atomic.Int64
	pullC := client(pullers)
	for range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/modules/filters/guard/v1.wasm", nil)
				resp, err := pullC.Do(req)
				if err != nil {
					continue
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				pulled.Add(n)
			}
		}()
	}

	// Long polls, woken by a publish every second.
	var pubMu sync.Mutex
	published := map[string]time.Time{} // ETag -> when its publish started
	var wakeMu sync.Mutex
	var wakes []time.Duration
	pollC := client(pollers)
	etag := do(b, nil, "GET", ts.URL+"/v1/bundles/prod", nil).Header.Get("ETag")
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := etag
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/bundles/prod?wait=30s", nil)
				req.Header.Set("If-None-Match", cur)
				resp, err := pollC.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					continue
				}
				cur = resp.Header.Get("ETag")
				pubMu.Lock()
				at, ok := published[cur]
				pubMu.Unlock()
				if ok {
					wakeMu.Lock()
					wakes = append(wakes, time.Since(at))
					wakeMu.Unlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rev++
			data := bundles[rev]
			if data == nil {
				return
			}
			sum := bundleETag(data)
			pubMu.Lock()
			published[sum] = time.Now()
			pubMu.Unlock()
			resp, err := http.Post(ts.URL+"/v1/bundles/prod", "application/octet-stream", bytes.NewReader(data))
			if err == nil {
				resp.Body.Close()
			}
		}
	}()
	time.Sleep(2 * time.Second) // let pulls and polls ramp up

	// Ingest: b.N batches over 8 clients, each latency recorded.
	ingestC := client(ingesters)
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	pulledAtStart := pulled.Load()
	var iw sync.WaitGroup
	for range ingesters {
		iw.Add(1)
		go func() {
			defer iw.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				body := decisionBatch(i*batch, batch)
				t0 := time.Now()
				resp, err := ingestC.Post(ts.URL+"/v1/decisions", "application/json", bytes.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				} else {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	iw.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	pulledBytes := pulled.Load() - pulledAtStart
	cancel()

	slices.Sort(lat)
	q := func(ds []time.Duration, p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	wakeMu.Lock()
	ws := slices.Clone(wakes)
	wakeMu.Unlock()
	slices.Sort(ws)
	b.ReportMetric(q(lat, 0.5), "ingest_p50_ms")
	b.ReportMetric(q(lat, 0.99), "ingest_p99_ms")
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(failed.Load()), "ingest_failed")
	b.ReportMetric(q(ws, 0.5), "wake_p50_ms")
	b.ReportMetric(q(ws, 0.99), "wake_p99_ms")
	b.ReportMetric(float64(len(ws)), "wakeups")
	b.ReportMetric(float64(pulledBytes)/elapsed.Seconds()/(1<<20), "pull_MiB/s")
}

// bundleETag is the ETag the registry gives data.
func bundleETag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}
