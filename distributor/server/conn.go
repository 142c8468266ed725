package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimit caps open connections: past the cap a new connection is closed
// at once (the client sees a reset and retries) rather than left waiting in
// the accept queue, and the process keeps file descriptors for its files.
type connLimit struct {
	net.Listener
	max      int64
	open     atomic.Int64
	refused  prometheus.Counter
	openConn prometheus.Gauge
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Inc()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset: nothing to flush, no TIME_WAIT
			}
			c.Close()
			continue
		}
		l.openConn.Inc()
		return &limitedConn{Conn: c, l: l}, nil
	}
}

type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.openConn.Dec()
	})
	return c.Conn.Close()
}

// defaultMaxConnections is three quarters of the file descriptor limit
// (the rest is for segments, blobs and the registry), at least 64.
func defaultMaxConnections() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 || rl.Cur > 1<<20 {
		return 1 << 15
	}
	return max(64, int64(rl.Cur)*3/4)
}

// errBodyTooSlow is returned by a request body that falls below the
// minimum rate; it wraps os.ErrDeadlineExceeded.
var errBodyTooSlow = fmt.Errorf("request body arrived slower than the minimum rate: %w", os.ErrDeadlineExceeded)

// rateBody enforces a body deadline with a minimum rate: the first bytes
// must come within grace, and from then on the body must average at least
// rate bytes per second. The connection's read deadline does it, so a
// stalled client is cut off even while no Read is returning.
type rateBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  float64
	n     int64
	err   error
}

func newRateBody(w http.ResponseWriter, body io.ReadCloser, grace time.Duration, rate float64) *rateBody {
	return &rateBody{ReadCloser: body, rc: http.NewResponseController(w), start: time.Now(), grace: grace, rate: rate}
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// Allowed: the grace, plus the time the bytes so far and this read
	// need at the minimum rate (at most a second's worth for this read,
	// whatever the caller's buffer).
	next := min(float64(len(p)), b.rate)
	allow := b.grace + time.Duration((float64(b.n)+next)/b.rate*float64(time.Second))
	_ = b.rc.SetReadDeadline(b.start.Add(allow))
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.err = errBodyTooSlow
		return n, b.err
	}
	if err == io.EOF {
		// The whole body is in: a deadline left behind would fail the
		// server's background read and cancel the request's context.
		b.done()
	}
	return n, err
}

// done lifts the deadline once the handler has the whole body, so a slow
// response or long poll is not cut by it.
func (b *rateBody) done() { _ = b.rc.SetReadDeadline(time.Time{}) }
