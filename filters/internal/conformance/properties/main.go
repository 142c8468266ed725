// Command properties requires, per route, the auth header named in the route's
// filter metadata (SDK example "properties"): a request without it gets 401.
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

// authHeaderPath is where the route's metadata names its auth header.
var authHeaderPath = []string{"xds", "route_metadata", "filter_metadata", "envoy.filters.http.wasm", "auth_header"}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	name, err := proxywasm.GetProperty(authHeaderPath)
	if err != nil {
		proxywasm.LogInfo("no auth header for route")
		return types.ActionContinue
	}
	proxywasm.LogInfof("auth header is %q", name)
	if _, err := proxywasm.GetHttpRequestHeader(string(name)); err != nil {
		if err := proxywasm.SendHttpResponse(401, nil, []byte("unauthorized\n"), -1); err != nil {
			proxywasm.LogErrorf("local response: %v", err)
		}
		return types.ActionPause
	}
	return types.ActionContinue
}
