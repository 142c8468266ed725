package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/bundles"
)

func publish(t testing.TB, url, channel string, data []byte, hdr ...string) resp {
	return do(t, nil, http.MethodPost, url+"/v1/bundles/"+channel, data, hdr...)
}

func TestBundlePublishGetETagRevisionsRetention(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Bundles.Retain = 3
	ts := startServer(t, cfg, k.options())

	r := do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil)
	assert.Equal(t, http.StatusNotFound, r.Code)

	b1 := k.bundle(t, 1, "prod")
	r = publish(t, ts.URL, "prod", b1)
	require.Equal(t, http.StatusCreated, r.Code, string(r.Body))
	var pr PublishResult
	r.json(t, &pr)
	assert.Equal(t, "prod", pr.Channel)
	assert.Equal(t, uint64(1), pr.Revision)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, pr.Digest)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil)
	require.Equal(t, http.StatusOK, r.Code)
	assert.Equal(t, b1, r.Body)
	assert.Equal(t, bundles.MediaType, r.Header.Get("Content-Type"))
	assert.Equal(t, "1", r.Header.Get(HeaderRevision))
	etag := r.Header.Get("ETag")
	assert.Equal(t, `"`+pr.Digest[len("sha256:"):]+`"`, etag)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil, "If-None-Match", etag)
	assert.Equal(t, http.StatusNotModified, r.Code)
	assert.Empty(t, r.Body)
	assert.Equal(t, etag, r.Header.Get("ETag"))
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil, "If-None-Match", `"other", W/`+etag)
	assert.Equal(t, http.StatusNotModified, r.Code)
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil, "If-None-Match", `"stale"`)
	assert.Equal(t, http.StatusOK, r.Code)

	// Rollback and replay are refused with 409; bad signatures with 422.
	for rev := uint64(2); rev <= 5; rev++ {
		r = publish(t, ts.URL, "prod", k.bundle(t, rev, "prod"))
		require.Equal(t, http.StatusCreated, r.Code, string(r.Body))
	}
	r = publish(t, ts.URL, "prod", k.bundle(t, 3, "prod"))
	assert.Equal(t, http.StatusConflict, r.Code)
	assert.Contains(t, string(r.Body), `"error"`)
	r = publish(t, ts.URL, "prod", k.bundle(t, 5, "prod"))
	assert.Equal(t, http.StatusConflict, r.Code)
	r = publish(t, ts.URL, "prod", k.tampered(t, 6))
	assert.Equal(t, http.StatusUnprocessableEntity, r.Code, string(r.Body))
	r = publish(t, ts.URL, "prod", newSigner(t).bundle(t, 7, "prod"))
	assert.Equal(t, http.StatusUnprocessableEntity, r.Code, "bundle signed by an unknown key")
	r = publish(t, ts.URL, "Bad_Channel", k.bundle(t, 9, "prod"))
	assert.Equal(t, http.StatusBadRequest, r.Code)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil)
	assert.Equal(t, "5", r.Header.Get(HeaderRevision), "failed publishes leave the latest alone")

	// Retention keeps the last 3.
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod/revisions", nil)
	require.Equal(t, http.StatusOK, r.Code)
	var revs []bundles.RevisionInfo
	r.json(t, &revs)
	require.Len(t, revs, 3)
	for i, want := range []uint64{3, 4, 5} {
		assert.Equal(t, want, revs[i].Revision)
		assert.Positive(t, revs[i].Size)
		assert.False(t, revs[i].Created.IsZero())
	}
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod/revisions/4", nil)
	require.Equal(t, http.StatusOK, r.Code)
	assert.Equal(t, k.bundle(t, 4, "prod"), r.Body)
	assert.Equal(t, "4", r.Header.Get(HeaderRevision))
	assert.Equal(t, http.StatusNotFound, do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod/revisions/1", nil).Code)
	assert.Equal(t, http.StatusNotFound, do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod/revisions/x", nil).Code)

	// Restart: state comes back from disk.
	ts.stop()
	ts2 := startServer(t, cfg, k.options())
	r = do(t, nil, http.MethodGet, ts2.URL+"/v1/bundles/prod", nil, "If-None-Match", `"x"`)
	assert.Equal(t, "5", r.Header.Get(HeaderRevision))
	r = publish(t, ts2.URL, "prod", k.bundle(t, 4, "prod"))
	assert.Equal(t, http.StatusConflict, r.Code, "anti-rollback survives restarts")
}

// TestPublishRefusesImageSourceMismatch: a bundle signed by the trusted
// key whose engine image differs from its sources, or that has no image,
// is refused over HTTP with 422 and changes nothing.
func TestPublishRefusesImageSourceMismatch(t *testing.T) {
	k := newSigner(t)
	ts := startServer(t, testConfig(t), k.options())
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, 1, "prod")).Code)
	for _, tc := range []struct {
		name  string
		data  []byte
		error string
	}{
		{"forged image", k.forged(t, 2, true), "does not match its policy sources"},
		{"no image", k.forged(t, 2, false), "has no compiled/engine.bin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := publish(t, ts.URL, "prod", tc.data)
			assert.Equal(t, http.StatusUnprocessableEntity, r.Code, string(r.Body))
			assert.Contains(t, string(r.Body), tc.error)
			r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil)
			assert.Equal(t, "1", r.Header.Get(HeaderRevision))
		})
	}
	// The honest revision 2 still lands.
	assert.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, 2, "prod")).Code)
}

func TestBundleChannelScope(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Bundles.AutoChannels = false
	cfg.Bundles.Channels = map[string]ChannelConfig{"grid-east": {Scope: "grid/east"}}
	cfg.Keys = k.keysFile // the configured key file path, not an injected verifier
	ts := startServer(t, cfg, Options{})
	assert.Equal(t, http.StatusUnprocessableEntity, publish(t, ts.URL, "grid-east", k.bundle(t, 1, "grid/west")).Code)
	assert.Equal(t, http.StatusCreated, publish(t, ts.URL, "grid-east", k.bundle(t, 1, "grid/east")).Code)
	assert.Equal(t, http.StatusNotFound, publish(t, ts.URL, "other", k.bundle(t, 1, "prod")).Code, "no auto channels")

	// Expired bundles are refused.
	old := *k
	old.created = time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Second)
	r := publish(t, ts.URL, "grid-east", old.bundle(t, 5, "grid/east"))
	assert.Equal(t, http.StatusUnprocessableEntity, r.Code)
	assert.Contains(t, string(r.Body), "expired")
}

func TestKeyRotation(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Keys = k.keysFile
	ts := startServer(t, cfg, Options{})
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, 1, "prod")).Code)

	// A new signing key: its set replaces the file; the verifier picks it up.
	k2 := newSigner(t)
	b, err := os.ReadFile(k2.keysFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(k.keysFile, b, 0o644))
	future := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(k.keysFile, future, future))
	assert.Equal(t, http.StatusUnprocessableEntity, publish(t, ts.URL, "prod", k.bundle(t, 2, "prod")).Code, "old key retired")
	assert.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k2.bundle(t, 2, "prod")).Code, "new key accepted")
}

// TestKeysFileRemovalFailsClosed: a keys file emptied, deleted or
// corrupted while serving stops every publish (503) and readiness, with an
// error in the log, instead of keeping the last good set; fixing the file
// restores both.
func TestKeysFileRemovalFailsClosed(t *testing.T) {
	k := newSigner(t)
	good, err := os.ReadFile(k.keysFile)
	require.NoError(t, err)
	cfg := testConfig(t)
	cfg.Keys = k.keysFile
	var logs syncBuffer
	ts := startServer(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, 1, "prod")).Code)
	rev := uint64(2)
	for name, breakIt := range map[string]func(){
		"emptied":        func() { require.NoError(t, os.WriteFile(k.keysFile, nil, 0o644)) },
		"empty set":      func() { require.NoError(t, os.WriteFile(k.keysFile, []byte(`{"keys":[]}`), 0o644)) },
		"deleted":        func() { require.NoError(t, os.Remove(k.keysFile)) },
		"corrupted":      func() { require.NoError(t, os.WriteFile(k.keysFile, good[:len(good)/2], 0o644)) },
		"replaced (dir)": func() { require.NoError(t, os.Remove(k.keysFile)); require.NoError(t, os.Mkdir(k.keysFile, 0o755)) },
	} {
		t.Run(name, func(t *testing.T) {
			breakIt()
			r := publish(t, ts.URL, "prod", k.bundle(t, rev, "prod"))
			assert.Equal(t, http.StatusServiceUnavailable, r.Code, string(r.Body))
			r = do(t, nil, http.MethodGet, ts.URL+"/readyz", nil)
			assert.Equal(t, http.StatusServiceUnavailable, r.Code)
			var ready struct{ Checks map[string]string }
			r.json(t, &ready)
			assert.NotEqual(t, "ok", ready.Checks["bundle_keys"])
			assert.Contains(t, logs.String(), "bundle keys unusable")

			require.NoError(t, os.RemoveAll(k.keysFile))
			require.NoError(t, os.WriteFile(k.keysFile, good, 0o644))
			require.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, rev, "prod")).Code)
			rev++
			assert.Equal(t, http.StatusOK, do(t, nil, http.MethodGet, ts.URL+"/readyz", nil).Code)
		})
	}
}

func TestLongPollWakesOnPublishAndTimesOut(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	cfg.Bundles.MaxWait = 2 * time.Second
	ts := startServer(t, cfg, k.options())

	// A poll on an empty channel waits for the first bundle.
	first := make(chan resp, 1)
	go func() { first <- do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/edge?wait=30s", nil) }()
	waitLongPolls(t, ts, 1)
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "edge", k.bundle(t, 1, "edge")).Code)
	r := <-first
	require.Equal(t, http.StatusOK, r.Code)
	etag := r.Header.Get("ETag")

	// Many pollers holding the current ETag all wake on the next publish.
	const n = 20
	var wg sync.WaitGroup
	results := make(chan resp, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/edge?wait=30", nil, "If-None-Match", etag)
		}()
	}
	waitLongPolls(t, ts, n)
	start := time.Now()
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "edge", k.bundle(t, 2, "edge")).Code)
	wg.Wait()
	close(results)
	assert.Less(t, time.Since(start), time.Second+500*time.Millisecond, "pollers woke on publish, not on the cap")
	for r := range results {
		assert.Equal(t, http.StatusOK, r.Code)
		assert.Equal(t, "2", r.Header.Get(HeaderRevision))
	}

	// Nothing new: 304 once the (capped) wait ends.
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/edge", nil)
	start = time.Now()
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/edge?wait=1h", nil, "If-None-Match", r.Header.Get("ETag"))
	assert.Equal(t, http.StatusNotModified, r.Code)
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second-50*time.Millisecond, "held until max_wait")

	assert.Equal(t, http.StatusBadRequest, do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/edge?wait=soon", nil).Code)

	// A client that goes away releases its poll.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/v1/bundles/edge?wait=30s", nil)
	req.Header.Set("If-None-Match", r.Header.Get("ETag"))
	go func() {
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	waitLongPolls(t, ts, 1)
	cancel()
	waitLongPolls(t, ts, 0)
}

// waitLongPolls waits until n long polls are parked in the server.
func waitLongPolls(t testing.TB, ts *testServer, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return gauge(t, ts, "meshguard_distributor_bundle_long_polls") == float64(n)
	}, 5*time.Second, 5*time.Millisecond, "waiting for %d long polls", n)
}

func gauge(t testing.TB, ts *testServer, name string) float64 {
	mfs, err := ts.m.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				if m.GetGauge() != nil {
					sum += m.GetGauge().GetValue()
				}
				if m.GetCounter() != nil {
					sum += m.GetCounter().GetValue()
				}
			}
			return sum
		}
	}
	return 0
}

func TestMetricsAndHealth(t *testing.T) {
	k := newSigner(t)
	ts := startServer(t, testConfig(t), k.options())
	require.Equal(t, http.StatusCreated, publish(t, ts.URL, "prod", k.bundle(t, 42, "prod")).Code)
	assert.Equal(t, http.StatusOK, do(t, nil, http.MethodGet, ts.URL+"/healthz", nil).Code)
	r := do(t, nil, http.MethodGet, ts.URL+"/readyz", nil)
	assert.Equal(t, http.StatusOK, r.Code, string(r.Body))
	r = do(t, nil, http.MethodGet, ts.URL+"/metrics", nil)
	require.Equal(t, http.StatusOK, r.Code)
	body := string(r.Body)
	assert.Contains(t, body, `meshguard_distributor_bundle_revision{channel="prod"} 42`)
	assert.Contains(t, body, `meshguard_distributor_bundle_publishes_total{channel="prod",result="ok"} 1`)
	assert.Contains(t, body, `meshguard_distributor_http_requests_total{code="201",method="POST",route="bundle_publish"} 1`)

	// Without keys the server is not ready and refuses publishes.
	cfg := testConfig(t)
	ts2 := startServer(t, cfg, Options{})
	r = do(t, nil, http.MethodGet, ts2.URL+"/readyz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, r.Code)
	assert.Contains(t, string(r.Body), "bundle verification keys unavailable")
	assert.Equal(t, http.StatusServiceUnavailable, publish(t, ts2.URL, "prod", k.bundle(t, 1, "prod")).Code)
}

func TestBundleSizeLimit(t *testing.T) {
	k := newSigner(t)
	cfg := testConfig(t)
	b := k.bundle(t, 1, "prod")
	cfg.Limits.BundleBytes = ByteSize(len(b) - 1)
	ts := startServer(t, cfg, k.options())
	r := publish(t, ts.URL, "prod", b)
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.Code)
	// Chunked upload without Content-Length is cut off too.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/bundles/prod", &slowReader{data: b})
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	assert.Equal(t, "1", strconv.Itoa(int(gauge(t, ts, "meshguard_distributor_rejected_requests_total")-1)))
}

// slowReader hides its length so the client sends a chunked body.
type slowReader struct{ data []byte }

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(r.data), 64)])
	r.data = r.data[n:]
	return n, nil
}
