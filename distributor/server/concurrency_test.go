package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGracefulShutdown(t *testing.T) {
	k := newSigner(t)
	ts := startServer(t, testConfig(t), k.options())
	require.Equal(t, 201, publish(t, ts.URL, "prod", k.bundle(t, 1, "prod")).Code)
	etag := do(t, nil, "GET", ts.URL+"/v1/bundles/prod", nil).Header.Get("ETag")

	poll := make(chan resp, 1)
	go func() { poll <- do(t, nil, "GET", ts.URL+"/v1/bundles/prod?wait=60s", nil, "If-None-Match", etag) }()
	waitLongPolls(t, ts, 1)

	start := time.Now()
	ts.stop()
	require.NoError(t, ts.err)
	assert.Less(t, time.Since(start), 3*time.Second, "a parked long poll does not hold shutdown")
	r := <-poll
	assert.Equal(t, http.StatusNotModified, r.Code, "the long poll ends with 304")
	_, err := http.Get(ts.URL + "/healthz")
	require.Error(t, err, "the listener is closed")
	// The decision log was closed cleanly and verifies.
	_, err = verifyData(t, ts.cfg.Data)
	require.NoError(t, err)
}

// TestConcurrentPollsIngestsAndPublishes: hundreds of pollers and ingesters
// against publishes; every poller sees each revision at most once and in
// order, and the decision chain stays intact. Run with -race.
func TestConcurrentPollsIngestsAndPublishes(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Limits.IngestRate = 0
	ts := startServer(t, cfg, k.options())
	require.Equal(t, 201, publish(t, ts.URL, "prod", k.bundle(t, 1, "prod")).Code)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 400}}
	const pollers, ingesters, revisions = 200, 40, 5
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var polls, ingested atomic.Int64
	errs := make(chan error, pollers+ingesters)
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			etag, last := "", uint64(0)
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/bundles/prod?wait=5s", nil)
				if etag != "" {
					req.Header.Set("If-None-Match", etag)
				}
				res, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				polls.Add(1)
				if res.StatusCode == 200 {
					var rev uint64
					fmt.Sscan(res.Header.Get(HeaderRevision), &rev)
					if rev <= last {
						errs <- fmt.Errorf("revision went from %d to %d", last, rev)
						return
					}
					last, etag = rev, res.Header.Get("ETag")
				} else if res.StatusCode != 304 {
					errs <- fmt.Errorf("poll: %d", res.StatusCode)
					return
				}
			}
		}()
	}
	for i := range ingesters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				r := do(t, client, "POST", ts.URL+"/v1/decisions", decisionBatch(i*100+j*10, 10))
				if r.Code != 200 {
					errs <- fmt.Errorf("ingest: %d %s", r.Code, r.Body)
					return
				}
				ingested.Add(10)
			}
		}()
	}
	for rev := uint64(2); rev <= revisions; rev++ {
		time.Sleep(50 * time.Millisecond)
		require.Equal(t, 201, publish(t, ts.URL, "prod", k.bundle(t, rev, "prod")).Code)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, int64(ingesters*100), ingested.Load())
	assert.GreaterOrEqual(t, polls.Load(), int64(pollers))
	ts.stop()
	rep, err := verifyData(t, ts.cfg.Data)
	require.NoError(t, err)
	assert.Equal(t, uint64(ingesters*100), rep.Records)
}

// BenchmarkBundlePoll304 measures conditional polls answered 304 over
// loopback HTTP by many concurrent clients (b.SetParallelism × GOMAXPROCS).
func BenchmarkBundlePoll304(b *testing.B) {
	k := newSigner(b)
	ts := startServer(b, testConfig(b), k.options())
	require.Equal(b, 201, publish(b, ts.URL, "prod", k.bundle(b, 1, "prod")).Code)
	etag := do(b, nil, "GET", ts.URL+"/v1/bundles/prod", nil).Header.Get("ETag")
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DialContext: (&net.Dialer{}).DialContext}
	client := &http.Client{Transport: tr}
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/bundles/prod", nil)
		req.Header.Set("If-None-Match", etag)
		for pb.Next() {
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 304 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "polls/s")
}

// BenchmarkDecisionIngest measures records/s through POST /v1/decisions
// (100-record batches, concurrent uploaders, fsync per batch).
func BenchmarkDecisionIngest(b *testing.B) {
	cfg := testConfig(b)
	cfg.Limits.IngestRate = 0
	ts := startServer(b, cfg, Options{})
	body := decisionBatch(0, 100)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", ts.URL+"/v1/decisions", bytesReader(body))
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "records/s")
}
