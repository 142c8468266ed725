package host

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
)

type logCapture struct {
	mu    sync.Mutex
	lines []LogEntry
}

func (c *logCapture) sink(e LogEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, e)
}

func (c *logCapture) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.lines {
		out = append(out, e.Message)
	}
	return out
}

func loadHello(t *testing.T, cfg RuntimeConfig) (*Runtime, *Module) {
	t.Helper()
	bin, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello"))
	require.NoError(t, err)
	ctx := context.Background()
	rt, err := NewRuntime(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	mod, err := rt.Compile(ctx, bin)
	require.NoError(t, err)
	return rt, mod
}

func TestHelloFilterInHost(t *testing.T) {
	logs := &logCapture{}
	rt, mod := loadHello(t, RuntimeConfig{LogSink: logs.sink, LogLevel: LogInfo})
	assert.Equal(t, "0_2_1", mod.ABIVersion)
	p, err := rt.NewPlugin(context.Background(), mod, PluginConfig{Name: "hello", Configuration: []byte("grid"), Workers: 2})
	require.NoError(t, err)
	defer p.Close()

	s := p.NewStream(NewProps())
	v := s.RequestHeaders(Headers{{":method", "GET"}, {":path", "/v1/meters/1"}, {":authority", "meter"}}, true)
	assert.Equal(t, Verdict{Action: Continue}, v)
	v = s.ResponseHeaders(Headers{{":status", "200"}}, true)
	assert.Equal(t, Verdict{Action: Continue}, v)
	hello, ok := s.ResponseHeadersNow().Get("x-hello")
	assert.True(t, ok)
	assert.Equal(t, "grid", hello)
	s.Complete()

	d := p.NewStream(NewProps())
	v = d.RequestHeaders(Headers{{":method", "GET"}, {":path", "/hello/deny"}, {":authority", "x"}}, true)
	require.Equal(t, Reply, v.Action)
	lr := v.Reply
	assert.Equal(t, uint32(403), lr.Status)
	assert.Equal(t, "denied by hello\n", string(lr.Body))
	d.Complete()

	n, ok := rt.Stats().Counter("wasmcustom.hello_requests_total")
	assert.True(t, ok)
	assert.Equal(t, int64(2), n)
	assert.Contains(t, logs.messages(), "hello: request to /v1/meters/1")
}
