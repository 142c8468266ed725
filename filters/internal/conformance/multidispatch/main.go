// Command multidispatch holds every response while ten http calls are in
// flight and resumes it when the last one answers (SDK example
// "multiple_dispatches").
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

const calls = 10

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct {
	types.DefaultHttpContext
	pending int
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	req := [][2]string{{":method", "GET"}, {":authority", "some_authority"}, {":path", "/"}, {"accept", "*/*"}}
	for range calls {
		if _, err := proxywasm.DispatchHttpCall("httpbin", req, nil, nil, 50000, s.onAnswer); err != nil {
			proxywasm.LogCriticalf("dispatch httpcall failed: %v", err)
			continue
		}
		s.pending++
	}
	if s.pending == 0 {
		return types.ActionContinue
	}
	return types.ActionPause
}

func (s *stream) onAnswer(int, int, int) {
	s.pending--
	if s.pending > 0 {
		proxywasm.LogInfof("pending dispatched requests: %d", s.pending)
		return
	}
	proxywasm.LogInfof("response resumed after processed %d dispatched request", calls)
	if err := proxywasm.ResumeHttpResponse(); err != nil {
		proxywasm.LogErrorf("resume response: %v", err)
	}
}
