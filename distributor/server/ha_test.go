package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/internal/pgtest"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

func TestMain(m *testing.M) {
	if url := os.Getenv("MESHGUARD_TEST_REPLICA_DB"); url != "" {
		os.Exit(runChildReplica(url))
	}
	os.Exit(pgtest.Main(m))
}

// runChildReplica is a distributor replica in a subprocess (so a test can
// kill -9 it): it prints its address and serves until killed.
func runChildReplica(url string) int {
	cfg := DefaultConfig()
	cfg.Data = os.Getenv("MESHGUARD_TEST_REPLICA_DATA")
	cfg.Listen = "127.0.0.1:0"
	cfg.InsecureHTTP = true
	cfg.Tokens.Env = ""
	cfg.State.Backend = "postgres"
	cfg.State.Postgres.URL = url
	cfg.Limits.IngestRate = 0
	s, err := New(context.Background(), cfg, Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	if err := s.Serve(context.Background(), ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// haConfig is a replica's configuration on the shared database url (each
// replica has its own data directory: nothing of the state is in it).
func haConfig(t testing.TB, url string) Config {
	cfg := testConfig(t)
	cfg.State.Backend = "postgres"
	cfg.State.Postgres.URL = url
	return cfg
}

// replicas starts n distributors on one fresh database.
func replicas(t testing.TB, k *signer, n int) (*pgtest.Cluster, []*testServer) {
	c, url := pgtest.Database(t)
	keyFile := filepath.Join(t.TempDir(), "checkpoint.key") // one key, as a mounted Secret
	var out []*testServer
	for range n {
		cfg := haConfig(t, url)
		cfg.Decisions.CheckpointKey = keyFile
		out = append(out, startServer(t, cfg, k.options()))
	}
	return c, out
}

func TestHAPublishOnALongPollOnB(t *testing.T) {
	k := newSigner(t)
	_, rs := replicas(t, k, 2)
	a, b := rs[0], rs[1]
	r0 := publish(t, a.URL, "prod", k.bundle(t, 1, "prod"))
	require.Equal(t, http.StatusCreated, r0.Code, string(r0.Body))
	// B serves what A published (its copy is refreshed by the notification).
	var r resp
	require.Eventually(t, func() bool {
		r = do(t, nil, http.MethodGet, b.URL+"/v1/bundles/prod", nil)
		return r.Code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, "1", r.Header.Get(HeaderRevision))
	etag := r.Header.Get("ETag")

	got := make(chan resp, 1)
	go func() {
		got <- do(t, nil, http.MethodGet, b.URL+"/v1/bundles/prod?wait=30s", nil, "If-None-Match", etag)
	}()
	time.Sleep(200 * time.Millisecond) // B's poll is waiting
	b2 := k.bundle(t, 2, "prod")
	require.Equal(t, http.StatusCreated, publish(t, a.URL, "prod", b2).Code)
	r = <-got
	require.Equal(t, http.StatusOK, r.Code, "the long poll on B wakes with A's publish, before its 30s wait ends")
	assert.Equal(t, "2", r.Header.Get(HeaderRevision))
	assert.Equal(t, b2, r.Body)

	// Revisions and their bytes are the same on both.
	for _, ts := range rs {
		r := do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod/revisions/1", nil)
		require.Equal(t, http.StatusOK, r.Code)
		assert.Equal(t, k.bundle(t, 1, "prod"), r.Body)
	}
}

func TestHAConcurrentPublishesAntiRollback(t *testing.T) {
	k := newSigner(t)
	_, rs := replicas(t, k, 2)
	a, b := rs[0], rs[1]
	for round := uint64(0); round < 5; round++ {
		lo, hi := 7+2*round, 8+2*round
		var wg sync.WaitGroup
		codes := map[uint64]int{}
		var mu sync.Mutex
		for _, p := range []struct {
			ts  *testServer
			rev uint64
		}{{a, lo}, {b, hi}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := publish(t, p.ts.URL, "prod", k.bundle(t, p.rev, "prod")).Code
				mu.Lock()
				codes[p.rev] = c
				mu.Unlock()
			}()
		}
		wg.Wait()
		assert.Equal(t, http.StatusCreated, codes[hi], "the higher revision is always accepted")
		assert.Contains(t, []int{http.StatusCreated, http.StatusConflict}, codes[lo])
		for _, ts := range rs {
			require.Eventually(t, func() bool {
				return do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil).Header.Get(HeaderRevision) == strconv.FormatUint(hi, 10)
			}, 10*time.Second, 10*time.Millisecond, "every replica serves revision %d", hi)
		}
	}
	// A rollback is 409 on whichever replica gets it, including the one
	// that has not published itself since.
	for _, ts := range rs {
		r := publish(t, ts.URL, "prod", k.bundle(t, 6, "prod"))
		assert.Equal(t, http.StatusConflict, r.Code, string(r.Body))
	}
}

// Ingest on both replicas lands in one log: seqs are shared, a checkpoint
// signed on A proves records ingested on B, and the exported log rebuilds
// to the checkpoint's tree (meshguard audit verify) from either replica.
func TestHAIngestOneVerifiableLog(t *testing.T) {
	k := newSigner(t)
	_, rs := replicas(t, k, 2)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := rs[i%2]
			r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisionBatch(i*100, 100), "Content-Type", "application/json")
			assert.Equal(t, http.StatusOK, r.Code, string(r.Body))
		}()
	}
	wg.Wait()
	var head struct{ Seq uint64 }
	do(t, nil, http.MethodGet, rs[1].URL+"/v1/decisions/head", nil).json(t, &head)
	require.Equal(t, uint64(800), head.Seq)

	ctx := context.Background()
	a := &Client{Base: rs[0].URL, HTTP: http.DefaultClient}
	b := &Client{Base: rs[1].URL, HTTP: http.DefaultClient}
	key, err := decisionlog.ParseVerifier(rs[0].DecisionLogKey())
	require.NoError(t, err)
	cp, err := a.SignCheckpoint(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, uint64(800), cp.Size)
	for _, seq := range []uint64{1, 399, 800} {
		p, err := b.InclusionProof(ctx, seq, cp.Size)
		require.NoError(t, err)
		require.NoError(t, p.Check(cp))
	}
	for _, c := range []*Client{a, b} {
		rep, err := c.VerifyDecisionLog(ctx, key)
		require.NoError(t, err)
		assert.Equal(t, uint64(800), rep.Records)
	}
	// A retried upload on the other replica stores nothing twice.
	r := do(t, nil, http.MethodPost, rs[1].URL+"/v1/decisions", decisionBatch(0, 100), "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, r.Code)
	var ir IngestResult
	r.json(t, &ir)
	assert.Equal(t, 0, ir.Accepted)
	// Queries run over the shared log.
	var qr decisionlog.QueryResult
	do(t, nil, http.MethodGet, rs[0].URL+"/v1/decisions?decision=deny&limit=1000", nil).json(t, &qr)
	assert.Len(t, qr.Records, 200)
}

// A replica killed with SIGKILL in the middle of ingest loses nothing it
// acknowledged: every record answered 2xx is in the log another replica
// serves, seqs are dense and the log verifies.
func TestHAKill9DuringIngest(t *testing.T) {
	_, url := pgtest.Database(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MESHGUARD_TEST_REPLICA_DB="+url, "MESHGUARD_TEST_REPLICA_DATA="+t.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	require.True(t, ok, line)
	base := "http://" + addr

	var mu sync.Mutex
	acked := map[int]bool{} // batch starts acknowledged
	var wg sync.WaitGroup
	stop := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := (w*100000 + i) * 50
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/decisions", bytesReader(decisionBatch(start, 50)))
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					return // the replica is gone
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode/100 == 2 {
					mu.Lock()
					acked[start] = true
					mu.Unlock()
				}
			}
		}()
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 40 }, 60*time.Second, 5*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	close(stop)
	wg.Wait()

	k := newSigner(t)
	cfg := haConfig(t, url)
	b := startServer(t, cfg, k.options())
	var qr decisionlog.QueryResult
	ids := map[string]bool{}
	after := uint64(0)
	seqs := uint64(0)
	for {
		do(t, nil, http.MethodGet, fmt.Sprintf("%s/v1/decisions?limit=10000&after=%d", b.URL, after), nil).json(t, &qr)
		for _, raw := range qr.Records {
			var rec struct {
				Seq uint64 `json:"seq"`
				ID  string `json:"decision_id"`
			}
			require.NoError(t, json.Unmarshal(raw, &rec))
			seqs++
			require.Equal(t, seqs, rec.Seq, "seqs are dense")
			ids[rec.ID] = true
		}
		if qr.Next == 0 {
			break
		}
		after = qr.Next
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d batches acknowledged before kill -9, %d records stored", len(acked), seqs)
	for start := range acked {
		for i := start; i < start+50; i++ {
			require.True(t, ids[strconv.Itoa(i)], "acknowledged record %d is stored", i)
		}
	}
	assert.Zero(t, seqs%50, "batches are stored whole or not at all")
}

func TestHADatabaseRestart(t *testing.T) {
	k := newSigner(t)
	c, rs := replicas(t, k, 2)
	a, rb := rs[0], rs[1]
	r0 := publish(t, a.URL, "prod", k.bundle(t, 1, "prod"))
	require.Equal(t, http.StatusCreated, r0.Code, string(r0.Body))
	require.Equal(t, http.StatusOK, do(t, nil, http.MethodGet, a.URL+"/readyz", nil).Code)

	require.NoError(t, c.StopServer())
	restarted := false
	defer func() {
		if !restarted {
			_ = c.StartServer()
		}
	}()
	r := do(t, nil, http.MethodGet, a.URL+"/readyz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, r.Code)
	assert.Contains(t, string(r.Body), "state database unreachable")
	r = publish(t, a.URL, "prod", k.bundle(t, 2, "prod"))
	assert.Equal(t, http.StatusServiceUnavailable, r.Code, string(r.Body))
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	// Polls keep being answered from the replica's copy.
	assert.Equal(t, http.StatusOK, do(t, nil, http.MethodGet, a.URL+"/v1/bundles/prod", nil).Code)

	require.NoError(t, c.StartServer())
	restarted = true
	require.Eventually(t, func() bool {
		return do(t, nil, http.MethodGet, a.URL+"/readyz", nil).Code == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "ready again without a restart")
	r = publish(t, a.URL, "prod", k.bundle(t, 2, "prod"))
	assert.Equal(t, http.StatusCreated, r.Code, string(r.Body))

	// B's listener reconnected: a long poll on B wakes with A's next publish.
	require.Eventually(t, func() bool {
		return do(t, nil, http.MethodGet, rb.URL+"/v1/bundles/prod", nil).Header.Get(HeaderRevision) == "2"
	}, 30*time.Second, 50*time.Millisecond)
	etag := do(t, nil, http.MethodGet, rb.URL+"/v1/bundles/prod", nil).Header.Get("ETag")
	got := make(chan resp, 1)
	go func() {
		got <- do(t, nil, http.MethodGet, rb.URL+"/v1/bundles/prod?wait=30s", nil, "If-None-Match", etag)
	}()
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, http.StatusCreated, publish(t, a.URL, "prod", k.bundle(t, 3, "prod")).Code)
	r = <-got
	require.Equal(t, http.StatusOK, r.Code)
	assert.Equal(t, "3", r.Header.Get(HeaderRevision))
}

func TestHAStartupFailsClearly(t *testing.T) {
	c, url := pgtest.Database(t)
	for _, tc := range []struct {
		name, url, want string
	}{
		{"unreachable", "postgres://meshguard:x@127.0.0.1:1/db?sslmode=disable", "unreachable"},
		{"credentials", strings.Replace(url, c.Password, "wrong", 1), "refused the credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), haConfig(t, tc.url), Options{Logger: quietLogger()})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), c.Password)
		})
	}
	// A schema a newer distributor migrated is refused, not used.
	s, err := New(context.Background(), haConfig(t, url), Options{Logger: quietLogger()})
	require.NoError(t, err)
	s.Close()
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	_, err = conn.Exec(context.Background(), `INSERT INTO meshguard_schema (version) VALUES ($1)`, postgres.SchemaVersion+1)
	require.NoError(t, err)
	conn.Close(context.Background())
	_, err = New(context.Background(), haConfig(t, url), Options{Logger: quietLogger()})
	require.ErrorContains(t, err, "newer than this distributor's")

	cfg := haConfig(t, url)
	cfg.State.Postgres.SSLMode = "sometimes"
	assert.ErrorContains(t, cfg.Validate(), "state.postgres.sslmode")
	cfg = testConfig(t)
	cfg.State.Backend = "etcd"
	assert.ErrorContains(t, cfg.Validate(), "want filesystem or postgres")
}

// BenchmarkHAPoll304 is BenchmarkBundlePoll304 on a replica whose state
// is in PostgreSQL: polls are answered from the replica's copy.
func BenchmarkHAPoll304(b *testing.B) {
	k := newSigner(b)
	_, rs := replicas(b, k, 1)
	ts := rs[0]
	require.Equal(b, 201, publish(b, ts.URL, "prod", k.bundle(b, 1, "prod")).Code)
	etag := do(b, nil, "GET", ts.URL+"/v1/bundles/prod", nil).Header.Get("ETag")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DialContext: (&net.Dialer{}).DialContext}}
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

// BenchmarkHALongPollWake publishes on replica A while 50 long polls wait
// on replica B and reports the wake-up latency percentiles (publish sent
// to poll answered).
func BenchmarkHALongPollWake(b *testing.B) {
	k := newSigner(b)
	_, rs := replicas(b, k, 2)
	a, rb := rs[0], rs[1]
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	var lat []time.Duration
	rev := uint64(1)
	require.Equal(b, 201, publish(b, a.URL, "prod", k.bundle(b, rev, "prod")).Code)
	bundlesByRev := map[uint64][]byte{}
	for i := range b.N {
		bundlesByRev[uint64(i)+2] = k.bundle(b, uint64(i)+2, "prod")
	}
	b.ResetTimer()
	for range b.N {
		var etag string
		require.Eventually(b, func() bool {
			r := do(b, nil, "GET", rb.URL+"/v1/bundles/prod", nil)
			etag = r.Header.Get("ETag")
			return r.Header.Get(HeaderRevision) == strconv.FormatUint(rev, 10)
		}, 10*time.Second, 5*time.Millisecond)
		const waiters = 50
		done := make(chan time.Time, waiters)
		for range waiters {
			go func() {
				req, _ := http.NewRequest("GET", rb.URL+"/v1/bundles/prod?wait=30s", nil)
				req.Header.Set("If-None-Match", etag)
				res, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				done <- time.Now()
			}()
		}
		time.Sleep(100 * time.Millisecond)
		rev++
		start := time.Now()
		require.Equal(b, 201, publish(b, a.URL, "prod", bundlesByRev[rev]).Code)
		for range waiters {
			lat = append(lat, (<-done).Sub(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(p(1), "max-ms")
}

// BenchmarkHAIngestTwoReplicas posts 100-record batches (each new, none a
// duplicate) to two replicas sharing one database and reports records/s
// committed across both; BenchmarkIngestFilesystem is the same load on one
// distributor with the file log, for comparison on the same machine.
func BenchmarkHAIngestTwoReplicas(b *testing.B) {
	k := newSigner(b)
	_, url := pgtest.Database(b)
	var urls []string
	for range 2 {
		urls = append(urls, startServer(b, ingestBenchConfig(haConfig(b, url)), k.options()).URL)
	}
	ingestBench(b, urls)
}

func BenchmarkIngestFilesystem(b *testing.B) {
	ingestBench(b, []string{startServer(b, ingestBenchConfig(testConfig(b)), Options{}).URL})
}

func ingestBenchConfig(cfg Config) Config {
	cfg.Limits.IngestRate = 0
	cfg.Limits.IngestBytesRate = 0
	// Uploads in progress per replica: each commit carries every one
	// waiting, so more at once is larger commits.
	cfg.Limits.Concurrency.Ingest = 32
	return cfg
}

func ingestBench(b *testing.B, urls []string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	b.SetParallelism(32) // many proxies uploading at once, as in a mesh
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := int(next.Add(1))
			req, _ := http.NewRequest("POST", urls[n%len(urls)]+"/v1/decisions", bytesReader(decisionBatch(n*100, 100)))
			req.Header.Set("Content-Type", "application/json")
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

// The console's API answers on any replica over the shared log: a search,
// stats, values and a record view with its inclusion proof on B for
// records ingested on A, and the status reports the verified tree.
func TestHAConsoleOnEveryReplica(t *testing.T) {
	k := newSigner(t)
	_, rs := replicas(t, k, 2)
	r := do(t, nil, http.MethodPost, rs[0].URL+"/v1/decisions", decisionBatch(0, 400), "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	key, err := decisionlog.ParseVerifier(rs[0].DecisionLogKey())
	require.NoError(t, err)
	_, err = (&Client{Base: rs[0].URL, HTTP: http.DefaultClient}).SignCheckpoint(context.Background(), key)
	require.NoError(t, err)
	b := rs[1]
	require.NoError(t, b.pgSearch.Verify(context.Background()))

	var page decisionlog.Page
	do(t, nil, http.MethodGet, b.URL+"/ui/api/decisions/search?decision=deny&limit=30", nil).json(t, &page)
	assert.Equal(t, uint64(100), page.Total)
	require.Len(t, page.Records, 30)
	assert.Equal(t, uint64(397), page.Records[0].Seq, "newest first")
	assert.NotZero(t, page.Next)
	var older decisionlog.Page
	do(t, nil, http.MethodGet, b.URL+fmt.Sprintf("/v1/decisions/search?decision=deny&limit=30&before=%d", page.Next), nil).json(t, &older)
	assert.Equal(t, page.Records[29].Seq-4, older.Records[0].Seq)

	var st decisionlog.Stats
	do(t, nil, http.MethodGet, b.URL+"/v1/decisions/stats?buckets=10", nil).json(t, &st)
	assert.Equal(t, uint64(400), st.Total)
	require.NotEmpty(t, st.Rules)
	assert.Equal(t, "meter-read", st.Rules[0].Rule)
	assert.Equal(t, uint64(100), st.Rules[0].Deny)

	var vs []decisionlog.ValueCount
	do(t, nil, http.MethodGet, b.URL+"/v1/decisions/values/decision", nil).json(t, &vs)
	assert.Equal(t, []decisionlog.ValueCount{{Value: "allow", Count: 300}, {Value: "deny", Count: 100}}, vs)

	var rec RecordAnswer
	do(t, nil, http.MethodGet, b.URL+"/ui/api/decisions/records/123", nil).json(t, &rec)
	assert.True(t, rec.Verified)
	require.Len(t, rec.Checks, 2)
	for _, c := range rec.Checks {
		assert.Equal(t, "verified", c.Status, c.Name+": "+c.Detail)
	}
	r = do(t, nil, http.MethodGet, b.URL+"/v1/decisions/records/401", nil)
	assert.Equal(t, http.StatusNotFound, r.Code)

	var status Status
	do(t, nil, http.MethodGet, b.URL+"/v1/status", nil).json(t, &status)
	assert.Equal(t, uint64(400), status.DecisionLog.Integrity.Verified)
	assert.Empty(t, status.DecisionLog.Integrity.Problem)
	require.NotNil(t, status.DecisionLog.Integrity.Checkpoint)
	assert.Equal(t, uint64(400), status.DecisionLog.Integrity.Checkpoint.Size)
}
