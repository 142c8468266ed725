package host

import (
	"strings"
	"sync"
)

// Action is what a stream callback decided.
type Action int

// Actions.
const (
	// Continue lets the stream go on.
	Continue Action = iota
	// Pause stops iteration (StopAllIterationAndWatermark for headers,
	// StopIterationAndBuffer for bodies) until the module continues the stream
	// or sends a local reply.
	Pause
)

func (a Action) String() string {
	if a == Pause {
		return "Pause"
	}
	return "Continue"
}

// LocalReply is a response the module sent with proxy_send_local_response (or
// the failure policy's 503).
type LocalReply struct {
	Status     uint32
	Details    string
	Body       []byte
	Headers    Headers
	GRPCStatus int32
}

// Stream is one HTTP stream context on a VM.
type Stream struct {
	vm          *VM
	id          uint32
	props       *Props
	filterState map[string][]byte

	reqHeaders, reqTrailers, respHeaders, respTrailers Headers
	reqBody, respBody                                  []byte
	// reqBuffering/respBuffering: the last body callback returned Pause
	// (StopIterationAndBuffer), so Envoy keeps the chunks buffered.
	reqBuffering, respBuffering bool
	hasReqBody, hasRespBody     bool

	mu        sync.Mutex
	local     *LocalReply
	continued [2]bool
	reset     bool
	changed   chan struct{}
	done      bool
	failOpen  bool
}

func (vm *VM) newStream(props *Props) *Stream {
	s := &Stream{vm: vm, props: props, filterState: map[string][]byte{}, changed: make(chan struct{}, 1)}
	if vm.Failed() {
		s.applyFailure()
		return s
	}
	vm.run(func() {
		vm.nextID++
		s.id = vm.nextID
		vm.streams[s.id] = s
		vm.enter(s.id)
		if f := vm.fns[cbContextCreate]; f != nil {
			if _, err := vm.callFn(f, uint64(s.id), uint64(vm.rootID)); err != nil {
				s.applyFailure()
			}
		}
	})
	return s
}

// applyFailure serves the stream by the plugin's failure policy.
func (s *Stream) applyFailure() {
	if s.vm.plugin.cfg.FailurePolicy == FailOpen {
		s.failOpen = true
		return
	}
	s.mu.Lock()
	if s.local == nil {
		s.local = &LocalReply{Status: 503, Details: "wasm_fail_stream"}
	}
	s.mu.Unlock()
	s.signal()
}

// ID is the stream's context id.
func (s *Stream) ID() uint32 { return s.id }

// VM is the worker VM serving the stream.
func (s *Stream) VM() *VM { return s.vm }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// invoke runs a stream callback and maps its result to an Action.
func (s *Stream) invoke(cb callback, a, b uint64) Action {
	if s.failOpen {
		return Continue
	}
	if s.LocalReply() != nil || s.Reset() {
		return Pause
	}
	act := Continue
	s.vm.run(func() {
		vm := s.vm
		f := vm.fns[cb]
		if vm.failed.Load() {
			s.applyFailure()
			act = s.failureAction()
			return
		}
		if f == nil {
			return
		}
		vm.enter(s.id)
		var args [3]uint64
		args[0], args[1], args[2] = uint64(s.id), a, b
		n := 3
		if cb == cbRequestTrailers || cb == cbResponseTrailers {
			n = 2
		}
		r, err := vm.callFn(f, args[:n]...)
		if err != nil {
			s.applyFailure()
			act = s.failureAction()
			return
		}
		if uint32(r) != 0 {
			act = Pause
		}
	})
	if s.LocalReply() != nil {
		// send_local_response stops the current iteration whatever it returned.
		act = Pause
	}
	return act
}

func (s *Stream) failureAction() Action {
	if s.failOpen {
		return Continue
	}
	return Pause
}

// RequestHeaders delivers request headers (pseudo headers included).
func (s *Stream) RequestHeaders(h Headers, endOfStream bool) Action {
	s.reqHeaders = lower(h)
	return s.invoke(cbRequestHeaders, uint64(len(h)), b2u(endOfStream))
}

// RequestBody delivers a body chunk. A paused body is buffered: the next call
// reports the whole buffered size, as Envoy does with StopIterationAndBuffer;
// after Continue the earlier chunks have gone upstream and the body buffer
// holds only the new chunk.
func (s *Stream) RequestBody(chunk []byte, endOfStream bool) Action {
	return s.body(cbRequestBody, &s.reqBody, &s.reqBuffering, &s.hasReqBody, chunk, endOfStream)
}

// body delivers a chunk of one direction's body (see RequestBody).
func (s *Stream) body(cb callback, buf *[]byte, buffering, has *bool, chunk []byte, endOfStream bool) Action {
	if !*buffering {
		*buf = (*buf)[:0]
	}
	*buf = append(*buf, chunk...)
	*has = true
	act := s.invoke(cb, uint64(len(*buf)), b2u(endOfStream))
	*buffering = act == Pause
	return act
}

// RequestTrailers delivers request trailers.
func (s *Stream) RequestTrailers(t Headers) Action {
	s.reqTrailers = lower(t)
	return s.invoke(cbRequestTrailers, uint64(len(t)), 0)
}

// ResponseHeaders delivers response headers (":status" included).
func (s *Stream) ResponseHeaders(h Headers, endOfStream bool) Action {
	s.respHeaders = lower(h)
	return s.invoke(cbResponseHeaders, uint64(len(h)), b2u(endOfStream))
}

// ResponseBody delivers a response body chunk (buffered like RequestBody).
func (s *Stream) ResponseBody(chunk []byte, endOfStream bool) Action {
	return s.body(cbResponseBody, &s.respBody, &s.respBuffering, &s.hasRespBody, chunk, endOfStream)
}

// ResponseTrailers delivers response trailers.
func (s *Stream) ResponseTrailers(t Headers) Action {
	s.respTrailers = lower(t)
	return s.invoke(cbResponseTrailers, uint64(len(t)), 0)
}

// Complete ends the stream as Envoy does: on_done, on_log, on_delete.
func (s *Stream) Complete() {
	if s.done {
		return
	}
	s.done = true
	vm := s.vm
	if s.id == 0 {
		return
	}
	vm.run(func() {
		defer delete(vm.streams, s.id)
		if vm.failed.Load() {
			return
		}
		for _, cb := range []callback{cbDone, cbLog, cbDelete} {
			if f := vm.fns[cb]; f != nil {
				vm.enter(s.id)
				if _, err := vm.callFn(f, uint64(s.id)); err != nil {
					return
				}
			}
		}
	})
}

// RequestHeadersNow returns the request headers as the module left them.
func (s *Stream) RequestHeadersNow() Headers { return s.reqHeaders.Clone() }

// ResponseHeadersNow returns the response headers as the module left them.
func (s *Stream) ResponseHeadersNow() Headers { return s.respHeaders.Clone() }

// RequestBodyNow returns Envoy's request body buffer as the module left it:
// every chunk since the module last paused, else the last chunk.
func (s *Stream) RequestBodyNow() []byte { return append([]byte(nil), s.reqBody...) }

// ResponseBodyNow returns the response body buffer (see RequestBodyNow).
func (s *Stream) ResponseBodyNow() []byte { return append([]byte(nil), s.respBody...) }

// LocalReply is the local response sent on this stream, if any.
func (s *Stream) LocalReply() *LocalReply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// Continued reports whether the module resumed the request (0) or response
// (1) side with proxy_continue_stream.
func (s *Stream) Continued(response bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if response {
		return s.continued[1]
	}
	return s.continued[0]
}

// Reset reports whether the module closed the stream.
func (s *Stream) Reset() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reset
}

// Changed is signalled when a paused stream is continued, answered or reset.
func (s *Stream) Changed() <-chan struct{} { return s.changed }

func (s *Stream) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func lower(h Headers) Headers {
	out := make(Headers, len(h))
	for i, kv := range h {
		out[i] = [2]string{strings.ToLower(kv[0]), kv[1]}
	}
	return out
}
