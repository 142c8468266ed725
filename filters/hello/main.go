// Command hello is meshguard's example filter: the smallest real filter built
// with the standard Go toolchain through filters/abi. It greets every response
// with an x-hello header (the plugin configuration, or "world"), counts
// requests in a Proxy-Wasm metric, and answers /hello/deny with a local 403.
//
// It registers its VM context from main(), TinyGo style, to prove that such
// filters work unchanged.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{greeting: "world"}
}

type pluginContext struct {
	types.DefaultPluginContext
	greeting string
	requests proxywasm.MetricCounter
}

func (p *pluginContext) OnPluginStart(size int) types.OnPluginStartStatus {
	p.requests = proxywasm.DefineCounterMetric("hello_requests_total")
	if size == 0 {
		return types.OnPluginStartStatusOK
	}
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogCriticalf("hello: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if len(cfg) > 0 {
		p.greeting = string(cfg)
	}
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	return &httpContext{plugin: p}
}

type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	h.plugin.requests.Increment(1)
	path, err := proxywasm.GetHttpRequestHeader(":path")
	if err != nil {
		proxywasm.LogErrorf("hello: no :path: %v", err)
		return types.ActionContinue
	}
	proxywasm.LogInfof("hello: request to %s", path)
	if path == "/hello/deny" {
		if err := proxywasm.SendHttpResponse(403, [][2]string{{"content-type", "text/plain"}}, []byte("denied by hello\n"), -1); err != nil {
			proxywasm.LogErrorf("hello: local response: %v", err)
		}
		return types.ActionPause
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if err := proxywasm.AddHttpResponseHeader("x-hello", h.plugin.greeting); err != nil {
		proxywasm.LogErrorf("hello: add header: %v", err)
	}
	return types.ActionContinue
}
