package host_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

// TestLifecycleOrder checks the order and arguments of every callback Envoy
// makes, from a raw module that logs each one: start-up (_initialize before
// main(0,0)), the root context (parent 0), vm_start with the VM config size,
// configure with the plugin config size, then a full stream (a continued
// body chunk is not counted again in the next one) and its teardown (done,
// log, delete: proxy-wasm's onLog runs after onDone).
func TestLifecycleOrder(t *testing.T) {
	h := hosttest.New(t, wasmbuild.ForTest(t, testfilters+"lifecycle"),
		hosttest.VMConfig([]byte("vm-cfg")), hosttest.PluginConfig([]byte("plugin-config")))
	s := h.NewStream(nil)
	require.Equal(t, host.Continue, s.RequestHeaders(host.Headers{{":method", "POST"}, {":path", "/"}, {":authority", "a"}}, false).Action)
	require.Equal(t, host.Continue, s.RequestBody([]byte("abc"), false).Action)
	require.Equal(t, host.Continue, s.RequestBody([]byte("de"), false).Action)
	require.Equal(t, host.Continue, s.RequestTrailers(host.Headers{{"t", "1"}}).Action)
	require.Equal(t, host.Continue, s.ResponseHeaders(host.Headers{{":status", "200"}}, false).Action)
	require.Equal(t, host.Continue, s.ResponseBody([]byte("xy"), true).Action)
	s.Complete()

	root := h.Plugin.Worker(0).RootContextID()
	id := s.ID()
	want := []string{
		"main_after_initialize 0 0",
		fmt.Sprintf("context_create %d 0", root),
		fmt.Sprintf("vm_start %d 6", root),
		fmt.Sprintf("configure %d 13", root),
		fmt.Sprintf("context_create %d %d", id, root),
		fmt.Sprintf("request_headers %d 3 0", id),
		fmt.Sprintf("request_body %d 3 0", id),
		fmt.Sprintf("request_body %d 2 0", id),
		fmt.Sprintf("request_trailers %d 1", id),
		fmt.Sprintf("response_headers %d 1 0", id),
		fmt.Sprintf("response_body %d 2 1", id),
		fmt.Sprintf("done %d", id),
		fmt.Sprintf("log %d", id),
		fmt.Sprintf("delete %d", id),
	}
	assert.Equal(t, want, h.LogMessages(host.LogInfo))
}
