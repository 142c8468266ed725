package host

import (
	"context"
	"strings"
	"sync"
)

// Action is what became of a stream at one point of its life.
type Action int

// Actions.
const (
	// Continue lets the stream go on to the next filter (or upstream).
	Continue Action = iota
	// Pause stops iteration (StopAllIterationAndWatermark for headers,
	// StopIterationAndBuffer for bodies) until the module resumes the stream
	// with proxy_continue_stream, answers it or closes it: see Stream.Wait.
	Pause
	// Reply means the stream was answered locally (proxy_send_local_response,
	// or the failure policy's 503); Verdict.Reply holds the response.
	Reply
	// Reset means the module closed the stream (proxy_close_stream).
	Reset
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "Continue"
	case Pause:
		return "Pause"
	case Reply:
		return "Reply"
	case Reset:
		return "Reset"
	}
	return "Action(?)"
}

// Verdict is what the filter decided for a stream: returned by every driver
// call (RequestHeaders, ..., ResponseTrailers) and by Wait.
type Verdict struct {
	Action Action
	// Reply is the local response when Action is Reply.
	Reply *LocalReply
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

// Stream directions, indexing Stream.resumed (proxy_continue_stream's
// WasmStreamType values for HTTP).
const (
	sideRequest  = streamTypeRequest
	sideResponse = streamTypeResponse
)

// Stream is one HTTP stream context on a VM. A driver (the dev proxy, a test)
// delivers the stream's events in order and reads each call's Verdict; when
// it is Pause, Wait blocks until the module decides.
//
// Hostcalls reach the stream's state only through its methods, which run on
// the VM's goroutine; the verdict fields are also read by the driver and are
// guarded by mu.
type Stream struct {
	vm          *VM
	id          uint32
	props       *Props
	upstream    *Props // set by SelectUpstream: readable once the host is picked
	filterState map[string][]byte

	reqHeaders, reqTrailers, respHeaders, respTrailers Headers
	reqBody, respBody                                  []byte
	// reqBuffering/respBuffering: the last body callback returned Pause
	// (StopIterationAndBuffer), so Envoy keeps the chunks buffered.
	reqBuffering, respBuffering bool
	done                        bool
	failOpen                    bool

	// The verdict, guarded by mu (the small fields sit together so that a
	// Stream stays in a small allocation class).
	reset bool
	// resumed[d] records proxy_continue_stream on direction d since its
	// last callback; paused is the direction the last callback stopped
	// (-1: none).
	resumed [2]bool
	paused  int8
	mu      sync.Mutex
	reply   *LocalReply
	changed chan struct{}
}

func (vm *VM) newStream(props *Props) *Stream {
	s := &Stream{vm: vm, props: props, filterState: map[string][]byte{}, paused: -1, changed: make(chan struct{}, 1)}
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
	if s.reply == nil {
		s.reply = &LocalReply{Status: 503, Details: "wasm_fail_stream", GRPCStatus: -1}
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

// invoke runs a stream callback of direction side and returns the verdict.
func (s *Stream) invoke(cb callback, side int, a, b uint64) Verdict {
	if s.failOpen {
		return Verdict{Action: Continue}
	}
	s.mu.Lock()
	if v, ended := s.endedLocked(); ended {
		s.mu.Unlock()
		return v
	}
	s.resumed[side] = false
	s.mu.Unlock()
	stopped := false
	s.vm.run(func() {
		vm := s.vm
		if vm.failed.Load() {
			s.applyFailure()
			return
		}
		f := vm.fns[cb]
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
			return
		}
		stopped = uint32(r) != 0
	})
	if s.failOpen {
		return Verdict{Action: Continue}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ended := s.endedLocked(); ended {
		// send_local_response and close_stream stop the current iteration
		// whatever the callback returned.
		return v
	}
	if stopped && !s.resumed[side] {
		s.paused = int8(side)
		return Verdict{Action: Pause}
	}
	s.paused = -1
	return Verdict{Action: Continue}
}

// endedLocked is the verdict of a stream that was answered or closed.
func (s *Stream) endedLocked() (Verdict, bool) {
	switch {
	case s.reply != nil:
		return Verdict{Action: Reply, Reply: s.reply}, true
	case s.reset:
		return Verdict{Action: Reset}, true
	}
	return Verdict{}, false
}

// verdictLocked is the stream's verdict now: Pause while the paused
// direction has not been resumed.
func (s *Stream) verdictLocked() Verdict {
	if v, ended := s.endedLocked(); ended {
		return v
	}
	if s.paused >= 0 && !s.resumed[s.paused] {
		return Verdict{Action: Pause}
	}
	return Verdict{Action: Continue}
}

// Wait blocks while the stream is paused and returns the verdict once the
// module resumes the paused direction (Continue), answers the stream (Reply)
// or closes it (Reset), usually from a callout reply, a tick or a queue
// callback. When ctx ends first it returns Pause; with a ctx that is already
// done it reports the verdict now without blocking. One goroutine waits on a
// stream at a time.
func (s *Stream) Wait(ctx context.Context) Verdict {
	for {
		s.mu.Lock()
		v := s.verdictLocked()
		s.mu.Unlock()
		if v.Action != Pause {
			return v
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.verdictLocked()
		}
	}
}

func (s *Stream) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// --- what hostcalls do to a stream ---

// sendLocalReply answers the stream (Envoy sends the reply after the VM
// call, so a later send_local_response in the same call replaces it).
func (s *Stream) sendLocalReply(lr *LocalReply) {
	s.mu.Lock()
	s.reply = lr
	s.mu.Unlock()
	s.signal()
}

// resume is proxy_continue_stream on direction side.
func (s *Stream) resume(side int) {
	s.mu.Lock()
	s.resumed[side] = true
	s.mu.Unlock()
	s.signal()
}

// close is proxy_close_stream: Envoy resets the stream.
func (s *Stream) close() {
	s.mu.Lock()
	s.reset = true
	s.mu.Unlock()
	s.signal()
}

// setFilterState is proxy_set_property: Envoy keeps the value in the
// stream's filter state as "wasm.<path>".
func (s *Stream) setFilterState(path, value []byte) {
	s.filterState["wasm."+string(path)] = append([]byte(nil), value...)
}

// headerMap is one of the stream's header maps, nil while Envoy has not
// received it.
func (s *Stream) headerMap(t uint32) *Headers {
	var m *Headers
	switch t {
	case mapRequestHeaders:
		m = &s.reqHeaders
	case mapRequestTrailers:
		m = &s.reqTrailers
	case mapResponseHeaders:
		m = &s.respHeaders
	case mapResponseTrailers:
		m = &s.respTrailers
	default:
		return nil
	}
	if *m == nil {
		return nil
	}
	return m
}

// body is the stream's request or response body buffer.
func (s *Stream) body(t uint32) *[]byte {
	if t == bufRequestBody {
		return &s.reqBody
	}
	return &s.respBody
}

// --- driver calls ---

// RequestHeaders delivers request headers (pseudo headers included).
func (s *Stream) RequestHeaders(h Headers, endOfStream bool) Verdict {
	s.reqHeaders = lower(h)
	return s.invoke(cbRequestHeaders, sideRequest, uint64(len(h)), b2u(endOfStream))
}

// RequestBody delivers a body chunk. A paused body is buffered: the next call
// reports the whole buffered size, as Envoy does with StopIterationAndBuffer;
// once the module continues, the earlier chunks have gone upstream and the
// body buffer holds only the new chunk.
func (s *Stream) RequestBody(chunk []byte, endOfStream bool) Verdict {
	return s.deliverBody(cbRequestBody, sideRequest, &s.reqBody, &s.reqBuffering, chunk, endOfStream)
}

// deliverBody delivers a chunk of one direction's body (see RequestBody).
func (s *Stream) deliverBody(cb callback, side int, buf *[]byte, buffering *bool, chunk []byte, endOfStream bool) Verdict {
	s.mu.Lock()
	flushed := s.resumed[side]
	s.mu.Unlock()
	if !*buffering || flushed {
		*buf = (*buf)[:0]
	}
	*buf = append(*buf, chunk...)
	v := s.invoke(cb, side, uint64(len(*buf)), b2u(endOfStream))
	*buffering = v.Action == Pause
	return v
}

// RequestTrailers delivers request trailers.
func (s *Stream) RequestTrailers(t Headers) Verdict {
	s.reqTrailers = lower(t)
	return s.invoke(cbRequestTrailers, sideRequest, uint64(len(t)), 0)
}

// ResponseHeaders delivers response headers (":status" included).
func (s *Stream) ResponseHeaders(h Headers, endOfStream bool) Verdict {
	s.respHeaders = lower(h)
	return s.invoke(cbResponseHeaders, sideResponse, uint64(len(h)), b2u(endOfStream))
}

// ResponseBody delivers a response body chunk (buffered like RequestBody).
func (s *Stream) ResponseBody(chunk []byte, endOfStream bool) Verdict {
	return s.deliverBody(cbResponseBody, sideResponse, &s.respBody, &s.respBuffering, chunk, endOfStream)
}

// ResponseTrailers delivers response trailers.
func (s *Stream) ResponseTrailers(t Headers) Verdict {
	s.respTrailers = lower(t)
	return s.invoke(cbResponseTrailers, sideResponse, uint64(len(t)), 0)
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

func lower(h Headers) Headers {
	out := make(Headers, len(h))
	for i, kv := range h {
		out[i] = [2]string{strings.ToLower(kv[0]), kv[1]}
	}
	return out
}
