//go:build wasip1

// Command wasiprobe calls WASI functions directly (only those in Envoy's Dec
// 2024 set, so it loads under every profile) and answers with a local reply
// listing "name=errno" per line, so a host test can compare each profile's
// WASI behaviour with Envoy's.
package main

import (
	"strconv"
	"unsafe"
)

//go:wasmimport wasi_snapshot_preview1 fd_read
func fdRead(fd int32, iovs unsafe.Pointer, n int32, nread unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 fd_write
func fdWrite(fd int32, iovs unsafe.Pointer, n int32, nwritten unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 fd_fdstat_get
func fdFdstatGet(fd int32, buf unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 clock_time_get
func clockTimeGet(id int32, precision int64, t unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 random_get
func randomGet(buf unsafe.Pointer, n int32) int32

//go:wasmimport wasi_snapshot_preview1 path_open
func pathOpen(dirfd, dirflags int32, path unsafe.Pointer, pathLen, oflags int32, base, inherit int64, fdflags int32, fd unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 poll_oneoff
func pollOneoff(in, out unsafe.Pointer, nsubs int32, nevents unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 args_sizes_get
func argsSizesGet(argc, size unsafe.Pointer) int32

//go:wasmimport wasi_unstable args_sizes_get
func argsSizesGetUnstable(argc, size unsafe.Pointer) int32

//go:wasmimport env proxy_send_local_response
func sendLocalResponse(code uint32, d unsafe.Pointer, dl uint32, b unsafe.Pointer, bl uint32, h unsafe.Pointer, hl uint32, grpc int32) uint32

//go:wasmexport proxy_abi_version_0_2_0
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

// Slots live in package variables, never on a movable stack.
var (
	u32a, u32b uint32
	u64        uint64
	stat       [24]byte
	small      [16]byte
	big        [64<<10 + 1]byte
	iov        [2]uint32
	sub        [48]byte
	event      [32]byte
	path       = []byte("/etc/passwd")
	msg        = []byte("to fd 5\n")
)

//go:wasmexport proxy_on_request_headers
func requestHeaders(ctx, n, eos uint32) uint32 {
	var res []byte
	rec := func(name string, v int64) {
		res = append(res, name...)
		res = append(res, '=')
		res = strconv.AppendInt(res, v, 10)
		res = append(res, '\n')
	}
	iov[0], iov[1] = uint32(uintptr(unsafe.Pointer(&small[0]))), uint32(len(small))
	rec("fd_read/stdin", int64(fdRead(0, unsafe.Pointer(&iov[0]), 1, unsafe.Pointer(&u32a))))
	iov[0], iov[1] = uint32(uintptr(unsafe.Pointer(&msg[0]))), uint32(len(msg))
	rec("fd_write/fd5", int64(fdWrite(5, unsafe.Pointer(&iov[0]), 1, unsafe.Pointer(&u32a))))
	rec("fd_fdstat_get/1", int64(fdFdstatGet(1, unsafe.Pointer(&stat[0]))))
	rec("fd_fdstat_get/2", int64(fdFdstatGet(2, unsafe.Pointer(&stat[0]))))
	rec("fd_fdstat_get/0", int64(fdFdstatGet(0, unsafe.Pointer(&stat[0]))))
	rec("fd_fdstat_get/3", int64(fdFdstatGet(3, unsafe.Pointer(&stat[0]))))
	rec("clock_time_get/realtime", int64(clockTimeGet(0, 1, unsafe.Pointer(&u64))))
	rec("clock_time_get/realtime_nonzero", int64(min(u64, 1)))
	rec("clock_time_get/monotonic", int64(clockTimeGet(1, 1, unsafe.Pointer(&u64))))
	rec("clock_time_get/process_cputime", int64(clockTimeGet(2, 1, unsafe.Pointer(&u64))))
	rec("clock_time_get/thread_cputime", int64(clockTimeGet(3, 1, unsafe.Pointer(&u64))))
	rec("random_get/16", int64(randomGet(unsafe.Pointer(&small[0]), int32(len(small)))))
	rec("random_get/64KiB", int64(randomGet(unsafe.Pointer(&big[0]), 64<<10)))
	rec("random_get/64KiB+1", int64(randomGet(unsafe.Pointer(&big[0]), int32(len(big)))))
	rec("path_open", int64(pathOpen(3, 0, unsafe.Pointer(&path[0]), int32(len(path)), 0, 0, 0, 0, unsafe.Pointer(&u32a))))
	u32a = 99
	rec("poll_oneoff", int64(pollOneoff(unsafe.Pointer(&sub[0]), unsafe.Pointer(&event[0]), 1, unsafe.Pointer(&u32a))))
	rec("poll_oneoff/nevents", int64(u32a))
	u32a, u32b = 99, 99
	rec("args_sizes_get", int64(argsSizesGet(unsafe.Pointer(&u32a), unsafe.Pointer(&u32b))))
	rec("args_sizes_get/argc", int64(u32a))
	rec("args_sizes_get/size", int64(u32b))
	u32a = 99
	rec("wasi_unstable/args_sizes_get", int64(argsSizesGetUnstable(unsafe.Pointer(&u32a), unsafe.Pointer(&u32b))))
	rec("wasi_unstable/args_sizes_get/argc", int64(u32a))
	keep = append(keep[:0], res)
	sendLocalResponse(200, nil, 0, unsafe.Pointer(&res[0]), uint32(len(res)), nil, 0, -1)
	return 1
}

func main() {}
