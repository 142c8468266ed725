// Command initcall calls a hostcall Envoy forbids during VM start-up
// (proxy_set_tick_period_milliseconds from init, i.e. inside _initialize):
// Envoy traps and refuses the plugin.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func init() {
	_ = proxywasm.SetTickPeriodMilliSeconds(100)
}

func main() {}
