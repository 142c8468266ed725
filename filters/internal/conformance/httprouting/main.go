// Command httprouting sends about half of the requests to the canary by
// suffixing :authority with "-canary" (SDK example "http_routing"). A
// non-empty plugin configuration fixes the dice to its first byte.
package main

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	fixed uint32
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogCriticalf("plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if len(cfg) > 0 {
		p.fixed = uint32(cfg[0])
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func (s *stream) dice() uint32 {
	if s.p.fixed != 0 {
		return s.p.fixed
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // random_get
	return binary.LittleEndian.Uint32(b[:])
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	d := s.dice()
	proxywasm.LogInfof("dice: %d", d)
	if d%2 != 0 {
		return types.ActionContinue
	}
	authority, err := proxywasm.GetHttpRequestHeader(":authority")
	if err != nil {
		proxywasm.LogCriticalf("no :authority: %v", err)
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceHttpRequestHeader(":authority", authority+"-canary"); err != nil {
		proxywasm.LogCriticalf("replace :authority: %v", err)
	}
	return types.ActionContinue
}
