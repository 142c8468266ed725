// Command httpauth holds each request, asks the httpbin cluster, and grants or
// forbids access by the first byte of the answer (SDK example
// "http_auth_random").
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	hs, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		proxywasm.LogCriticalf("request headers: %v", err)
		return types.ActionContinue
	}
	for _, h := range hs {
		proxywasm.LogInfof("request header: %s: %s", h[0], h[1])
	}
	req := [][2]string{{":method", "GET"}, {":authority", "httpbin.org"}, {":path", "/uuid"}, {"accept", "*/*"}}
	if _, err := proxywasm.DispatchHttpCall("httpbin", req, nil, nil, 5000, s.onAnswer); err != nil {
		proxywasm.LogCriticalf("dispatch httpcall failed: %v", err)
		return types.ActionContinue
	}
	proxywasm.LogInfo("http call dispatched to httpbin")
	return types.ActionPause
}

func (s *stream) onAnswer(_, bodySize, _ int) {
	hs, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogCriticalf("callout response headers: %v", err)
		_ = proxywasm.ResumeHttpRequest()
		return
	}
	for _, h := range hs {
		proxywasm.LogInfof("response header from httpbin: %s: %s", h[0], h[1])
	}
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil || len(body) == 0 {
		proxywasm.LogCriticalf("callout response body: %v", err)
		_ = proxywasm.ResumeHttpRequest()
		return
	}
	if body[0]%2 == 0 {
		proxywasm.LogInfo("access granted")
		_ = proxywasm.ResumeHttpRequest()
		return
	}
	proxywasm.LogInfo("access forbidden")
	if err := proxywasm.SendHttpResponse(403, [][2]string{{"powered-by", "proxy-wasm-go-sdk!!"}}, []byte("access forbidden"), -1); err != nil {
		proxywasm.LogErrorf("local response: %v", err)
		_ = proxywasm.ResumeHttpRequest()
	}
}
