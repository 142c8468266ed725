// Command bodychunk reads the request body chunk by chunk as Envoy buffers it
// and refuses the request with 403 once the pattern "foo" is seen (SDK
// example "http_body_chunk"; it has no e2e test upstream).
package main

import (
	"bytes"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct {
	types.DefaultHttpContext
	read int
	seen []byte
}

func (s *stream) OnHttpRequestBody(size int, end bool) types.Action {
	proxywasm.LogInfof("body callback: buffered %d, read %d, end %v", size, s.read, end)
	if n := size - s.read; n > 0 {
		chunk, err := proxywasm.GetHttpRequestBody(s.read, n)
		if err != nil {
			proxywasm.LogCriticalf("request body: %v", err)
			return types.ActionContinue
		}
		if len(chunk) != n {
			proxywasm.LogErrorf("read %d bytes, want %d", len(chunk), n)
		}
		s.read += len(chunk)
		s.seen = append(s.seen, chunk...)
		if bytes.Contains(s.seen, []byte("foo")) {
			proxywasm.LogInfo("pattern found")
			if err := proxywasm.SendHttpResponse(403, [][2]string{{"powered-by", "proxy-wasm-go-sdk"}}, []byte("content forbidden"), -1); err != nil {
				proxywasm.LogCriticalf("local response: %v", err)
			}
			return types.ActionPause
		}
	}
	if !end {
		return types.ActionPause // keep buffering: the next call sees the whole body so far
	}
	proxywasm.LogInfo("pattern not found")
	return types.ActionContinue
}
