package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
)

// trickle opens a raw connection, sends head and then one byte of body
// every interval until the connection breaks or stop closes.
func trickle(t *testing.T, addr, head string, interval time.Duration, stop <-chan struct{}) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, head)
	require.NoError(t, err)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			if _, err := c.Write([]byte(" ")); err != nil { // JSON whitespace: never a syntax error
				return
			}
		}
	}()
	return c
}

// answerAndClose reads the status line and then expects the server to
// close the connection; the bound is far below what the body would take.
func answerAndClose(t *testing.T, c net.Conn, bound time.Duration) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(bound)))
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	require.NoError(t, err, "no answer while the body trickles")
	_, err = io.Copy(io.Discard, br)
	if !errors.Is(err, syscall.ECONNRESET) { // a reset is a close with unread data
		require.NoError(t, err, "the server must close the connection, not wait for the body")
	}
	return strings.TrimSpace(status)
}

func slowConfig(t *testing.T) Config {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("proxy:p1\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{auth.ActionIngest: {"token:proxy"}, auth.ActionRead: {"token:proxy"}, auth.ActionPush: {"token:proxy"}}
	cfg.Limits.BodyTimeout = time.Second
	cfg.Limits.BodyMinRate = 1 << 10
	return cfg
}

// TestSlowBodiesWithoutCredentialsAreDroppedAtOnce: 50 connections that
// declare a large body and send it one byte at a time, without
// credentials, get their 401/403 at once and lose the connection.
func TestSlowBodiesWithoutCredentialsAreDroppedAtOnce(t *testing.T) {
	ts := startServer(t, slowConfig(t), Options{})
	addr := strings.TrimPrefix(ts.URL, "http://")
	stop := make(chan struct{})
	defer close(stop)
	heads := []string{
		"POST /v1/decisions HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[",
		"POST /v2/filters/guard/blobs/uploads/ HTTP/1.1\r\nHost: d\r\nContent-Length: 1000000\r\n\r\nx",
		"POST /v1/bundles/prod HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
		"POST /v1/decisions HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer wrong\r\nContent-Length: 1000000\r\n\r\n[",
	}
	var wg sync.WaitGroup
	for i := range 50 {
		c := trickle(t, addr, heads[i%len(heads)], 200*time.Millisecond, stop)
		wg.Add(1)
		go func() {
			defer wg.Done()
			status := answerAndClose(t, c, 5*time.Second)
			assert.Regexp(t, `^HTTP/1.1 40[13] `, status)
		}()
	}
	wg.Wait()
}

// TestSlowAuthenticatedBodyIsCutAtTheMinimumRate: a client with
// credentials that sends its body below the minimum rate gets 408 and
// loses the connection; one at the rate is served.
func TestSlowAuthenticatedBodyIsCutAtTheMinimumRate(t *testing.T) {
	ts := startServer(t, slowConfig(t), Options{})
	addr := strings.TrimPrefix(ts.URL, "http://")
	stop := make(chan struct{})
	defer close(stop)
	for _, head := range []string{
		"POST /v1/decisions HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer p1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[",
		"PATCH /v2/filters/guard/blobs/uploads/%s HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer p1\r\nContent-Length: 100000\r\n\r\nx",
		"POST /v1/decisions HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer p1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", // nothing at all
	} {
		if strings.Contains(head, "%s") {
			r := do(t, nil, "POST", ts.URL+"/v2/filters/guard/blobs/uploads/", nil, "Authorization", "Bearer p1")
			require.Equal(t, 202, r.Code)
			head = fmt.Sprintf(head, strings.TrimPrefix(r.Header.Get("Location"), "/v2/filters/guard/blobs/uploads/"))
		}
		c := trickle(t, addr, head, 100*time.Millisecond, stop)
		status := answerAndClose(t, c, 15*time.Second)
		assert.Equal(t, "HTTP/1.1 408 Request Timeout", status, head)
	}
	// A body at a normal pace passes.
	r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisionBatch(0, 500), "Authorization", "Bearer p1", "Content-Type", "application/json")
	assert.Equal(t, 200, r.Code, string(r.Body))
}

// TestConnectionCap: past limits.max_connections a new connection is
// closed at once; when one is freed, clients get in again.
func TestConnectionCap(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.MaxConnections = 8
	ts := startServer(t, cfg, Options{})
	addr := strings.TrimPrefix(ts.URL, "http://")
	var idle []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		idle = append(idle, c)
	}
	// The server has accepted all eight once a request on one is served.
	fmt.Fprint(idle[0], "GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n")
	require.NoError(t, idle[0].SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := bufio.NewReader(idle[0]).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "200")

	extra, err := net.Dial("tcp", addr)
	if err == nil { // the reset may also beat the dial's return
		defer extra.Close()
		require.NoError(t, extra.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = extra.Read(make([]byte, 1))
	}
	require.Error(t, err, "the ninth connection is closed by the server")
	require.NotContains(t, err.Error(), "timeout", "closed at once, not left waiting")

	idle[1].Close()
	require.Eventually(t, func() bool {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(ts.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 5*time.Second, 20*time.Millisecond)
}

// TestBudgetQueuesThenRefuses: a class at its budget queues requests up
// to the queue timeout, then they are refused; other classes are not
// affected.
func TestBudgetQueuesThenRefuses(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.Concurrency = ConcurrencyConfig{Pull: 1, Ingest: 4, QueueTimeout: 200 * time.Millisecond}
	ts := startServer(t, cfg, Options{})
	b := ts.budgets[classPull]
	release, ok := b.acquire(t.Context())
	require.True(t, ok)
	r := do(t, nil, "GET", ts.URL+"/v2/filters/guard/manifests/v1", nil)
	assert.Equal(t, 503, r.Code, "the pull budget is taken: queued, then refused")
	assert.Equal(t, "5", r.Header.Get("Retry-After"))
	assert.Contains(t, string(r.Body), `"UNAVAILABLE"`)
	assert.Equal(t, 200, do(t, nil, "POST", ts.URL+"/v1/decisions", decisionBatch(0, 5)).Code, "ingest has its own budget")
	done := make(chan int, 1)
	go func() { done <- do(t, nil, "GET", ts.URL+"/v2/filters/guard/manifests/v1", nil).Code }()
	time.Sleep(50 * time.Millisecond)
	release()
	assert.Equal(t, 404, <-done, "a queued request runs once a slot frees")
}
