// Command dispatchtick sends an http call from the root context on every tick
// and logs the answer's headers (SDK example "dispatch_call_on_tick").
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(id uint32) types.PluginContext { return &plugin{id: id} }

type plugin struct {
	types.DefaultPluginContext
	id    uint32
	calls int
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	if err := proxywasm.SetTickPeriodMilliSeconds(100); err != nil {
		proxywasm.LogCriticalf("set tick period: %v", err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnTick() {
	req := [][2]string{{":method", "GET"}, {":authority", "some_authority"}, {":path", "/path/to/service"}, {"accept", "*/*"}}
	if _, err := proxywasm.DispatchHttpCall("web_service", req, nil, nil, 5000, p.onAnswer); err != nil {
		proxywasm.LogCriticalf("dispatch httpcall failed: %v", err)
	}
}

func (p *plugin) onAnswer(int, int, int) {
	p.calls++
	proxywasm.LogInfof("called %d for contextID=%d", p.calls, p.id)
	hs, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogCriticalf("callout response headers: %v", err)
		return
	}
	for _, h := range hs {
		proxywasm.LogInfof("response header from web_service: %s: %s", h[0], h[1])
	}
}
