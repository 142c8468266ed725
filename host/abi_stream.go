package host

import "strings"

// Hostcalls on the current stream (or the context the module made
// effective): properties, local replies and stream control, header maps and
// buffers.

var propertyCalls = []hostcall{
	{"proxy_get_property", p32("property_path_data", "property_path_size", "return_property_value_data", "return_property_value_size"), hGetProperty},
	{"proxy_set_property", p32("property_path_data", "property_path_size", "property_value_data", "property_value_size"), hSetProperty},
}

var streamCalls = []hostcall{
	{"proxy_send_local_response", p32("response_code", "response_code_details_data", "response_code_details_size",
		"response_body_data", "response_body_size", "additional_headers_map_data", "additional_headers_size", "grpc_status"), hSendLocalResponse},
	{"proxy_continue_stream", p32("stream_type"), hContinueStream},
	{"proxy_close_stream", p32("stream_type"), hCloseStream},
}

var headerMapCalls = []hostcall{
	{"proxy_get_header_map_value", p32("map_type", "key_data", "key_size", "return_value_data", "return_value_size"), hGetHeaderValue},
	{"proxy_add_header_map_value", p32("map_type", "key_data", "key_size", "value_data", "value_size"), hAddHeaderValue},
	{"proxy_replace_header_map_value", p32("map_type", "key_data", "key_size", "value_data", "value_size"), hReplaceHeaderValue},
	{"proxy_remove_header_map_value", p32("map_type", "key_data", "key_size"), hRemoveHeaderValue},
	{"proxy_get_header_map_pairs", p32("map_type", "return_map_data", "return_map_size"), hGetHeaderPairs},
	{"proxy_set_header_map_pairs", p32("map_type", "map_data", "map_size"), hSetHeaderPairs},
	{"proxy_get_header_map_size", p32("map_type", "return_map_size"), hGetHeaderMapSize},
}

var bufferCalls = []hostcall{
	{"proxy_get_buffer_status", p32("buffer_type", "return_buffer_size", "return_flags"), hGetBufferStatus},
	{"proxy_get_buffer_bytes", p32("buffer_type", "start", "max_size", "return_buffer_data", "return_buffer_size"), hGetBufferBytes},
	{"proxy_set_buffer_bytes", p32("buffer_type", "start", "size", "buffer_data", "buffer_size"), hSetBufferBytes},
}

// --- properties ---

func hGetProperty(vm *VM, p []uint64) status {
	pathData, pathSize, retData, retSize := p[0], p[1], p[2], p[3]
	path, ok := vm.read(pathData, pathSize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	v, found := vm.property(string(path))
	if !found {
		return statusNotFound
	}
	return vm.copyOut(v, retData, retSize)
}

func hSetProperty(vm *VM, p []uint64) status {
	pathData, pathSize, valData, valSize := p[0], p[1], p[2], p[3]
	path, ok1 := vm.read(pathData, pathSize)
	val, ok2 := vm.read(valData, valSize)
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := vm.stream()
	if st == nil {
		// Envoy keeps set_property values in the stream's filter state; a
		// root context has none.
		return statusNotFound
	}
	st.setFilterState(path, val)
	return statusOK
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
		if v, ok := st.upstream.get(key); ok {
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

// --- local replies and stream control ---

func hSendLocalResponse(vm *VM, p []uint64) status {
	code, detailsData, detailsSize, bodyData, bodySize, hdrsData, hdrsSize, grpcStatus := p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
	details, ok1 := vm.read(detailsData, detailsSize)
	body, ok2 := vm.read(bodyData, bodySize)
	hdrs, ok3 := vm.read(hdrsData, hdrsSize)
	if !ok1 || !ok2 || !ok3 {
		return statusInvalidMemoryAccess
	}
	st := vm.stream()
	if st == nil {
		// Root contexts have no stream to answer.
		return statusBadArgument
	}
	extra, _ := DecodePairs(hdrs) // invalid pairs: no extra headers, like Envoy
	grpc := int32(uint32(grpcStatus))
	if grpc < 0 || grpc > 16 {
		grpc = -1
	}
	st.sendLocalReply(&LocalReply{Status: uint32(code), Details: string(details), Body: append([]byte(nil), body...), Headers: lower(extra), GRPCStatus: grpc})
	return statusOK
}

func hContinueStream(vm *VM, p []uint64) status { return vm.continueStream(uint32(p[0])) }

// continueStream resumes a direction of the current stream. Envoy treats
// the downstream direction as a no-op.
func (vm *VM) continueStream(t uint32) status {
	if t == streamTypeDown {
		return statusOK
	}
	st, res := vm.directionStream(t)
	if st != nil {
		st.resume(int(t))
	}
	return res
}

func hCloseStream(vm *VM, p []uint64) status { return vm.closeStream(uint32(p[0])) }

// closeStream resets the current stream (request or response direction).
func (vm *VM) closeStream(t uint32) status {
	st, res := vm.directionStream(t)
	if st != nil {
		st.close()
	}
	return res
}

// directionStream decodes a stream_type for continue/close: BAD_ARGUMENT
// past upstream, UNIMPLEMENTED for the connection directions (an HTTP filter
// has none) or without a current stream, else the stream.
func (vm *VM) directionStream(t uint32) (*Stream, status) {
	switch {
	case t > streamTypeUp:
		return nil, statusBadArgument
	case t > streamTypeResponse:
		return nil, statusUnimplemented
	}
	st := vm.stream()
	if st == nil {
		return nil, statusUnimplemented
	}
	return st, statusOK
}

// --- header maps ---

// headerMap returns map t of the effective context, or nil when that map is
// not available now (Envoy answers BAD_ARGUMENT).
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
	return st.headerMap(t)
}

// mapArg decodes the (map_type, data, size) arguments a header-map call
// starts with, checked in Envoy's order: the type, the guest bytes, then the
// map itself (BAD_ARGUMENT while it is unavailable).
func (vm *VM) mapArg(mapType uint32, data, size uint64) (*Headers, []byte, status) {
	if mapType > mapMax {
		return nil, nil, statusBadArgument
	}
	b, ok := vm.read(data, size)
	if !ok {
		return nil, nil, statusInvalidMemoryAccess
	}
	m := vm.headerMap(mapType)
	if m == nil {
		return nil, nil, statusBadArgument
	}
	return m, b, statusOK
}

func hGetHeaderValue(vm *VM, p []uint64) status {
	mapType, keyData, keySize, retData, retSize := uint32(p[0]), p[1], p[2], p[3], p[4]
	m, key, st := vm.mapArg(mapType, keyData, keySize)
	if st != statusOK {
		return st
	}
	k := vm.lowerKey(key)
	for _, kv := range *m {
		if kv[0] == string(k) {
			return vm.copyOutString(kv[1], retData, retSize)
		}
	}
	return statusNotFound
}

// editMap decodes the (map_type, key, value) arguments shared by the add,
// replace and remove hostcalls and applies edit to the map.
func (vm *VM) editMap(p []uint64, withValue bool, edit func(m *Headers, k, v string)) status {
	mapType, keyData, keySize := uint32(p[0]), p[1], p[2]
	if mapType > mapMax {
		return statusBadArgument
	}
	key, ok := vm.read(keyData, keySize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	var val []byte
	if withValue {
		valData, valSize := p[3], p[4]
		if val, ok = vm.read(valData, valSize); !ok {
			return statusInvalidMemoryAccess
		}
	}
	m := vm.headerMap(mapType)
	if m == nil {
		return statusBadArgument
	}
	edit(m, strings.ToLower(string(key)), string(val))
	return statusOK
}

func hAddHeaderValue(vm *VM, p []uint64) status {
	return vm.editMap(p, true, func(m *Headers, k, v string) { m.add(k, v) })
}

func hReplaceHeaderValue(vm *VM, p []uint64) status {
	return vm.editMap(p, true, func(m *Headers, k, v string) { m.replace(k, v) })
}

func hRemoveHeaderValue(vm *VM, p []uint64) status {
	return vm.editMap(p, false, func(m *Headers, k, _ string) { m.remove(k) })
}

func hGetHeaderPairs(vm *VM, p []uint64) status {
	mapType, retData, retSize := uint32(p[0]), p[1], p[2]
	if mapType > mapMax {
		return statusBadArgument
	}
	m := vm.headerMap(mapType)
	if m == nil || len(*m) == 0 {
		// An unavailable map reads as empty (Envoy's getHeaderMapPairs).
		return vm.copyOut(nil, retData, retSize)
	}
	vm.scratch = EncodePairs(vm.scratch[:0], *m)
	return vm.copyOut(vm.scratch, retData, retSize)
}

func hSetHeaderPairs(vm *VM, p []uint64) status {
	mapType, mapData, mapSize := uint32(p[0]), p[1], p[2]
	m, data, st := vm.mapArg(mapType, mapData, mapSize)
	if st != statusOK {
		return st
	}
	pairs, _ := DecodePairs(data) // Envoy: malformed input means no pairs
	*m = lower(pairs)
	return statusOK
}

func hGetHeaderMapSize(vm *VM, p []uint64) status {
	mapType, retSize := uint32(p[0]), p[1]
	if mapType > mapMax {
		return statusBadArgument
	}
	m := vm.headerMap(mapType)
	if m == nil {
		return statusBadArgument
	}
	if !vm.putU32(retSize, uint32(m.byteSize())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// --- buffers ---

// buffer returns buffer t as the current callback sees it, false when Envoy
// has none there (NOT_FOUND).
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
		return st.body(t), true
	}
	return nil, false
}

// bufferArg decodes a buffer_type: BAD_ARGUMENT past the last type,
// NOT_FOUND when the current callback has no such buffer.
func (vm *VM) bufferArg(t uint32) (*[]byte, status) {
	if t > bufMax {
		return nil, statusBadArgument
	}
	b, ok := vm.buffer(t)
	if !ok {
		return nil, statusNotFound
	}
	return b, statusOK
}

func hGetBufferStatus(vm *VM, p []uint64) status {
	bufType, retSize, retFlags := uint32(p[0]), p[1], p[2]
	b, st := vm.bufferArg(bufType)
	if st != statusOK {
		return st
	}
	if !vm.putU32(retSize, uint32(len(*b))) || !vm.putU32(retFlags, 0) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hGetBufferBytes(vm *VM, p []uint64) status {
	bufType, start, maxSize, retData, retSize := uint32(p[0]), uint32(p[1]), uint32(p[2]), p[3], p[4]
	b, st := vm.bufferArg(bufType)
	if st != statusOK {
		return st
	}
	return vm.copyOut(bufferSlice(*b, start, maxSize), retData, retSize)
}

// bufferSlice is what get_buffer_bytes returns: up to length bytes from
// start, clipped to the buffer (empty past its end). The 32-bit arguments
// cannot overflow their 64-bit sum, as in proxy-wasm-cpp-host.
func bufferSlice(b []byte, start, length uint32) []byte {
	from, size := uint64(start), uint64(len(b))
	if from >= size {
		return nil
	}
	return b[from : from+min(uint64(length), size-from)]
}

func hSetBufferBytes(vm *VM, p []uint64) status {
	bufType, start, size, data, dataSize := uint32(p[0]), uint32(p[1]), uint32(p[2]), p[3], p[4]
	b, st := vm.bufferArg(bufType)
	if st != statusOK {
		return st
	}
	in, ok := vm.read(data, dataSize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	return setBufferBytes(b, int(start), int(size), in)
}

// setBufferBytes is Envoy's set_buffer_bytes: at start 0 it drains length
// bytes and prepends data; at or past the end it appends; anywhere else is
// BAD_ARGUMENT.
func setBufferBytes(b *[]byte, start, length int, data []byte) status {
	switch {
	case start == 0:
		rest := *b
		length = min(length, len(rest))
		*b = append(append([]byte(nil), data...), rest[length:]...)
	case start >= len(*b):
		*b = append(*b, data...)
	default:
		return statusBadArgument
	}
	return statusOK
}
