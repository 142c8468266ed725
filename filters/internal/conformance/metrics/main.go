// Command metrics counts requests per value of my-custom-header in a counter
// whose name carries Envoy-extractable tags (SDK example "metrics").
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext {
	return &plugin{counters: map[string]proxywasm.MetricCounter{}}
}

type plugin struct {
	types.DefaultPluginContext
	counters map[string]proxywasm.MetricCounter
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	v, err := proxywasm.GetHttpRequestHeader("my-custom-header")
	if err != nil {
		return types.ActionContinue // no header: nothing to count
	}
	c, ok := s.p.counters[v]
	if !ok {
		// Envoy's stats_config tag extraction turns "_value=" and
		// "_reporter=" into Prometheus labels.
		c = proxywasm.DefineCounterMetric("custom_header_value_counts_value=" + v + "_reporter=wasmgosdk")
		s.p.counters[v] = c
	}
	c.Increment(1)
	return types.ActionContinue
}
