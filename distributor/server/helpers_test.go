package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// testServer is a distributor serving on a loopback port.
type testServer struct {
	*Server
	URL    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is the default config over a temp data dir with plain HTTP.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.InsecureHTTP = true
	cfg.Tokens.Env = ""
	cfg.ShutdownTimeout = 5 * time.Second
	// The channels the tests publish to (auto_channels is off by default).
	cfg.Bundles.Channels = map[string]ChannelConfig{"prod": {}, "edge": {}}
	return cfg
}

func startServer(t testing.TB, cfg Config, opts Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := New(context.Background(), cfg, opts)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, cancel: cancel, done: make(chan error, 1)}
	scheme := "http"
	if s.TLSConfig() != nil {
		scheme = "https"
	}
	ts.URL = scheme + "://" + ln.Addr().String()
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop shuts the server down and returns Serve's result.
func (ts *testServer) stop() {
	ts.once.Do(func() {
		ts.cancel()
		select {
		case ts.err = <-ts.done:
		case <-time.After(10 * time.Second):
			ts.err = errors.New("server did not stop within 10s")
		}
	})
}

type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body, v), string(r.Body))
}

func do(t testing.TB, c *http.Client, method, url string, body []byte, hdr ...string) resp {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	if body == nil {
		req.Body = nil
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return resp{Code: res.StatusCode, Header: res.Header, Body: b}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// verifyData verifies the decision log under data offline against the
// checkpoint key the distributor generated there.
func verifyData(t *testing.T, data string) (decisionlog.Report, error) {
	t.Helper()
	v, err := decisionlog.ParseVerifier(filepath.Join(data, "checkpoint.key.pub"))
	require.NoError(t, err)
	return decisionlog.VerifyDir(filepath.Join(data, "decisions"), decisionlog.VerifyOptions{Key: v})
}
