// Command scratchprobe checks abi.Scratch from inside a VM: host data read
// in a scope is intact while the scope lasts (also when it overflows the
// arena to the heap), views of it are wiped when the scope ends, and reads
// outside a scope keep their data. It answers every request with a local
// reply: 200 "ok", or 500 and what went wrong.
package main

import (
	"fmt"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/abi"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	var problems []string
	check := func(what, got, want string) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s: got %d bytes %.20q, want %d bytes %.20q", what, len(got), got, len(want), want))
		}
	}
	var view, big string
	var copies [][2]string
	abi.Scratch(func() {
		hs, err := proxywasm.GetHttpRequestHeaders()
		if err != nil {
			problems = append(problems, err.Error())
			return
		}
		a, _ := proxywasm.GetHttpRequestHeader("x-a")
		big, _ = proxywasm.GetHttpRequestHeader("x-big") // larger than the arena
		b, _ := proxywasm.GetHttpRequestHeader("x-b")
		for _, kv := range hs {
			copies = append(copies, [2]string{strings.Clone(kv[0]), strings.Clone(kv[1])})
		}
		// Later reads in the scope must not overwrite earlier ones.
		check("x-a in scope", a, strings.Repeat("a", 100))
		check("x-b in scope", b, strings.Repeat("b", 200))
		for _, kv := range hs {
			if kv[0] == "x-a" {
				check("x-a pair in scope", kv[1], strings.Repeat("a", 100))
			}
		}
		view = a
	})
	check("heap fallback after the scope", big, strings.Repeat("z", 40<<10))
	check("arena view after the scope", view, strings.Repeat("\x00", 100))
	// Outside a scope, data comes from the heap as usual.
	a, _ := proxywasm.GetHttpRequestHeader("x-a")
	abi.Scratch(func() { _, _ = proxywasm.GetHttpRequestHeader("x-b") })
	check("x-a outside a scope", a, strings.Repeat("a", 100))
	for _, kv := range copies {
		if kv[0] == "x-b" {
			check("copy of x-b", kv[1], strings.Repeat("b", 200))
		}
	}
	status, body := uint32(200), "ok"
	if len(problems) > 0 {
		status, body = 500, strings.Join(problems, "\n")
	}
	if err := proxywasm.SendHttpResponse(status, nil, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("scratchprobe: %v", err)
	}
	return types.ActionPause
}
