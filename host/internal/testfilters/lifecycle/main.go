//go:build wasip1

// Command lifecycle logs every Proxy-Wasm callback with its arguments through
// proxy_log (no SDK in between), so a host test can compare the callback
// order and arguments with Envoy's. It exports main, like modules of
// toolchains that need it, to check that _initialize runs before main(0,0).
package main

import (
	"strconv"
	"unsafe"
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, p unsafe.Pointer, n uint32) uint32

var buf []byte

func logf(name string, args ...uint32) {
	buf = append(buf[:0], name...)
	for _, a := range args {
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(a), 10)
	}
	proxyLog(2, unsafe.Pointer(&buf[0]), uint32(len(buf)))
}

var initialized bool

func init() { initialized = true }

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

var keep [][]byte

//go:wasmexport malloc
func malloc(size uint32) uint32 {
	b := make([]byte, max(size, 1))
	keep = append(keep, b)
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

//go:wasmexport proxy_on_context_create
func contextCreate(id, parent uint32) { logf("context_create", id, parent) }

//go:wasmexport proxy_on_vm_start
func vmStart(root, size uint32) uint32 { logf("vm_start", root, size); return 1 }

//go:wasmexport proxy_on_configure
func configure(root, size uint32) uint32 { logf("configure", root, size); return 1 }

//go:wasmexport proxy_on_request_headers
func requestHeaders(ctx, n, eos uint32) uint32 { logf("request_headers", ctx, n, eos); return 0 }

//go:wasmexport proxy_on_request_body
func requestBody(ctx, n, eos uint32) uint32 { logf("request_body", ctx, n, eos); return 0 }

//go:wasmexport proxy_on_request_trailers
func requestTrailers(ctx, n uint32) uint32 { logf("request_trailers", ctx, n); return 0 }

//go:wasmexport proxy_on_response_headers
func responseHeaders(ctx, n, eos uint32) uint32 { logf("response_headers", ctx, n, eos); return 0 }

//go:wasmexport proxy_on_response_body
func responseBody(ctx, n, eos uint32) uint32 { logf("response_body", ctx, n, eos); return 0 }

//go:wasmexport proxy_on_response_trailers
func responseTrailers(ctx, n uint32) uint32 { logf("response_trailers", ctx, n); return 0 }

//go:wasmexport proxy_on_log
func onLog(ctx uint32) { logf("log", ctx) }

//go:wasmexport proxy_on_done
func onDone(ctx uint32) uint32 { logf("done", ctx); return 1 }

//go:wasmexport proxy_on_delete
func onDelete(ctx uint32) { logf("delete", ctx) }

//go:wasmexport main
func wasmMain(argc, argv uint32) uint32 {
	if initialized {
		logf("main_after_initialize", argc, argv)
	} else {
		logf("main_before_initialize", argc, argv)
	}
	return 0
}

func main() {}
