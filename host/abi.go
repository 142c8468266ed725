package host

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero/api"
)

// status is a Proxy-Wasm WasmResult.
type status uint32

// Proxy-Wasm status codes (ABI 0.2.x).
const (
	statusOK                  status = 0
	statusNotFound            status = 1
	statusBadArgument         status = 2
	statusSerializationFailed status = 3
	statusParseFailure        status = 4
	statusInvalidMemoryAccess status = 6
	statusEmpty               status = 7
	statusCasMismatch         status = 8
	statusInternalFailure     status = 10
	statusUnimplemented       status = 12
)

// Map and buffer types.
const (
	mapRequestHeaders       = 0
	mapRequestTrailers      = 1
	mapResponseHeaders      = 2
	mapResponseTrailers     = 3
	mapGrpcInitial          = 4
	mapGrpcTrailing         = 5
	mapHTTPCallRespHeaders  = 6
	mapHTTPCallRespTrailers = 7
	mapMax                  = 7

	bufRequestBody     = 0
	bufResponseBody    = 1
	bufDownstream      = 2
	bufUpstream        = 3
	bufHTTPCallResp    = 4
	bufGrpcReceive     = 5
	bufVMConfig        = 6
	bufPluginConfig    = 7
	bufMax             = 7
	streamTypeRequest  = 0
	streamTypeResponse = 1
	streamTypeDown     = 2
	streamTypeUp       = 3
)

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

// param is one hostcall parameter, named as the Proxy-Wasm ABI names it
// (wazero shows the names in stack traces and function definitions).
type param struct {
	name string
	typ  api.ValueType
}

// p32 declares i32 parameters.
func p32(names ...string) []param {
	out := make([]param, len(names))
	for i, n := range names {
		out[i] = param{n, i32}
	}
	return out
}

// hostcall is one env.proxy_* function. Its handler decodes the guest's
// arguments (memory reads, return slots) and hands the work to the method
// that owns the state: the VM, its current Stream, the vm_id's shared data,
// a queue or a metric. Every env hostcall returns a status.
type hostcall struct {
	name   string
	params []param
	fn     func(vm *VM, p []uint64) status
}

// envFamilies are the env.proxy_* hostcalls of ABI 0.2.0 and 0.2.1 (Envoy
// provides all of them), by family.
var envFamilies = [][]hostcall{
	logCalls, timerCalls, contextCalls, propertyCalls, streamCalls,
	headerMapCalls, bufferCalls, sharedDataCalls, queueCalls, metricCalls,
	httpCalls, grpcCalls, foreignCalls,
}

var envFunctionNames = func() []string {
	var out []string
	for _, fam := range envFamilies {
		for _, f := range fam {
			out = append(out, f.name)
		}
	}
	return out
}()

func (r *Runtime) instantiateEnv(ctx context.Context) error {
	b := r.rt.NewHostModuleBuilder("env")
	profile := r.cfg.Profile
	for _, fam := range envFamilies {
		for _, f := range fam {
			types := make([]api.ValueType, len(f.params))
			names := make([]string, len(f.params))
			for i, p := range f.params {
				types[i], names[i] = p.typ, p.name
			}
			b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
				vm := ctx.Value(vmKey{}).(*VM)
				if vm.startup && !profile.startupAllowed(f.name) {
					panic(fmt.Errorf("%w: %s", errStartup, f.name))
				}
				stack[0] = uint64(f.fn(vm, stack))
			}), types, []api.ValueType{i32}).
				WithParameterNames(names...).
				WithResultNames("status").
				Export(f.name)
		}
	}
	if _, err := b.Instantiate(ctx); err != nil {
		return fmt.Errorf("host: env module: %w", err)
	}
	return nil
}

// --- guest memory ---

func (vm *VM) read(ptr, size uint64) ([]byte, bool) {
	if size == 0 {
		return nil, true
	}
	return vm.mem.Read(uint32(ptr), uint32(size))
}

func (vm *VM) putU32(ptr uint64, v uint32) bool { return vm.mem.WriteUint32Le(uint32(ptr), v) }

// copyOut allocates guest memory, copies data there and writes its address
// and size to the return slots (0, 0 for no data).
func (vm *VM) copyOut(data []byte, ptrPtr, sizePtr uint64) status {
	if len(data) == 0 {
		if !vm.putU32(ptrPtr, 0) || !vm.putU32(sizePtr, 0) {
			return statusInvalidMemoryAccess
		}
		return statusOK
	}
	vm.allocStack[0] = uint64(len(data))
	if err := vm.alloc.CallWithStack(vm.ctx, vm.allocStack[:]); err != nil {
		panic(fmt.Errorf("guest allocator failed: %w", err))
	}
	addr := uint32(vm.allocStack[0])
	if addr == 0 || !vm.mem.Write(addr, data) {
		return statusInvalidMemoryAccess
	}
	if !vm.putU32(ptrPtr, addr) || !vm.putU32(sizePtr, uint32(len(data))) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// copyOutString is copyOut for a string, through the VM's scratch buffer so
// that it does not allocate.
func (vm *VM) copyOutString(v string, ptrPtr, sizePtr uint64) status {
	vm.scratch = append(vm.scratch[:0], v...)
	return vm.copyOut(vm.scratch, ptrPtr, sizePtr)
}

// lowerKey lower-cases a guest-provided header name into the VM's scratch
// buffer without allocating.
func (vm *VM) lowerKey(b []byte) []byte {
	vm.scratch = vm.scratch[:0]
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		vm.scratch = append(vm.scratch, c)
	}
	return vm.scratch
}

func (vm *VM) writeU64(ptr uint32, v uint64) bool { return vm.mem.WriteUint64Le(ptr, v) }
