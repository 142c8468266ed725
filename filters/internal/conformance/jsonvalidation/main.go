// Command jsonvalidation admits only application/json requests whose body is
// an object with the fields "id" and "token" (SDK example "json_validation").
package main

import (
	"encoding/json"
	"strings"

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

func deny(msg string) types.Action {
	if err := proxywasm.SendHttpResponse(403, nil, []byte(msg), -1); err != nil {
		proxywasm.LogErrorf("local response: %v", err)
	}
	return types.ActionPause
}

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	ct, err := proxywasm.GetHttpRequestHeader("content-type")
	if err != nil {
		return deny("content-type must be provided")
	}
	// Not mime.ParseMediaType: package mime reads /etc/mime.types and so
	// imports wasi path_filestat_get, which Envoy 1.33 does not provide (the
	// module would fail to load; see TestProfiles).
	if mt, _, _ := strings.Cut(ct, ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
		return deny("content-type must be application/json")
	}
	return types.ActionContinue
}

func (*stream) OnHttpRequestBody(size int, end bool) types.Action {
	if !end {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpRequestBody(0, size)
	if err != nil {
		proxywasm.LogErrorf("request body: %v", err)
		return deny("unreadable body")
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return deny("invalid JSON payload")
	}
	for _, f := range []string{"id", "token"} {
		if _, ok := doc[f]; !ok {
			return deny("missing field " + f)
		}
	}
	return types.ActionContinue
}
