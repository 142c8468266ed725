package hosttest_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

const helloPkg = "github.com/meshguard/meshguard/filters/hello"

// recorder is a testing.TB that records failures instead of failing, so the
// harness's own assertions can be checked to fail when they must.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}
func (r *recorder) FailNow() {
	r.failed = append(r.failed, "FailNow")
	runtime.Goexit()
}

// run calls f with a recorder on its own goroutine (FailNow ends it).
func run(t *testing.T, f func(tb testing.TB)) []string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.failed
}

func TestHarnessDrivesHello(t *testing.T) {
	h := hosttest.New(t, wasmbuild.ForTest(t, helloPkg), hosttest.PluginConfig([]byte("grid")), hosttest.Workers(2))
	s := h.NewStream(nil)
	assert.Equal(t, host.Continue, s.Request("GET", "/v1/meters/7/readings").Action)
	s.ExpectNoLocalReply()
	s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	s.ExpectResponseHeader("x-hello", "grid")
	h.WaitLogs("hello: request to /v1/meters/7/readings")

	d := h.NewStreamOn(1, nil)
	assert.Equal(t, host.Reply, d.Request("GET", "/hello/deny").Action)
	lr := d.ExpectLocalReply(403)
	assert.Equal(t, "denied by hello\n", string(lr.Body))
	assert.Equal(t, int64(2), h.Counter("wasmcustom.hello_requests_total"), "counted on both workers")

	// A second plugin in the same runtime: its logs are captured too.
	other := h.AddPlugin(hosttest.Name("other"), hosttest.PluginConfig([]byte("ops")))
	o := h.StreamOf(other, nil)
	o.Request("GET", "/other")
	o.ResponseHeaders(host.Headers{{":status", "204"}}, true)
	o.ExpectResponseHeader("x-hello", "ops")
	assert.True(t, h.HasLogs("hello: request to /other", "hello: request to /hello/deny"))
	assert.False(t, h.HasLogs("hello: request to /never"))
}

// The helpers must fail when the module did not do what they expect.
func TestHarnessAssertionsFail(t *testing.T) {
	for name, f := range map[string]func(*hosttest.Harness, *hosttest.Stream){
		"local reply expected": func(_ *hosttest.Harness, s *hosttest.Stream) { s.ExpectLocalReply(403) },
		"wrong status":         func(_ *hosttest.Harness, s *hosttest.Stream) { s.ExpectLocalReply(401) },
		"unexpected reply":     func(_ *hosttest.Harness, s *hosttest.Stream) { s.ExpectNoLocalReply() },
		"wrong header value":   func(_ *hosttest.Harness, s *hosttest.Stream) { s.ExpectResponseHeader("x-hello", "mars") },
		"missing log":          func(h *hosttest.Harness, _ *hosttest.Stream) { h.ExpectLog("no such line") },
		"control":              func(h *hosttest.Harness, _ *hosttest.Stream) { h.ExpectLog("hello: request to /ok") },
	} {
		t.Run(name, func(t *testing.T) {
			failed := run(t, func(tb testing.TB) {
				hh := hosttest.New(tb, wasmbuild.ForTest(t, helloPkg))
				st := hh.NewStream(nil)
				path := "/ok"
				if name == "unexpected reply" || name == "wrong status" {
					path = "/hello/deny"
				}
				st.Request("GET", path)
				if path == "/ok" {
					st.ResponseHeaders(host.Headers{{":status", "200"}}, true)
				}
				f(hh, st)
			})
			if name == "control" {
				require.Empty(t, failed, "set-up and a true expectation must not fail")
				return
			}
			require.NotEmpty(t, failed, "the helper must report a failure")
		})
	}
}
