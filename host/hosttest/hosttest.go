// Package hosttest drives real .wasm filters in meshguard's Envoy-like host
// from Go tests: load a module, configure the plugin, open streams, read back
// what the filter did (headers, local replies, logs, metrics, callouts) and
// move a manual clock for ticks and timeouts.
//
//	h := hosttest.New(t, wasmbuild.ForTest(t, pkg), hosttest.PluginConfig(cfg))
//	s := h.NewStream(nil)
//	s.Request("GET", "/v1/meters/7/readings")
//	s.ExpectLocalReply(403)
package hosttest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host"
)

// Epoch is where every harness clock starts.
var Epoch = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

type options struct {
	rt       host.RuntimeConfig
	plugin   host.PluginConfig
	clusters []string
}

// Option configures a Harness.
type Option func(*options)

// PluginConfig sets the configuration handed to proxy_on_configure.
func PluginConfig(b []byte) Option { return func(o *options) { o.plugin.Configuration = b } }

// VMConfig sets the configuration handed to proxy_on_vm_start.
func VMConfig(b []byte) Option { return func(o *options) { o.plugin.VMConfig = b } }

// Workers sets the number of worker VMs.
func Workers(n int) Option { return func(o *options) { o.plugin.Workers = n } }

// Profile selects the emulated Envoy release.
func Profile(p host.Profile) Option { return func(o *options) { o.rt.Profile = p } }

// FailurePolicy sets the plugin's failure policy.
func FailurePolicy(f host.FailurePolicy) Option {
	return func(o *options) { o.plugin.FailurePolicy = f }
}

// Env sets vm_config.environment_variables.
func Env(env map[string]string) Option { return func(o *options) { o.plugin.Env = env } }

// Cluster adds a recording cluster: its callouts wait until the test answers.
func Cluster(name string) Option { return func(o *options) { o.clusters = append(o.clusters, name) } }

// ClusterHandler adds a cluster served by a Go function.
func ClusterHandler(name string, c host.Cluster) Option {
	return func(o *options) {
		if o.plugin.Clusters == nil {
			o.plugin.Clusters = map[string]host.Cluster{}
		}
		o.plugin.Clusters[name] = c
	}
}

// Properties sets plugin-level properties (xds.*, node ...).
func Properties(p *host.Props) Option { return func(o *options) { o.plugin.Properties = p } }

// CallbackDeadline bounds each callback.
func CallbackDeadline(d time.Duration) Option { return func(o *options) { o.rt.CallbackDeadline = d } }

// MemoryLimitPages caps each VM's memory.
func MemoryLimitPages(n uint32) Option { return func(o *options) { o.rt.MemoryLimitPages = n } }

// Name sets the plugin name and vm_id.
func Name(name string) Option {
	return func(o *options) { o.plugin.Name, o.plugin.VMID = name, name }
}

// Logger receives host events (VM failures, ...).
func Logger(l *slog.Logger) Option { return func(o *options) { o.rt.Logger = l } }

// LogLevel sets the proxy log level.
func LogLevel(l host.LogLevel) Option { return func(o *options) { o.rt.LogLevel = l } }

// Harness is a running plugin under test.
type Harness struct {
	t       testing.TB
	Runtime *host.Runtime
	Plugin  *host.Plugin
	Module  *host.Module
	Clock   *host.ManualClock

	mu       sync.Mutex
	logs     []host.LogEntry
	callouts []*Callout
}

// New starts the plugin and fails the test if it does not start.
func New(t testing.TB, wasmPath string, opts ...Option) *Harness {
	t.Helper()
	h, err := Start(t, wasmPath, opts...)
	require.NoError(t, err)
	return h
}

// Start starts the plugin and returns the start error (for tests of modules
// that must be refused).
func Start(t testing.TB, wasmPath string, opts ...Option) (*Harness, error) {
	t.Helper()
	bin, err := os.ReadFile(wasmPath)
	require.NoError(t, err)
	h := &Harness{t: t, Clock: host.NewManualClock(Epoch)}
	o := options{}
	o.rt.LogLevel = host.LogTrace
	for _, opt := range opts {
		opt(&o)
	}
	o.rt.Clock = h.Clock
	o.rt.LogSink = h.addLog
	if o.rt.Logger == nil {
		// Module logs are captured by the harness; host events go nowhere
		// unless a test asks (Logger option).
		o.rt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx := context.Background()
	rt, err := host.NewRuntime(ctx, o.rt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	h.Runtime = rt
	mod, err := rt.Compile(ctx, bin)
	if err != nil {
		return h, err
	}
	h.Module = mod
	if o.plugin.Clusters == nil {
		o.plugin.Clusters = map[string]host.Cluster{}
	}
	for _, name := range o.clusters {
		o.plugin.Clusters[name] = host.ClusterFunc(h.record)
	}
	if o.plugin.Name == "" {
		o.plugin.Name, o.plugin.VMID = "test", "test"
	}
	p, err := rt.NewPlugin(ctx, mod, o.plugin)
	if err != nil {
		return h, err
	}
	h.Plugin = p
	t.Cleanup(p.Close)
	return h, nil
}

func (h *Harness) addLog(e host.LogEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, e)
}

// Logs returns every module log line so far.
func (h *Harness) Logs() []host.LogEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]host.LogEntry(nil), h.logs...)
}

// LogMessages returns the messages of every log line at or above level.
func (h *Harness) LogMessages(level host.LogLevel) []string {
	var out []string
	for _, e := range h.Logs() {
		if e.Level >= level {
			out = append(out, e.Message)
		}
	}
	return out
}

// ExpectLog asserts some log line contains substr.
func (h *Harness) ExpectLog(substr string) {
	h.t.Helper()
	for _, m := range h.LogMessages(host.LogTrace) {
		if strings.Contains(m, substr) {
			return
		}
	}
	assert.Failf(h.t, "log line not found", "no log line contains %q; logs:\n%s", substr, strings.Join(h.LogMessages(host.LogTrace), "\n"))
}

// Counter returns a counter or gauge by full name (e.g. "wasmcustom.x").
func (h *Harness) Counter(name string) int64 {
	v, _ := h.Runtime.Stats().Counter(name)
	return v
}

// Advance moves the clock, firing ticks and callout timeouts.
func (h *Harness) Advance(d time.Duration) { h.Clock.Advance(d) }

// Callout is a callout waiting for the test's answer.
type Callout struct {
	Request *host.CalloutRequest
	reply   func(*host.CalloutResponse)
	done    bool
}

func (h *Harness) record(req *host.CalloutRequest, reply func(*host.CalloutResponse)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.callouts = append(h.callouts, &Callout{Request: req, reply: reply})
}

// Callouts returns callouts not answered yet.
func (h *Harness) Callouts() []*Callout {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Callout
	for _, c := range h.callouts {
		if !c.done {
			out = append(out, c)
		}
	}
	return out
}

// NextCallout returns the oldest unanswered callout, failing the test if none.
func (h *Harness) NextCallout() *Callout {
	h.t.Helper()
	cs := h.Callouts()
	require.NotEmpty(h.t, cs, "expected a pending callout")
	return cs[0]
}

// Header returns a request header of the callout.
func (c *Callout) Header(k string) string {
	v, _ := c.Request.Headers.Get(k)
	return v
}

// Respond answers the callout with a status, headers and body.
func (c *Callout) Respond(status string, headers host.Headers, body []byte) {
	c.done = true
	c.reply(&host.CalloutResponse{Headers: append(host.Headers{{":status", status}}, headers...), Body: body})
}

// Fail answers the callout with a failure (num_headers = 0).
func (c *Callout) Fail() {
	c.done = true
	c.reply(nil)
}

// Stream wraps a host stream with test helpers.
type Stream struct {
	*host.Stream
	t testing.TB
}

// NewStream opens a stream on the next worker.
func (h *Harness) NewStream(props *host.Props) *Stream {
	if props == nil {
		props = host.NewProps()
	}
	return &Stream{Stream: h.Plugin.NewStream(props), t: h.t}
}

// NewStreamOn opens a stream on worker i.
func (h *Harness) NewStreamOn(i int, props *host.Props) *Stream {
	if props == nil {
		props = host.NewProps()
	}
	return &Stream{Stream: h.Plugin.NewStreamOn(i, props), t: h.t}
}

// Request sends request headers (end of stream) for method and path, with
// :authority "test" unless given in extra, and returns the filter's verdict.
func (s *Stream) Request(method, path string, extra ...[2]string) host.Verdict {
	hdrs := host.Headers{{":method", method}, {":path", path}, {":scheme", "https"}}
	if _, ok := host.Headers(extra).Get(":authority"); !ok {
		hdrs = append(hdrs, [2]string{":authority", "test"})
	}
	return s.RequestHeaders(append(hdrs, extra...), true)
}

// Verdict is the stream's verdict now, without waiting.
func (s *Stream) Verdict() host.Verdict {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.Stream.Wait(ctx)
}

// LocalReply is the stream's local reply now, nil if it has none.
func (s *Stream) LocalReply() *host.LocalReply { return s.Verdict().Reply }

// Wait waits (at most a few seconds) while the stream is paused and returns
// its verdict (Pause if the module did not decide in time).
func (s *Stream) Wait() host.Verdict {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return s.Stream.Wait(ctx)
}

// ExpectLocalReply asserts the stream was, or while paused gets, answered
// locally with status, and returns the reply.
func (s *Stream) ExpectLocalReply(status uint32) *host.LocalReply {
	s.t.Helper()
	v := s.Wait()
	require.Equal(s.t, host.Reply, v.Action, "expected a local reply %d", status)
	assert.Equal(s.t, status, v.Reply.Status, "local reply status; body %q", v.Reply.Body)
	return v.Reply
}

// ExpectNoLocalReply asserts the stream has not been answered locally.
func (s *Stream) ExpectNoLocalReply() {
	s.t.Helper()
	if lr := s.LocalReply(); lr != nil {
		assert.Failf(s.t, "unexpected local reply", "status %d body %q", lr.Status, lr.Body)
	}
}

// RequestHeader returns a request header as the filter left it.
func (s *Stream) RequestHeader(k string) (string, bool) { return s.RequestHeadersNow().Get(k) }

// ResponseHeader returns a response header as the filter left it.
func (s *Stream) ResponseHeader(k string) (string, bool) { return s.ResponseHeadersNow().Get(k) }
