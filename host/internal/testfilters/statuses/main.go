//go:build wasip1

// Command statuses calls Proxy-Wasm hostcalls directly (no SDK) with good and
// bad arguments from proxy_on_request_headers and answers with a local reply
// whose body lists "name=status" per line, so a host test can compare every
// status code with Envoy's.
package main

import (
	"strconv"
	"unsafe"
)

//go:wasmimport env proxy_get_header_map_value
func getHeaderMapValue(t uint32, k unsafe.Pointer, kl uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_pairs
func getHeaderMapPairs(t uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_set_header_map_pairs
func setHeaderMapPairs(t uint32, p unsafe.Pointer, s uint32) uint32

//go:wasmimport env proxy_get_header_map_size
func getHeaderMapSize(t uint32, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_get_buffer_bytes
func getBufferBytes(t, start, max uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_get_buffer_status
func getBufferStatus(t uint32, rl unsafe.Pointer, rf unsafe.Pointer) uint32

//go:wasmimport env proxy_set_effective_context
func setEffectiveContext(id uint32) uint32

//go:wasmimport env proxy_continue_stream
func continueStream(t uint32) uint32

//go:wasmimport env proxy_close_stream
func closeStream(t uint32) uint32

//go:wasmimport env proxy_http_call
func httpCall(up unsafe.Pointer, ul uint32, h unsafe.Pointer, hl uint32, b unsafe.Pointer, bl uint32, tr unsafe.Pointer, tl uint32, timeout uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_call
func grpcCall(s unsafe.Pointer, sl uint32, n unsafe.Pointer, nl uint32, m unsafe.Pointer, ml uint32, md unsafe.Pointer, mdl uint32, msg unsafe.Pointer, msgl uint32, timeout uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func getSharedData(k unsafe.Pointer, kl uint32, rp unsafe.Pointer, rs unsafe.Pointer, cas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func setSharedData(k unsafe.Pointer, kl uint32, v unsafe.Pointer, vl uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func registerQueue(n unsafe.Pointer, nl uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_resolve_shared_queue
func resolveQueue(v unsafe.Pointer, vl uint32, n unsafe.Pointer, nl uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func dequeue(id uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func enqueue(id uint32, v unsafe.Pointer, vl uint32) uint32

//go:wasmimport env proxy_get_property
func getProperty(p unsafe.Pointer, pl uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_define_metric
func defineMetric(t uint32, n unsafe.Pointer, nl uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func incrementMetric(id uint32, off int64) uint32

//go:wasmimport env proxy_get_metric
func getMetric(id uint32, v unsafe.Pointer) uint32

//go:wasmimport env proxy_call_foreign_function
func callForeign(n unsafe.Pointer, nl uint32, a unsafe.Pointer, al uint32, rp unsafe.Pointer, rs unsafe.Pointer) uint32

//go:wasmimport env proxy_send_local_response
func sendLocalResponse(code uint32, d unsafe.Pointer, dl uint32, b unsafe.Pointer, bl uint32, h unsafe.Pointer, hl uint32, grpc int32) uint32

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

var keep [][]byte

//go:wasmexport proxy_on_memory_allocate
func alloc(size uint32) uint32 {
	b := make([]byte, max(size, 1))
	keep = append(keep, b)
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

//go:wasmexport proxy_on_context_create
func contextCreate(id, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func vmStart(root, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func configure(root, size uint32) uint32 { return 1 }

// out holds return slots; a package variable so it never lives on a stack.
var out struct {
	ptr, size, aux uint32
	u64            uint64
}

func p(s string) (unsafe.Pointer, uint32) {
	if s == "" {
		return nil, 0
	}
	b := []byte(s)
	keep = append(keep, b)
	return unsafe.Pointer(&b[0]), uint32(len(b))
}

// pairs encodes a header map in the Proxy-Wasm wire format.
func pairs(kv ...string) string {
	var b []byte
	le := func(v uint32) { b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
	le(uint32(len(kv) / 2))
	for _, s := range kv {
		le(uint32(len(s)))
	}
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	return string(b)
}

var bad = unsafe.Add(unsafe.Pointer(nil), 0xfffffff0) // outside linear memory

//go:wasmexport proxy_on_request_headers
func requestHeaders(ctx, n, eos uint32) uint32 {
	keep = keep[:0]
	var res []byte
	rec := func(name string, st uint32) {
		res = append(res, name...)
		res = append(res, '=')
		res = strconv.AppendUint(res, uint64(st), 10)
		res = append(res, '\n')
	}
	slot := func() (unsafe.Pointer, unsafe.Pointer) { return unsafe.Pointer(&out.ptr), unsafe.Pointer(&out.size) }

	k, kl := p(":path")
	rp, rs := slot()
	rec("get_header_map_value/present", getHeaderMapValue(0, k, kl, rp, rs))
	k, kl = p("x-missing")
	rec("get_header_map_value/missing", getHeaderMapValue(0, k, kl, rp, rs))
	k, kl = p(":status")
	rec("get_header_map_value/response_map_in_request", getHeaderMapValue(2, k, kl, rp, rs))
	rec("get_header_map_value/bad_map_type", getHeaderMapValue(99, k, kl, rp, rs))
	rec("get_header_map_value/bad_key_pointer", getHeaderMapValue(0, bad, 8, rp, rs))
	rec("get_header_map_pairs/request", getHeaderMapPairs(0, rp, rs))
	rec("get_header_map_pairs/request_trailers_empty", getHeaderMapPairs(1, rp, rs))
	rec("get_header_map_pairs/empty_ptr", out.ptr)
	rec("get_header_map_pairs/empty_size", out.size)
	rec("get_header_map_size/request", getHeaderMapSize(0, rs))
	hp, hl := p(pairs(":path", "/x", ":method", "GET", ":authority", "a", "x-set", "1"))
	rec("set_header_map_pairs/valid", setHeaderMapPairs(0, hp, hl))
	tp, tl := p(pairs("a", "b") + "junk")
	rec("set_header_map_pairs/trailing_bytes", setHeaderMapPairs(0, tp, tl))

	rec("get_buffer_status/vm_config", getBufferStatus(6, rp, rs))
	rec("get_buffer_bytes/vm_config", getBufferBytes(6, 0, 100, rp, rs))
	rec("get_buffer_bytes/plugin_config_outside_configure", getBufferBytes(7, 0, 100, rp, rs))
	rec("get_buffer_bytes/http_call_body_outside_callback", getBufferBytes(4, 0, 100, rp, rs))
	rec("get_buffer_bytes/bad_type", getBufferBytes(99, 0, 100, rp, rs))

	rec("set_effective_context/unknown", setEffectiveContext(12345))
	rec("set_effective_context/self", setEffectiveContext(ctx))
	rec("continue_stream/upstream", continueStream(3))
	rec("continue_stream/bad_type", continueStream(99))
	rec("close_stream/bad_type", closeStream(99))

	up, ul := p("authz")
	nu, nul := p("nosuch")
	good, gl := p(pairs(":path", "/check", ":method", "GET", ":authority", "authz"))
	noPath, npl := p(pairs(":method", "GET", ":authority", "authz"))
	noMethod, nml := p(pairs(":path", "/check", ":authority", "authz"))
	noAuth, nal := p(pairs(":path", "/check", ":method", "GET"))
	tok := unsafe.Pointer(&out.aux)
	rec("http_call/unknown_cluster", httpCall(nu, nul, good, gl, nil, 0, nil, 0, 1000, tok))
	rec("http_call/negative_timeout", httpCall(up, ul, good, gl, nil, 0, nil, 0, 0xffffffff, tok))
	rec("http_call/missing_path", httpCall(up, ul, noPath, npl, nil, 0, nil, 0, 1000, tok))
	rec("http_call/missing_method", httpCall(up, ul, noMethod, nml, nil, 0, nil, 0, 1000, tok))
	rec("http_call/missing_authority", httpCall(up, ul, noAuth, nal, nil, 0, nil, 0, 1000, tok))
	rec("http_call/bad_pointer", httpCall(bad, 8, good, gl, nil, 0, nil, 0, 1000, tok))
	rec("http_call/ok", httpCall(up, ul, good, gl, nil, 0, nil, 0, 1000, tok))
	rec("grpc_call", grpcCall(up, ul, up, ul, up, ul, nil, 0, nil, 0, 1000, tok))

	sk, skl := p("status-key")
	sv, svl := p("v")
	cas := unsafe.Pointer(&out.aux)
	rec("get_shared_data/missing", getSharedData(sk, skl, rp, rs, cas))
	rec("set_shared_data/first", setSharedData(sk, skl, sv, svl, 0))
	rec("get_shared_data/present", getSharedData(sk, skl, rp, rs, cas))
	c := out.aux
	rec("set_shared_data/stale_cas", setSharedData(sk, skl, sv, svl, c+1000))
	rec("set_shared_data/current_cas", setSharedData(sk, skl, sv, svl, c))
	rec("set_shared_data/old_cas", setSharedData(sk, skl, sv, svl, c))
	rec("set_shared_data/zero_cas", setSharedData(sk, skl, sv, svl, 0))

	qn, qnl := p("status-q")
	rec("register_shared_queue", registerQueue(qn, qnl, unsafe.Pointer(&out.aux)))
	qid := out.aux
	vmID, vml := p("statuses")
	other, ol := p("other-vm")
	rec("resolve_shared_queue/known", resolveQueue(vmID, vml, qn, qnl, unsafe.Pointer(&out.aux)))
	rec("resolve_shared_queue/unknown", resolveQueue(other, ol, qn, qnl, unsafe.Pointer(&out.aux)))
	rec("dequeue_shared_queue/empty", dequeue(qid, rp, rs))
	rec("dequeue_shared_queue/unknown", dequeue(qid+1000, rp, rs))
	rec("enqueue_shared_queue/unknown", enqueue(qid+1000, sv, svl))
	rec("enqueue_shared_queue/ok", enqueue(qid, sv, svl))
	rec("dequeue_shared_queue/ok", dequeue(qid, rp, rs))

	pp, pl := p("nosuch\x00deeper")
	rec("get_property/missing", getProperty(pp, pl, rp, rs))
	pp, pl = p("plugin_name")
	rec("get_property/plugin_name", getProperty(pp, pl, rp, rs))

	mn, ml := p("status_counter")
	rec("define_metric/bad_type", defineMetric(99, mn, ml, unsafe.Pointer(&out.aux)))
	rec("define_metric/counter", defineMetric(0, mn, ml, unsafe.Pointer(&out.aux)))
	mid := out.aux
	rec("increment_metric/counter", incrementMetric(mid, 2))
	rec("increment_metric/unknown", incrementMetric(mid+1000, 1))
	rec("get_metric/counter", getMetric(mid, unsafe.Pointer(&out.u64)))
	rec("get_metric/value", uint32(out.u64))
	rec("get_metric/unknown", getMetric(mid+1000, unsafe.Pointer(&out.u64)))

	fn, fl := p("nosuch")
	rec("call_foreign_function/unknown", callForeign(fn, fl, nil, 0, rp, rs))
	fn, fl = p("compress")
	plain := "meter 7 reading meter 7 reading meter 7 reading"
	ap, al := p(plain)
	rec("call_foreign_function/compress", callForeign(fn, fl, ap, al, rp, rs))
	z := string(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(nil), out.ptr)), out.size))
	fn, fl = p("uncompress")
	zp, zl := p(z)
	rec("call_foreign_function/uncompress", callForeign(fn, fl, zp, zl, rp, rs))
	back := string(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(nil), out.ptr)), out.size))
	roundTrip := uint32(0)
	if back == plain && z != plain {
		roundTrip = 1
	}
	rec("call_foreign_function/round_trip", roundTrip)
	gp, gl := p("not zlib")
	rec("call_foreign_function/uncompress_garbage", callForeign(fn, fl, gp, gl, rp, rs))

	body, bl := p(string(res))
	sendLocalResponse(200, nil, 0, body, bl, nil, 0, -1)
	return 1
}

func main() {}
