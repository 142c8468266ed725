// Command shareddata counts requests in shared data with compare-and-swap,
// retrying on a CAS mismatch (SDK example "shared_data").
package main

import (
	"encoding/binary"
	"errors"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

const key = "shared_data_key"

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) OnVMStart(int) types.OnVMStartStatus {
	// Only the first VM of the vm_id creates the value (cas 0 = create).
	if _, _, err := proxywasm.GetSharedData(key); errors.Is(err, types.ErrorStatusNotFound) {
		if err := proxywasm.SetSharedData(key, make([]byte, 8), 0); err != nil {
			proxywasm.LogWarnf("initialise shared data: %v", err)
		}
	}
	return types.OnVMStartStatusOK
}

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	for range 16 {
		v, cas, err := proxywasm.GetSharedData(key)
		if err != nil {
			proxywasm.LogWarnf("get shared data: %v", err)
			return types.ActionContinue
		}
		n := binary.LittleEndian.Uint64(v) + 1
		err = proxywasm.SetSharedData(key, binary.LittleEndian.AppendUint64(nil, n), cas)
		if errors.Is(err, types.ErrorStatusCasMismatch) {
			continue
		}
		if err != nil {
			proxywasm.LogWarnf("set shared data: %v", err)
			return types.ActionContinue
		}
		proxywasm.LogInfof("shared value: %d", n)
		return types.ActionContinue
	}
	proxywasm.LogWarn("shared data: too many CAS retries")
	return types.ActionContinue
}
