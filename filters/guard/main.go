// Command guard is meshguard's policy filter: loaded by Istio and Kuma into
// every sidecar, it resolves the caller's identity (mTLS peer SPIFFE ID,
// JWT-SVID, device token, Istio peer metadata), evaluates the compiled policy
// bundle, enforces its rules' per-caller rate limits and per-device write
// rate limits shared by all workers, exports the nearest version sunset, and
// audits decisions. It fails closed: without a valid configuration and a
// verified bundle every request gets a 503.
//
// This package is the thin SDK adapter: plugin and stream contexts, the
// hostcalls behind the core's ports (stream.go, host.go), the bundle poll
// (distribution.go), the audit sink (sink.go) and the metrics
// (metrics.go). The decisions are made in internal/decide, which knows no
// SDK and is tested natively; internal/distribution, internal/shared,
// internal/identity, internal/ratelimit and internal/audit are its parts.
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

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(id uint32) types.PluginContext {
	return newPlugin(id)
}
