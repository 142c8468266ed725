//go:build wasip1

package abi

import "unsafe"

// Proxy-Wasm ABI 0.2.1 host functions used by the SDK. Every parameter is an
// i32 or i64 in the module's import signature; addresses are passed as
// unsafe.Pointer (lowered to i32) so the data stays live across the call.

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, msgN uint32) uint32

//go:wasmimport env proxy_set_property
func proxySetProperty(path unsafe.Pointer, pathN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathN uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(code uint32, details unsafe.Pointer, detailsN uint32, body unsafe.Pointer, bodyN uint32, hdrs unsafe.Pointer, hdrsN uint32, grpc int32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keyN uint32, retPtr unsafe.Pointer, retN unsafe.Pointer, retCas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(name unsafe.Pointer, nameN uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxyResolveSharedQueue(vmID unsafe.Pointer, vmIDN uint32, name unsafe.Pointer, nameN uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(queue uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(queue uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(m uint32, key unsafe.Pointer, keyN uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(m uint32, key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(m uint32, key unsafe.Pointer, keyN uint32, val unsafe.Pointer, valN uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(m uint32, key unsafe.Pointer, keyN uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(m uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_set_header_map_pairs
func proxySetHeaderMapPairs(m uint32, data unsafe.Pointer, n uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(b uint32, start uint32, max uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(b uint32, start uint32, max uint32, data unsafe.Pointer, n uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(stream uint32) uint32

//go:wasmimport env proxy_close_stream
func proxyCloseStream(stream uint32) uint32

//go:wasmimport env proxy_http_call
func proxyHttpCall(up unsafe.Pointer, upN uint32, hdrs unsafe.Pointer, hdrsN uint32, body unsafe.Pointer, bodyN uint32, trl unsafe.Pointer, trlN uint32, timeout uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_call_foreign_function
func proxyCallForeignFunction(name unsafe.Pointer, nameN uint32, param unsafe.Pointer, paramN uint32, retPtr unsafe.Pointer, retN unsafe.Pointer) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(period uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(id uint32) uint32

//go:wasmimport env proxy_done
func proxyDone() uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(t uint32, name unsafe.Pointer, nameN uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, retValue unsafe.Pointer) uint32
