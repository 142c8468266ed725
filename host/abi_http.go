package host

import (
	"sync"
	"time"
)

// Hostcalls that leave the proxy: http callouts to named clusters, and gRPC,
// which the host does not implement (UNIMPLEMENTED, as an Envoy without a
// gRPC service configured would fail every call).

var httpCalls = []hostcall{
	{"proxy_http_call", p32("upstream_name_data", "upstream_name_size", "headers_map_data", "headers_map_size",
		"body_data", "body_size", "trailers_map_data", "trailers_map_size", "timeout_milliseconds", "return_callout_id"), hHTTPCall},
}

var grpcCalls = []hostcall{
	{"proxy_grpc_call", p32("grpc_service_data", "grpc_service_size", "service_name_data", "service_name_size",
		"method_name_data", "method_name_size", "initial_metadata_map_data", "initial_metadata_map_size",
		"grpc_message_data", "grpc_message_size", "timeout_milliseconds", "return_callout_id"), hUnimplemented},
	{"proxy_grpc_stream", p32("grpc_service_data", "grpc_service_size", "service_name_data", "service_name_size",
		"method_name_data", "method_name_size", "initial_metadata_map_data", "initial_metadata_map_size", "return_stream_id"), hUnimplemented},
	{"proxy_grpc_close", p32("callout_id"), hUnimplemented},
	{"proxy_grpc_cancel", p32("callout_id"), hUnimplemented},
	{"proxy_grpc_send", p32("stream_id", "message_data", "message_size", "end_stream"), hUnimplemented},
}

func hUnimplemented(*VM, []uint64) status { return statusUnimplemented }

func hHTTPCall(vm *VM, p []uint64) status {
	upData, upSize, hdrData, hdrSize, bodyData, bodySize, trlData, trlSize, timeout, retID :=
		p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], int32(uint32(p[8])), p[9]
	up, ok1 := vm.read(upData, upSize)
	hdrs, ok2 := vm.read(hdrData, hdrSize)
	body, ok3 := vm.read(bodyData, bodySize)
	trl, ok4 := vm.read(trlData, trlSize)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return statusInvalidMemoryAccess
	}
	// The slot is written before anything else (a failed call returns id 0),
	// which also proves it writable for the id below.
	if !vm.putU32(retID, 0) {
		return statusInvalidMemoryAccess
	}
	headers, _ := DecodePairs(hdrs)
	trailers, _ := DecodePairs(trl)
	id, st := vm.httpCall(string(up), headers, body, trailers, timeout)
	if st != statusOK {
		return st
	}
	if !vm.putU32(retID, id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// httpCall dispatches a callout to cluster and returns its id. Envoy refuses
// (BAD_ARGUMENT) an unknown cluster, a negative timeout and a request without
// :path, :method or :authority. The reply, or the timeout's failure, reaches
// proxy_on_http_call_response after the callback in progress.
func (vm *VM) httpCall(cluster string, headers Headers, body []byte, trailers Headers, timeoutMs int32) (uint32, status) {
	c, ok := vm.plugin.cfg.Clusters[cluster]
	if !ok || timeoutMs < 0 {
		return 0, statusBadArgument
	}
	headers = lower(headers)
	for _, k := range []string{":path", ":method", ":authority"} {
		if v, ok := headers.Get(k); !ok || v == "" {
			return 0, statusBadArgument
		}
	}
	vm.nextCall++
	token := vm.nextCall
	pc := &pendingCall{}
	vm.calls[token] = pc
	d := time.Duration(timeoutMs) * time.Millisecond
	if d > 0 {
		pc.stop = vm.plugin.rt.cfg.Clock.AfterFunc(d, func() {
			vm.post(func() { vm.deliverCallout(token, nil) })
		})
	}
	req := &CalloutRequest{Cluster: cluster, Headers: headers, Body: append([]byte(nil), body...), Trailers: lower(trailers), Timeout: d}
	var once sync.Once
	c.Call(req, func(resp *CalloutResponse) {
		once.Do(func() { vm.post(func() { vm.deliverCallout(token, resp) }) })
	})
	return token, statusOK
}
