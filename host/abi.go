package host

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

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

type hostFn struct {
	name   string
	params []api.ValueType
	result bool
	fn     func(vm *VM, s []uint64) status
}

func n32(n int) []api.ValueType {
	out := make([]api.ValueType, n)
	for i := range out {
		out[i] = i32
	}
	return out
}

// envFunctions are the env.proxy_* hostcalls of ABI 0.2.0 and 0.2.1 (Envoy
// provides them all).
var envFunctions = []hostFn{
	{"proxy_log", n32(3), true, hLog},
	{"proxy_get_log_level", n32(1), true, hGetLogLevel},
	{"proxy_get_status", n32(3), true, hGetStatus},
	{"proxy_set_property", n32(4), true, hSetProperty},
	{"proxy_get_property", n32(4), true, hGetProperty},
	{"proxy_send_local_response", n32(8), true, hSendLocalResponse},
	{"proxy_get_shared_data", n32(5), true, hGetSharedData},
	{"proxy_set_shared_data", n32(5), true, hSetSharedData},
	{"proxy_register_shared_queue", n32(3), true, hRegisterQueue},
	{"proxy_resolve_shared_queue", n32(5), true, hResolveQueue},
	{"proxy_dequeue_shared_queue", n32(3), true, hDequeue},
	{"proxy_enqueue_shared_queue", n32(3), true, hEnqueue},
	{"proxy_get_header_map_value", n32(5), true, hGetHeaderValue},
	{"proxy_add_header_map_value", n32(5), true, hAddHeaderValue},
	{"proxy_replace_header_map_value", n32(5), true, hReplaceHeaderValue},
	{"proxy_remove_header_map_value", n32(3), true, hRemoveHeaderValue},
	{"proxy_get_header_map_pairs", n32(3), true, hGetHeaderPairs},
	{"proxy_set_header_map_pairs", n32(3), true, hSetHeaderPairs},
	{"proxy_get_header_map_size", n32(2), true, hGetHeaderMapSize},
	{"proxy_get_buffer_status", n32(3), true, hGetBufferStatus},
	{"proxy_get_buffer_bytes", n32(5), true, hGetBufferBytes},
	{"proxy_set_buffer_bytes", n32(5), true, hSetBufferBytes},
	{"proxy_continue_stream", n32(1), true, hContinueStream},
	{"proxy_close_stream", n32(1), true, hCloseStream},
	{"proxy_http_call", n32(10), true, hHTTPCall},
	{"proxy_grpc_call", n32(12), true, hUnimplemented},
	{"proxy_grpc_stream", n32(9), true, hUnimplemented},
	{"proxy_grpc_close", n32(1), true, hUnimplemented},
	{"proxy_grpc_cancel", n32(1), true, hUnimplemented},
	{"proxy_grpc_send", n32(4), true, hUnimplemented},
	{"proxy_set_tick_period_milliseconds", n32(1), true, hSetTickPeriod},
	{"proxy_get_current_time_nanoseconds", n32(1), true, hGetCurrentTime},
	{"proxy_define_metric", n32(4), true, hDefineMetric},
	{"proxy_increment_metric", []api.ValueType{i32, i64}, true, hIncrementMetric},
	{"proxy_record_metric", []api.ValueType{i32, i64}, true, hRecordMetric},
	{"proxy_get_metric", n32(2), true, hGetMetric},
	{"proxy_set_effective_context", n32(1), true, hSetEffectiveContext},
	{"proxy_done", nil, true, hDone},
	{"proxy_call_foreign_function", n32(6), true, hCallForeign},
}

var envFunctionNames = func() []string {
	out := make([]string, len(envFunctions))
	for i, f := range envFunctions {
		out[i] = f.name
	}
	return out
}()

func (r *Runtime) instantiateEnv(ctx context.Context) error {
	b := r.rt.NewHostModuleBuilder("env")
	profile := r.cfg.Profile
	for _, f := range envFunctions {
		f := f
		var results []api.ValueType
		if f.result {
			results = []api.ValueType{i32}
		}
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			vm := ctx.Value(vmKey{}).(*VM)
			if vm.startup && !profile.startupAllowed(f.name) {
				panic(fmt.Errorf("%w: %s", errStartup, f.name))
			}
			st := f.fn(vm, stack)
			if f.result {
				stack[0] = uint64(st)
			}
		}), f.params, results).Export(f.name)
	}
	if _, err := b.Instantiate(ctx); err != nil {
		return fmt.Errorf("host: env module: %w", err)
	}
	return nil
}

// --- memory helpers ---

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

// --- logging, status, time ---

func hLog(vm *VM, s []uint64) status {
	level := uint32(s[0])
	if level > uint32(LogCritical) {
		return statusBadArgument
	}
	msg, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	vm.plugin.rt.emitLog(LogEntry{Plugin: vm.plugin.cfg.Name, Worker: vm.worker, Level: LogLevel(level), Message: string(msg)})
	return statusOK
}

func hGetLogLevel(vm *VM, s []uint64) status {
	if !vm.putU32(s[0], uint32(vm.plugin.rt.cfg.LogLevel)) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hGetStatus(vm *VM, s []uint64) status {
	// gRPC status of the last gRPC callback; without gRPC support it is 0/"".
	if !vm.putU32(s[0], 0) {
		return statusInvalidMemoryAccess
	}
	return vm.copyOut(nil, s[1], s[2])
}

func hGetCurrentTime(vm *VM, s []uint64) status {
	if !vm.mem.WriteUint64Le(uint32(s[0]), uint64(vm.plugin.rt.cfg.Clock.Now().UnixNano())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hSetTickPeriod(vm *VM, s []uint64) status {
	vm.setTickPeriod(time.Duration(uint32(s[0])) * time.Millisecond)
	return statusOK
}

func hUnimplemented(*VM, []uint64) status { return statusUnimplemented }

func hCallForeign(vm *VM, s []uint64) status {
	name, ok1 := vm.read(s[0], s[1])
	args, ok2 := vm.read(s[2], s[3])
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	f, ok := foreignFunctions[string(name)]
	if !ok {
		return statusNotFound
	}
	out, st := f(args)
	if st != statusOK {
		return st
	}
	return vm.copyOut(out, s[4], s[5])
}

func hSetEffectiveContext(vm *VM, s []uint64) status {
	id := uint32(s[0])
	if id != vm.rootID {
		if _, ok := vm.streams[id]; !ok {
			return statusBadArgument
		}
	}
	vm.effective = id
	return statusOK
}

func hDone(vm *VM, _ []uint64) status {
	if !vm.pendingDone {
		return statusNotFound
	}
	vm.pendingDone = false
	return statusOK
}

// --- properties ---

func hSetProperty(vm *VM, s []uint64) status {
	path, ok1 := vm.read(s[0], s[1])
	val, ok2 := vm.read(s[2], s[3])
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := vm.stream()
	if st == nil {
		// Envoy keeps set_property values in the stream's filter state; a
		// root context has none.
		return statusNotFound
	}
	st.filterState["wasm."+string(path)] = append([]byte(nil), val...)
	return statusOK
}

func hGetProperty(vm *VM, s []uint64) status {
	path, ok := vm.read(s[0], s[1])
	if !ok {
		return statusInvalidMemoryAccess
	}
	v, found := vm.property(string(path))
	if !found {
		return statusNotFound
	}
	return vm.copyOut(v, s[2], s[3])
}

// property resolves a NUL-joined attribute path: the stream's attributes,
// request.*/response.* derived from headers, plugin attributes, then filter
// state written with set_property (Envoy reads an unknown top-level name X
// from filter state "wasm.X").
func (vm *VM) property(key string) ([]byte, bool) {
	st := vm.stream()
	if st != nil {
		if v, ok := st.props.get(key); ok {
			return v, true
		}
		if v, ok := st.requestAttribute(key); ok {
			return v, true
		}
	}
	if v, ok := vm.plugin.props.get(key); ok {
		return v, true
	}
	if st != nil {
		if v, ok := st.filterState["wasm."+key]; ok {
			return v, true
		}
	}
	return nil, false
}

// --- local responses and stream control ---

func hSendLocalResponse(vm *VM, s []uint64) status {
	details, ok1 := vm.read(s[1], s[2])
	body, ok2 := vm.read(s[3], s[4])
	hdrs, ok3 := vm.read(s[5], s[6])
	if !ok1 || !ok2 || !ok3 {
		return statusInvalidMemoryAccess
	}
	st := vm.stream()
	if st == nil {
		// Root contexts have no stream to answer.
		return statusBadArgument
	}
	extra, _ := DecodePairs(hdrs) // invalid pairs: no extra headers, like Envoy
	grpc := int32(uint32(s[7]))
	if grpc < 0 || grpc > 16 {
		grpc = -1
	}
	st.mu.Lock()
	st.local = &LocalReply{Status: uint32(s[0]), Details: string(details), Body: append([]byte(nil), body...), Headers: lower(extra), GRPCStatus: grpc}
	st.mu.Unlock()
	st.signal()
	return statusOK
}

func hContinueStream(vm *VM, s []uint64) status {
	t := uint32(s[0])
	if t > streamTypeUp {
		return statusBadArgument
	}
	st := vm.stream()
	switch {
	case t == streamTypeUp:
		return statusUnimplemented
	case t == streamTypeDown:
		return statusOK
	case st == nil:
		return statusUnimplemented
	}
	st.mu.Lock()
	st.continued[t] = true
	st.mu.Unlock()
	st.signal()
	return statusOK
}

func hCloseStream(vm *VM, s []uint64) status {
	t := uint32(s[0])
	if t > streamTypeUp {
		return statusBadArgument
	}
	st := vm.stream()
	if st == nil || t > streamTypeResponse {
		return statusUnimplemented
	}
	st.mu.Lock()
	st.reset = true
	st.mu.Unlock()
	st.signal()
	return statusOK
}

// --- header maps ---

// headerMap returns the map of the effective context, or nil when that map
// is not available now (Envoy answers BAD_ARGUMENT).
func (vm *VM) headerMap(t uint32) *Headers {
	switch t {
	case mapHTTPCallRespHeaders, mapHTTPCallRespTrailers:
		// Envoy reads the root context's pending response from any context.
		if vm.callResp == nil {
			return nil
		}
		if t == mapHTTPCallRespHeaders {
			return &vm.callResp.Headers
		}
		return &vm.callResp.Trailers
	case mapGrpcInitial, mapGrpcTrailing:
		return nil
	}
	st := vm.stream()
	if st == nil {
		return nil
	}
	var m *Headers
	switch t {
	case mapRequestHeaders:
		m = &st.reqHeaders
	case mapRequestTrailers:
		m = &st.reqTrailers
	case mapResponseHeaders:
		m = &st.respHeaders
	case mapResponseTrailers:
		m = &st.respTrailers
	}
	if *m == nil {
		return nil
	}
	return m
}

func hGetHeaderValue(vm *VM, s []uint64) status {
	if uint32(s[0]) > mapMax {
		return statusBadArgument
	}
	key, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	m := vm.headerMap(uint32(s[0]))
	if m == nil {
		return statusBadArgument
	}
	k := vm.lowerKey(key)
	for _, kv := range *m {
		if kv[0] == string(k) {
			return vm.copyOutString(kv[1], s[3], s[4])
		}
	}
	return statusNotFound
}

func (vm *VM) copyOutString(v string, ptrPtr, sizePtr uint64) status {
	vm.scratch = append(vm.scratch[:0], v...)
	return vm.copyOut(vm.scratch, ptrPtr, sizePtr)
}

func (vm *VM) editMap(s []uint64, withValue bool, edit func(m *Headers, k, v string)) status {
	if uint32(s[0]) > mapMax {
		return statusBadArgument
	}
	key, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	var val []byte
	if withValue {
		if val, ok = vm.read(s[3], s[4]); !ok {
			return statusInvalidMemoryAccess
		}
	}
	m := vm.headerMap(uint32(s[0]))
	if m == nil {
		return statusBadArgument
	}
	edit(m, strings.ToLower(string(key)), string(val))
	return statusOK
}

func hAddHeaderValue(vm *VM, s []uint64) status {
	return vm.editMap(s, true, func(m *Headers, k, v string) { m.add(k, v) })
}

func hReplaceHeaderValue(vm *VM, s []uint64) status {
	return vm.editMap(s, true, func(m *Headers, k, v string) { m.replace(k, v) })
}

func hRemoveHeaderValue(vm *VM, s []uint64) status {
	return vm.editMap(s, false, func(m *Headers, k, _ string) { m.remove(k) })
}

func hGetHeaderPairs(vm *VM, s []uint64) status {
	if uint32(s[0]) > mapMax {
		return statusBadArgument
	}
	m := vm.headerMap(uint32(s[0]))
	if m == nil || len(*m) == 0 {
		// An unavailable map reads as empty (Envoy's getHeaderMapPairs).
		return vm.copyOut(nil, s[1], s[2])
	}
	vm.scratch = EncodePairs(vm.scratch[:0], *m)
	return vm.copyOut(vm.scratch, s[1], s[2])
}

func hSetHeaderPairs(vm *VM, s []uint64) status {
	if uint32(s[0]) > mapMax {
		return statusBadArgument
	}
	data, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	m := vm.headerMap(uint32(s[0]))
	if m == nil {
		return statusBadArgument
	}
	pairs, _ := DecodePairs(data) // Envoy: malformed input means no pairs
	*m = lower(pairs)
	return statusOK
}

func hGetHeaderMapSize(vm *VM, s []uint64) status {
	if uint32(s[0]) > mapMax {
		return statusBadArgument
	}
	m := vm.headerMap(uint32(s[0]))
	if m == nil {
		return statusBadArgument
	}
	if !vm.putU32(s[1], uint32(m.byteSize())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// --- buffers ---

func (vm *VM) buffer(t uint32) (*[]byte, bool) {
	switch t {
	case bufVMConfig:
		b := vm.plugin.cfg.VMConfig
		return &b, true
	case bufPluginConfig:
		if !vm.inConfigure {
			return nil, false
		}
		b := vm.plugin.cfg.Configuration
		return &b, true
	case bufHTTPCallResp:
		if vm.callResp == nil {
			return nil, false
		}
		return &vm.callResp.Body, true
	case bufRequestBody, bufResponseBody:
		// Envoy hands out an (empty) body buffer in every context.
		st := vm.stream()
		if st == nil {
			var empty []byte
			return &empty, true
		}
		if t == bufRequestBody {
			return &st.reqBody, true
		}
		return &st.respBody, true
	}
	return nil, false
}

func hGetBufferStatus(vm *VM, s []uint64) status {
	if uint32(s[0]) > bufMax {
		return statusBadArgument
	}
	b, ok := vm.buffer(uint32(s[0]))
	if !ok {
		return statusNotFound
	}
	if !vm.putU32(s[1], uint32(len(*b))) || !vm.putU32(s[2], 0) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hGetBufferBytes(vm *VM, s []uint64) status {
	if uint32(s[0]) > bufMax {
		return statusBadArgument
	}
	b, ok := vm.buffer(uint32(s[0]))
	if !ok {
		return statusNotFound
	}
	start, length := uint64(uint32(s[1])), uint64(uint32(s[2]))
	if start+length < start {
		return statusBadArgument
	}
	size := uint64(len(*b))
	if start > size {
		length = 0
	} else if start+length > size {
		length = size - start
	}
	if length == 0 {
		return vm.copyOut(nil, s[3], s[4])
	}
	return vm.copyOut((*b)[start:start+length], s[3], s[4])
}

func hSetBufferBytes(vm *VM, s []uint64) status {
	if uint32(s[0]) > bufMax {
		return statusBadArgument
	}
	b, ok := vm.buffer(uint32(s[0]))
	if !ok {
		return statusNotFound
	}
	data, ok := vm.read(s[3], s[4])
	if !ok {
		return statusInvalidMemoryAccess
	}
	start, length := int(uint32(s[1])), int(uint32(s[2]))
	switch {
	case start == 0:
		// Envoy drains `length` bytes then prepends the data.
		rest := *b
		if length > len(rest) {
			length = len(rest)
		}
		*b = append(append([]byte(nil), data...), rest[length:]...)
	case start >= len(*b):
		*b = append(*b, data...)
	default:
		return statusBadArgument
	}
	return statusOK
}

// --- shared data and queues ---

func hGetSharedData(vm *VM, s []uint64) status {
	key, ok := vm.read(s[0], s[1])
	if !ok {
		return statusInvalidMemoryAccess
	}
	v, cas, found := vm.plugin.rt.sharedDataFor(vm.plugin.cfg.VMID).get(string(key))
	if !found {
		return statusNotFound
	}
	if st := vm.copyOut(v, s[2], s[3]); st != statusOK {
		return st
	}
	if !vm.putU32(s[4], cas) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hSetSharedData(vm *VM, s []uint64) status {
	key, ok1 := vm.read(s[0], s[1])
	val, ok2 := vm.read(s[2], s[3])
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	return vm.plugin.rt.sharedDataFor(vm.plugin.cfg.VMID).set(string(key), val, uint32(s[4]))
}

func hRegisterQueue(vm *VM, s []uint64) status {
	name, ok := vm.read(s[0], s[1])
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := vm.plugin.rt.queues.register(vm.plugin.cfg.VMID, string(name), vm, vm.rootID)
	if !vm.putU32(s[2], id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hResolveQueue(vm *VM, s []uint64) status {
	vmID, ok1 := vm.read(s[0], s[1])
	name, ok2 := vm.read(s[2], s[3])
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	id, found := vm.plugin.rt.queues.resolve(string(vmID), string(name))
	if !found {
		return statusNotFound
	}
	if !vm.putU32(s[4], id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hDequeue(vm *VM, s []uint64) status {
	q := vm.plugin.rt.queues.get(uint32(s[0]))
	if q == nil {
		return statusNotFound
	}
	q.mu.Lock()
	if len(q.items) == 0 {
		q.mu.Unlock()
		return statusEmpty
	}
	item := q.items[0]
	q.items = q.items[1:]
	q.mu.Unlock()
	return vm.copyOut(item, s[1], s[2])
}

func hEnqueue(vm *VM, s []uint64) status {
	q := vm.plugin.rt.queues.get(uint32(s[0]))
	if q == nil {
		return statusNotFound
	}
	data, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	q.mu.Lock()
	q.items = append(q.items, append([]byte(nil), data...))
	owner, root, id := q.owner, q.rootID, uint32(s[0])
	q.mu.Unlock()
	if owner != nil {
		owner.post(func() {
			if owner.failed.Load() || owner.fns[cbQueueReady] == nil {
				return
			}
			owner.enter(root)
			_, _ = owner.callFn(owner.fns[cbQueueReady], uint64(root), uint64(id))
		})
	}
	return statusOK
}

// --- metrics ---

func hDefineMetric(vm *VM, s []uint64) status {
	t := MetricType(uint32(s[0]))
	if t > MetricHistogram {
		return statusBadArgument
	}
	name, ok := vm.read(s[1], s[2])
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := vm.plugin.rt.stats.define(t, "wasmcustom."+string(name))
	if !vm.putU32(s[3], id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hIncrementMetric(vm *VM, s []uint64) status {
	m := vm.plugin.rt.stats.byID(uint32(s[0]))
	if m == nil {
		return statusNotFound
	}
	off := int64(s[1])
	switch m.typ {
	case MetricCounter:
		if off < 0 {
			return statusBadArgument
		}
		m.value.Add(off)
	case MetricGauge:
		m.value.Add(off)
	default:
		return statusBadArgument
	}
	return statusOK
}

func hRecordMetric(vm *VM, s []uint64) status {
	m := vm.plugin.rt.stats.byID(uint32(s[0]))
	if m == nil {
		return statusNotFound
	}
	switch m.typ {
	case MetricCounter:
		m.value.Add(int64(s[1]))
	case MetricGauge:
		m.value.Store(int64(s[1]))
	case MetricHistogram:
		m.mu.Lock()
		m.hist = append(m.hist, s[1])
		m.mu.Unlock()
	}
	return statusOK
}

func hGetMetric(vm *VM, s []uint64) status {
	m := vm.plugin.rt.stats.byID(uint32(s[0]))
	if m == nil {
		return statusNotFound
	}
	if m.typ == MetricHistogram {
		return statusBadArgument
	}
	if !vm.mem.WriteUint64Le(uint32(s[1]), uint64(m.value.Load())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// --- http callouts ---

func hHTTPCall(vm *VM, s []uint64) status {
	up, ok1 := vm.read(s[0], s[1])
	hdrs, ok2 := vm.read(s[2], s[3])
	body, ok3 := vm.read(s[4], s[5])
	trl, ok4 := vm.read(s[6], s[7])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return statusInvalidMemoryAccess
	}
	if !vm.putU32(s[9], 0) {
		return statusInvalidMemoryAccess
	}
	cluster, ok := vm.plugin.cfg.Clusters[string(up)]
	if !ok {
		return statusBadArgument
	}
	timeout := int32(uint32(s[8]))
	if timeout < 0 {
		return statusBadArgument
	}
	headers, _ := DecodePairs(hdrs)
	trailers, _ := DecodePairs(trl)
	headers = lower(headers)
	for _, k := range []string{":path", ":method", ":authority"} {
		if v, ok := headers.Get(k); !ok || v == "" {
			return statusBadArgument
		}
	}
	vm.nextCall++
	token := vm.nextCall
	pc := &pendingCall{}
	vm.calls[token] = pc
	if !vm.putU32(s[9], token) {
		delete(vm.calls, token)
		return statusInvalidMemoryAccess
	}
	d := time.Duration(timeout) * time.Millisecond
	if d > 0 {
		pc.stop = vm.plugin.rt.cfg.Clock.AfterFunc(d, func() {
			vm.post(func() { vm.deliverCallout(token, nil) })
		})
	}
	req := &CalloutRequest{Cluster: string(up), Headers: headers, Body: append([]byte(nil), body...), Trailers: lower(trailers), Timeout: d}
	var once sync.Once
	cluster.Call(req, func(resp *CalloutResponse) {
		once.Do(func() { vm.post(func() { vm.deliverCallout(token, resp) }) })
	})
	return statusOK
}

// writeU64 is used by WASI.
func (vm *VM) writeU64(ptr uint32, v uint64) bool {
	return vm.mem.WriteUint64Le(ptr, v)
}
