package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

// observation is what a host shows of one request through the filter.
type observation struct {
	Paused      bool
	LocalStatus uint32
	LocalBody   string
	XHello      []string
	Counter     int64
	InfoLogs    []string
}

type diffCase struct {
	name, config string
	paths        []string
}

var diffCases = []diffCase{
	{"default greeting", "", []string{"/v1/meters/1/readings"}},
	{"configured greeting", "grid", []string{"/", "/a?b=c"}},
	{"denied path", "", []string{"/hello/deny"}},
	{"mixed", "ops", []string{"/x", "/hello/deny", "/y"}},
}

func requestHeaders(path string) [][2]string {
	return [][2]string{{":method", "GET"}, {":path", path}, {":authority", "meter"}, {":scheme", "https"}}
}

func observeNative(t *testing.T, tc diffCase) []observation {
	opt := proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(tc.config))
	emu, reset := proxytest.NewHostEmulator(opt)
	defer reset()
	require.Equal(t, types.OnPluginStartStatusOK, emu.StartPlugin())
	var out []observation
	seen := 0
	for _, p := range tc.paths {
		var o observation
		id := emu.InitializeHttpContext()
		o.Paused = emu.CallOnRequestHeaders(id, requestHeaders(p), true) == types.ActionPause
		if lr := emu.GetSentLocalResponse(id); lr != nil {
			o.LocalStatus, o.LocalBody = lr.StatusCode, string(lr.Data)
		} else {
			emu.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, true)
			for _, h := range emu.GetCurrentResponseHeaders(id) {
				if h[0] == "x-hello" {
					o.XHello = append(o.XHello, h[1])
				}
			}
		}
		v, err := emu.GetCounterMetric("hello_requests_total")
		require.NoError(t, err)
		o.Counter = int64(v)
		logs := emu.GetInfoLogs()
		o.InfoLogs = append([]string(nil), logs[seen:]...)
		seen = len(logs)
		out = append(out, o)
	}
	return out
}

func observeWasm(t *testing.T, wasm string, tc diffCase) []observation {
	h := hosttest.New(t, wasm, hosttest.PluginConfig([]byte(tc.config)))
	var out []observation
	seen := 0
	for _, p := range tc.paths {
		var o observation
		s := h.NewStream(nil)
		v := s.RequestHeaders(requestHeaders(p), true)
		// The SDK reports Pause for a callback that answered locally; the
		// host's verdict says Reply: both stopped the iteration.
		o.Paused = v.Action != host.Continue
		if lr := v.Reply; lr != nil {
			o.LocalStatus, o.LocalBody = lr.Status, string(lr.Body)
		} else {
			s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
			for _, h := range s.ResponseHeadersNow() {
				if h[0] == "x-hello" {
					o.XHello = append(o.XHello, h[1])
				}
			}
		}
		o.Counter = h.Counter("wasmcustom.hello_requests_total")
		var info []string
		for _, e := range h.Logs() {
			if e.Level == host.LogInfo {
				info = append(info, e.Message)
			}
		}
		o.InfoLogs = append([]string(nil), info[seen:]...)
		seen = len(info)
		out = append(out, o)
	}
	return out
}

// TestHelloDifferential runs the same requests through the filter natively
// under the SDK's proxytest emulator and as .wasm in meshguard's host, and
// requires both to observe the same behaviour.
func TestHelloDifferential(t *testing.T) {
	wasm := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello")
	for _, tc := range diffCases {
		t.Run(tc.name, func(t *testing.T) {
			native := observeNative(t, tc)
			inHost := observeWasm(t, wasm, tc)
			assert.Equal(t, native, inHost)
			// Guard against both sides observing nothing.
			require.Len(t, native, len(tc.paths))
			assert.Equal(t, int64(len(tc.paths)), native[len(native)-1].Counter)
			for i, p := range tc.paths {
				assert.Equal(t, []string{"hello: request to " + p}, native[i].InfoLogs)
			}
		})
	}
}
