// Command httpbody buffers a request or response body and appends, prepends or
// replaces it as the request headers buffer-replace-at and buffer-operation say
// (SDK example "http_body").
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

type stream struct {
	types.DefaultHttpContext
	at, op string
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	s.at, _ = proxywasm.GetHttpRequestHeader("buffer-replace-at")
	s.op, _ = proxywasm.GetHttpRequestHeader("buffer-operation")
	// The body length changes: drop the stale content-length.
	if s.at == "request" {
		_ = proxywasm.RemoveHttpRequestHeader("content-length")
	}
	return types.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	if s.at == "response" {
		_ = proxywasm.RemoveHttpResponseHeader("content-length")
	}
	return types.ActionContinue
}

func (s *stream) OnHttpRequestBody(size int, end bool) types.Action {
	if s.at != "request" {
		return types.ActionContinue
	}
	if !end {
		return types.ActionPause // buffer until the whole body is there
	}
	body, err := proxywasm.GetHttpRequestBody(0, size)
	if err != nil {
		proxywasm.LogErrorf("request body: %v", err)
		return types.ActionContinue
	}
	proxywasm.LogInfof("original request body: %s", body)
	edit(s.op, proxywasm.AppendHttpRequestBody, proxywasm.PrependHttpRequestBody, proxywasm.ReplaceHttpRequestBody)
	return types.ActionContinue
}

func (s *stream) OnHttpResponseBody(size int, end bool) types.Action {
	if s.at != "response" {
		return types.ActionContinue
	}
	if !end {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpResponseBody(0, size)
	if err != nil {
		proxywasm.LogErrorf("response body: %v", err)
		return types.ActionContinue
	}
	proxywasm.LogInfof("original response body: %s", body)
	edit(s.op, proxywasm.AppendHttpResponseBody, proxywasm.PrependHttpResponseBody, proxywasm.ReplaceHttpResponseBody)
	return types.ActionContinue
}

func edit(op string, appendFn, prependFn, replaceFn func([]byte) error) {
	var err error
	switch op {
	case "append":
		err = appendFn([]byte("[this is appended body]"))
	case "prepend":
		err = prependFn([]byte("[this is prepended body]"))
	default: // "replace" and anything unknown
		err = replaceFn([]byte("[this is replaced body]"))
	}
	if err != nil {
		proxywasm.LogErrorf("%s body: %v", op, err)
	}
}
