//go:build wasip1

// Command newwasi is a minimal Proxy-Wasm module that imports a WASI function
// (fd_readdir) Envoy only provides since April 2026: envoy-1.33 must refuse it.
package main

import "unsafe"

//go:wasmimport wasi_snapshot_preview1 fd_readdir
func fdReaddir(fd int32, buf unsafe.Pointer, bufLen int32, cookie int64, used unsafe.Pointer) int32

var sink int32

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func alloc(size uint32) uint32 {
	b := make([]byte, max(size, 1))
	keep = append(keep, b)
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

var keep [][]byte

//go:wasmexport proxy_on_context_create
func contextCreate(id, parent uint32) {
	var used int32
	sink = fdReaddir(3, nil, 0, 0, unsafe.Pointer(&used))
}

func main() {}
