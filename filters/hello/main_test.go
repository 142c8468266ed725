package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// The filter runs natively under the SDK's proxytest: the adapter's files are
// wasip1-only, so native unit tests of filter packages keep working.
func TestHelloNative(t *testing.T) {
	cases := []struct {
		name       string
		config     string
		path       string
		wantAction types.Action
		wantStatus uint32
		wantHello  string
	}{
		{"default greeting", "", "/v1/meters/1/readings", types.ActionContinue, 0, "world"},
		{"configured greeting", "grid", "/", types.ActionContinue, 0, "grid"},
		{"denied path", "", "/hello/deny", types.ActionPause, 403, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt := proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(tc.config))
			host, reset := proxytest.NewHostEmulator(opt)
			defer reset()
			require.Equal(t, types.OnPluginStartStatusOK, host.StartPlugin())

			id := host.InitializeHttpContext()
			action := host.CallOnRequestHeaders(id, [][2]string{{":path", tc.path}, {":method", "GET"}, {":authority", "meter"}}, true)
			assert.Equal(t, tc.wantAction, action)
			if tc.wantStatus != 0 {
				resp := host.GetSentLocalResponse(id)
				require.NotNil(t, resp)
				assert.Equal(t, tc.wantStatus, resp.StatusCode)
				assert.Equal(t, "denied by hello\n", string(resp.Data))
				return
			}
			assert.Equal(t, types.ActionContinue, host.CallOnResponseHeaders(id, nil, true))
			assert.Contains(t, host.GetCurrentResponseHeaders(id), [2]string{"x-hello", tc.wantHello})
			v, err := host.GetCounterMetric("hello_requests_total")
			require.NoError(t, err)
			assert.Equal(t, uint64(1), v)
			assert.Contains(t, host.GetInfoLogs(), "hello: request to "+tc.path)
		})
	}
}
