// Command headers reads request headers the way a policy filter does (a
// fixed number of header lookups per request, no logging). The plugin
// configuration is the number of lookups; benchmarks derive the cost of one
// hostcall from it.
package main

import (
	"strconv"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{lookups: 3} }

type plugin struct {
	types.DefaultPluginContext
	lookups int
}

func (p *plugin) OnPluginStart(size int) types.OnPluginStartStatus {
	if size > 0 {
		cfg, err := proxywasm.GetPluginConfiguration()
		if err != nil {
			return types.OnPluginStartStatusFailed
		}
		n, err := strconv.Atoi(string(cfg))
		if err != nil {
			return types.OnPluginStartStatusFailed
		}
		p.lookups = n
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

var names = [...]string{":path", ":method", ":authority"}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	for i := range s.p.lookups {
		if _, err := proxywasm.GetHttpRequestHeader(names[i%len(names)]); err != nil {
			return types.ActionPause
		}
	}
	return types.ActionContinue
}
