package hosttest

import (
	"strings"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host"
)

// waitFor bounds waits for work the host finishes after a test's call returns
// (callout answers and ticks are delivered on the VM's own goroutine).
const waitFor = 5 * time.Second

// HasLogs reports whether every substr is contained in some module log line.
func (h *Harness) HasLogs(substrs ...string) bool {
	msgs := h.LogMessages(host.LogTrace)
	for _, want := range substrs {
		found := false
		for _, m := range msgs {
			if strings.Contains(m, want) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// WaitLogs waits until every substr is contained in some module log line and
// fails the test (printing all logs) if that does not happen.
func (h *Harness) WaitLogs(substrs ...string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.HasLogs(substrs...) }, waitFor, time.Millisecond,
		"want log lines containing %q; logs:\n%s", substrs, strings.Join(h.LogMessages(host.LogTrace), "\n"))
}

// WaitContinued waits until the module resumes the paused stream with
// proxy_continue_stream and fails the test if it is answered, reset or still
// paused instead.
func (s *Stream) WaitContinued() {
	s.t.Helper()
	v := s.Wait()
	require.Equal(s.t, host.Continue, v.Action, "stream %d: want the stream resumed; reply %+v", s.ID(), v.Reply)
}

// ExpectRequestHeader asserts the request header k has value v now.
func (s *Stream) ExpectRequestHeader(k, v string) {
	s.t.Helper()
	got, ok := s.RequestHeader(k)
	assert.True(s.t, ok, "request header %q missing; headers %v", k, s.RequestHeadersNow())
	assert.Equal(s.t, v, got, "request header %q", k)
}

// ExpectResponseHeader asserts the response header k has value v now.
func (s *Stream) ExpectResponseHeader(k, v string) {
	s.t.Helper()
	got, ok := s.ResponseHeader(k)
	assert.True(s.t, ok, "response header %q missing; headers %v", k, s.ResponseHeadersNow())
	assert.Equal(s.t, v, got, "response header %q", k)
}
