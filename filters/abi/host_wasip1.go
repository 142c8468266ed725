//go:build wasip1

package abi

import (
	"unsafe"

	_ "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm" // links the SDK's internal package we bind to
)

// sdkHost mirrors the SDK's internal.ProxyWasmHost interface method for method
// (same names and order, uint32 for the SDK's internal named uint32 types), so a
// value of it can be handed to internal.RegisterMockWasmHost. The compiler does
// not check the mirror; TestMirrorMatchesSDK does.
type sdkHost interface {
	ProxyLog(logLevel uint32, messageData *byte, messageSize int) uint32
	ProxySetProperty(pathData *byte, pathSize int, valueData *byte, valueSize int) uint32
	ProxyGetProperty(pathData *byte, pathSize int, returnValueData **byte, returnValueSize *int) uint32
	ProxySendLocalResponse(statusCode uint32, statusCodeDetailData *byte, statusCodeDetailsSize int, bodyData *byte, bodySize int, headersData *byte, headersSize int, grpcStatus int32) uint32
	ProxyGetSharedData(keyData *byte, keySize int, returnValueData **byte, returnValueSize *int, returnCas *uint32) uint32
	ProxySetSharedData(keyData *byte, keySize int, valueData *byte, valueSize int, cas uint32) uint32
	ProxyRegisterSharedQueue(nameData *byte, nameSize int, returnID *uint32) uint32
	ProxyResolveSharedQueue(vmIDData *byte, vmIDSize int, nameData *byte, nameSize int, returnID *uint32) uint32
	ProxyDequeueSharedQueue(queueID uint32, returnValueData **byte, returnValueSize *int) uint32
	ProxyEnqueueSharedQueue(queueID uint32, valueData *byte, valueSize int) uint32
	ProxyGetHeaderMapValue(mapType uint32, keyData *byte, keySize int, returnValueData **byte, returnValueSize *int) uint32
	ProxyAddHeaderMapValue(mapType uint32, keyData *byte, keySize int, valueData *byte, valueSize int) uint32
	ProxyReplaceHeaderMapValue(mapType uint32, keyData *byte, keySize int, valueData *byte, valueSize int) uint32
	ProxyContinueStream(streamType uint32) uint32
	ProxyCloseStream(streamType uint32) uint32
	ProxyRemoveHeaderMapValue(mapType uint32, keyData *byte, keySize int) uint32
	ProxyGetHeaderMapPairs(mapType uint32, returnValueData **byte, returnValueSize *int) uint32
	ProxySetHeaderMapPairs(mapType uint32, mapData *byte, mapSize int) uint32
	ProxyGetBufferBytes(bufferType uint32, start int, maxSize int, returnBufferData **byte, returnBufferSize *int) uint32
	ProxySetBufferBytes(bufferType uint32, start int, maxSize int, bufferData *byte, bufferSize int) uint32
	ProxyHttpCall(upstreamData *byte, upstreamSize int, headerData *byte, headerSize int, bodyData *byte, bodySize int, trailersData *byte, trailersSize int, timeout uint32, calloutIDPtr *uint32) uint32
	ProxyCallForeignFunction(funcNamePtr *byte, funcNameSize int, paramPtr *byte, paramSize int, returnData **byte, returnSize *int) uint32
	ProxySetTickPeriodMilliseconds(period uint32) uint32
	ProxySetEffectiveContext(contextID uint32) uint32
	ProxyDone() uint32
	ProxyDefineMetric(metricType uint32, metricNameData *byte, metricNameSize int, returnMetricIDPtr *uint32) uint32
	ProxyIncrementMetric(metricID uint32, offset int64) uint32
	ProxyRecordMetric(metricID uint32, value uint64) uint32
	ProxyGetMetric(metricID uint32, returnMetricValue *uint64) uint32
}

//go:linkname registerSDKHost github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal.RegisterMockWasmHost
func registerSDKHost(h sdkHost) (release func())

// slots receive values the host writes back. They are package globals (never
// on a goroutine stack, which may move while the host holds their address) and
// are safe to share because a Proxy-Wasm VM is single-threaded and hostcalls
// never nest.
var slots struct {
	ptr, size, cas, id uint32
	u64                uint64
}

// pinned keeps buffers handed out by proxy_on_memory_allocate reachable until
// the hostcall that asked for them has returned and the SDK holds the pointer;
// otherwise a second allocation in the same hostcall could collect the first.
var pinned [][]byte

func unpin() {
	clear(pinned)
	pinned = pinned[:0]
}

func addr(p unsafe.Pointer) uint32 { return uint32(uintptr(p)) }

func bytePtr(a uint32) *byte {
	if a == 0 {
		return nil
	}
	return (*byte)(unsafe.Add(unsafe.Pointer(nil), uintptr(a)))
}

// takeReturn stores the host-written (ptr, size) slots into the SDK's out params.
func takeReturn(status uint32, data **byte, size *int) uint32 {
	if status == 0 {
		*data = bytePtr(slots.ptr)
		*size = int(slots.size)
	}
	slots.ptr, slots.size = 0, 0
	unpin()
	return status
}

// host implements sdkHost on top of the env.proxy_* imports.
type host struct{}

func (host) ProxyLog(level uint32, msg *byte, n int) uint32 {
	return proxyLog(level, unsafe.Pointer(msg), uint32(n))
}

func (host) ProxySetProperty(path *byte, pathN int, val *byte, valN int) uint32 {
	return proxySetProperty(unsafe.Pointer(path), uint32(pathN), unsafe.Pointer(val), uint32(valN))
}

func (host) ProxyGetProperty(path *byte, pathN int, ret **byte, retN *int) uint32 {
	st := proxyGetProperty(unsafe.Pointer(path), uint32(pathN), unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxySendLocalResponse(code uint32, details *byte, detailsN int, body *byte, bodyN int, hdrs *byte, hdrsN int, grpc int32) uint32 {
	return proxySendLocalResponse(code, unsafe.Pointer(details), uint32(detailsN), unsafe.Pointer(body), uint32(bodyN), unsafe.Pointer(hdrs), uint32(hdrsN), grpc)
}

func (host) ProxyGetSharedData(key *byte, keyN int, ret **byte, retN *int, cas *uint32) uint32 {
	st := proxyGetSharedData(unsafe.Pointer(key), uint32(keyN), unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size), unsafe.Pointer(&slots.cas))
	if st == 0 {
		*cas = slots.cas
	}
	slots.cas = 0
	return takeReturn(st, ret, retN)
}

func (host) ProxySetSharedData(key *byte, keyN int, val *byte, valN int, cas uint32) uint32 {
	return proxySetSharedData(unsafe.Pointer(key), uint32(keyN), unsafe.Pointer(val), uint32(valN), cas)
}

func (host) ProxyRegisterSharedQueue(name *byte, nameN int, id *uint32) uint32 {
	st := proxyRegisterSharedQueue(unsafe.Pointer(name), uint32(nameN), unsafe.Pointer(&slots.id))
	if st == 0 {
		*id = slots.id
	}
	slots.id = 0
	return st
}

func (host) ProxyResolveSharedQueue(vmID *byte, vmIDN int, name *byte, nameN int, id *uint32) uint32 {
	st := proxyResolveSharedQueue(unsafe.Pointer(vmID), uint32(vmIDN), unsafe.Pointer(name), uint32(nameN), unsafe.Pointer(&slots.id))
	if st == 0 {
		*id = slots.id
	}
	slots.id = 0
	return st
}

func (host) ProxyDequeueSharedQueue(queue uint32, ret **byte, retN *int) uint32 {
	st := proxyDequeueSharedQueue(queue, unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxyEnqueueSharedQueue(queue uint32, val *byte, valN int) uint32 {
	return proxyEnqueueSharedQueue(queue, unsafe.Pointer(val), uint32(valN))
}

func (host) ProxyGetHeaderMapValue(m uint32, key *byte, keyN int, ret **byte, retN *int) uint32 {
	st := proxyGetHeaderMapValue(m, unsafe.Pointer(key), uint32(keyN), unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxyAddHeaderMapValue(m uint32, key *byte, keyN int, val *byte, valN int) uint32 {
	return proxyAddHeaderMapValue(m, unsafe.Pointer(key), uint32(keyN), unsafe.Pointer(val), uint32(valN))
}

func (host) ProxyReplaceHeaderMapValue(m uint32, key *byte, keyN int, val *byte, valN int) uint32 {
	return proxyReplaceHeaderMapValue(m, unsafe.Pointer(key), uint32(keyN), unsafe.Pointer(val), uint32(valN))
}

func (host) ProxyContinueStream(s uint32) uint32 { return proxyContinueStream(s) }

func (host) ProxyCloseStream(s uint32) uint32 { return proxyCloseStream(s) }

func (host) ProxyRemoveHeaderMapValue(m uint32, key *byte, keyN int) uint32 {
	return proxyRemoveHeaderMapValue(m, unsafe.Pointer(key), uint32(keyN))
}

func (host) ProxyGetHeaderMapPairs(m uint32, ret **byte, retN *int) uint32 {
	st := proxyGetHeaderMapPairs(m, unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxySetHeaderMapPairs(m uint32, data *byte, n int) uint32 {
	return proxySetHeaderMapPairs(m, unsafe.Pointer(data), uint32(n))
}

func (host) ProxyGetBufferBytes(b uint32, start, max int, ret **byte, retN *int) uint32 {
	st := proxyGetBufferBytes(b, uint32(start), uint32(max), unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxySetBufferBytes(b uint32, start, max int, data *byte, n int) uint32 {
	return proxySetBufferBytes(b, uint32(start), uint32(max), unsafe.Pointer(data), uint32(n))
}

func (host) ProxyHttpCall(up *byte, upN int, hdrs *byte, hdrsN int, body *byte, bodyN int, trl *byte, trlN int, timeout uint32, id *uint32) uint32 {
	st := proxyHttpCall(unsafe.Pointer(up), uint32(upN), unsafe.Pointer(hdrs), uint32(hdrsN), unsafe.Pointer(body), uint32(bodyN), unsafe.Pointer(trl), uint32(trlN), timeout, unsafe.Pointer(&slots.id))
	if st == 0 {
		*id = slots.id
	}
	slots.id = 0
	return st
}

func (host) ProxyCallForeignFunction(name *byte, nameN int, param *byte, paramN int, ret **byte, retN *int) uint32 {
	st := proxyCallForeignFunction(unsafe.Pointer(name), uint32(nameN), unsafe.Pointer(param), uint32(paramN), unsafe.Pointer(&slots.ptr), unsafe.Pointer(&slots.size))
	return takeReturn(st, ret, retN)
}

func (host) ProxySetTickPeriodMilliseconds(p uint32) uint32 { return proxySetTickPeriodMilliseconds(p) }

func (host) ProxySetEffectiveContext(id uint32) uint32 { return proxySetEffectiveContext(id) }

func (host) ProxyDone() uint32 { return proxyDone() }

func (host) ProxyDefineMetric(t uint32, name *byte, nameN int, id *uint32) uint32 {
	st := proxyDefineMetric(t, unsafe.Pointer(name), uint32(nameN), unsafe.Pointer(&slots.id))
	if st == 0 {
		*id = slots.id
	}
	slots.id = 0
	return st
}

func (host) ProxyIncrementMetric(id uint32, offset int64) uint32 {
	return proxyIncrementMetric(id, offset)
}

func (host) ProxyRecordMetric(id uint32, v uint64) uint32 { return proxyRecordMetric(id, v) }

func (host) ProxyGetMetric(id uint32, ret *uint64) uint32 {
	st := proxyGetMetric(id, unsafe.Pointer(&slots.u64))
	if st == 0 {
		*ret = slots.u64
	}
	slots.u64 = 0
	return st
}

// never is false at run time, but the compiler cannot prove it.
var never bool

// keepMethods calls every mirror method through the interface, where the
// linker can see it. The SDK's calls use its own named types, so without this
// the linker would drop the methods and the SDK would hit "unreachable method
// called" on its first hostcall.
func keepMethods(h sdkHost) {
	if !never {
		return
	}
	var b *byte
	var pb **byte
	var n *int
	var u *uint32
	var u64 *uint64
	h.ProxyLog(0, b, 0)
	h.ProxySetProperty(b, 0, b, 0)
	h.ProxyGetProperty(b, 0, pb, n)
	h.ProxySendLocalResponse(0, b, 0, b, 0, b, 0, 0)
	h.ProxyGetSharedData(b, 0, pb, n, u)
	h.ProxySetSharedData(b, 0, b, 0, 0)
	h.ProxyRegisterSharedQueue(b, 0, u)
	h.ProxyResolveSharedQueue(b, 0, b, 0, u)
	h.ProxyDequeueSharedQueue(0, pb, n)
	h.ProxyEnqueueSharedQueue(0, b, 0)
	h.ProxyGetHeaderMapValue(0, b, 0, pb, n)
	h.ProxyAddHeaderMapValue(0, b, 0, b, 0)
	h.ProxyReplaceHeaderMapValue(0, b, 0, b, 0)
	h.ProxyContinueStream(0)
	h.ProxyCloseStream(0)
	h.ProxyRemoveHeaderMapValue(0, b, 0)
	h.ProxyGetHeaderMapPairs(0, pb, n)
	h.ProxySetHeaderMapPairs(0, b, 0)
	h.ProxyGetBufferBytes(0, 0, 0, pb, n)
	h.ProxySetBufferBytes(0, 0, 0, b, 0)
	h.ProxyHttpCall(b, 0, b, 0, b, 0, b, 0, 0, u)
	h.ProxyCallForeignFunction(b, 0, b, 0, pb, n)
	h.ProxySetTickPeriodMilliseconds(0)
	h.ProxySetEffectiveContext(0)
	h.ProxyDone()
	h.ProxyDefineMetric(0, b, 0, u)
	h.ProxyIncrementMetric(0, 0)
	h.ProxyRecordMetric(0, 0)
	h.ProxyGetMetric(0, u64)
}

func init() {
	var h sdkHost = host{}
	keepMethods(h)
	// The SDK's registration takes a mutex it never releases; in a
	// single-threaded wasm VM that only means it is registered for good.
	registerSDKHost(h)
}
