package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// callback indexes the module's exported Proxy-Wasm callbacks.
type callback int

const (
	cbContextCreate callback = iota
	cbVMStart
	cbConfigure
	cbTick
	cbQueueReady
	cbRequestHeaders
	cbRequestBody
	cbRequestTrailers
	cbResponseHeaders
	cbResponseBody
	cbResponseTrailers
	cbHTTPCallResponse
	cbLog
	cbDone
	cbDelete
	numCallbacks
)

var callbackNames = [numCallbacks]string{
	"proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
	"proxy_on_queue_ready", "proxy_on_request_headers", "proxy_on_request_body",
	"proxy_on_request_trailers", "proxy_on_response_headers", "proxy_on_response_body",
	"proxy_on_response_trailers", "proxy_on_http_call_response", "proxy_on_log", "proxy_on_done",
	"proxy_on_delete",
}

type vmKey struct{}

// VM is one instance of a plugin's module (one Envoy worker thread's VM). It
// runs one callback at a time; callout replies, ticks and queue notifications
// arriving from other goroutines are queued and run between callbacks.
type VM struct {
	plugin   *Plugin
	worker   int
	mod      api.Module
	mem      api.Memory
	fns      [numCallbacks]api.Function
	alloc    api.Function
	ctx      context.Context
	cancel   context.CancelFunc
	deadline atomic.Int64

	mu         sync.Mutex
	postMu     sync.Mutex
	posted     []func()
	stack      [8]uint64
	allocStack [1]uint64

	startup   bool
	failed    atomic.Bool
	failErr   error
	rootID    uint32
	nextID    uint32
	streams   map[uint32]*Stream
	current   uint32
	effective uint32
	// callback-scoped buffers
	inVMStart, inConfigure bool
	callResp               *CalloutResponse

	tickPeriod  time.Duration
	tickStop    func() bool
	calls       map[uint32]*pendingCall
	nextCall    uint32
	pendingDone bool
	scratch     []byte
}

type pendingCall struct {
	stop func() bool
}

func (p *Plugin) startVM(ctx context.Context, worker int) (*VM, error) {
	r := p.rt
	vm := &VM{plugin: p, worker: worker, streams: map[uint32]*Stream{}, calls: map[uint32]*pendingCall{}}
	base, cancel := context.WithCancel(context.WithValue(experimental.WithMemoryAllocator(context.Background(), linearMemory()), vmKey{}, vm))
	vm.ctx, vm.cancel = base, cancel
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	mod, err := r.rt.InstantiateModule(vm.ctx, p.mod.compiled, cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("host: instantiate %s worker %d: %w", p.cfg.Name, worker, err)
	}
	vm.mod, vm.mem = mod, mod.Memory()
	for i, n := range callbackNames {
		vm.fns[i] = mod.ExportedFunction(n)
	}
	vm.alloc = mod.ExportedFunction(p.mod.Allocator)
	r.trackVM(vm, true)

	// Envoy's start-up: _initialize then main(0, 0) if exported, else _start.
	vm.startup = true
	vm.mu.Lock()
	err = vm.startModule()
	vm.startup = false
	if err == nil {
		err = vm.configure()
	}
	vm.mu.Unlock()
	if err != nil {
		vm.discard(err)
		return nil, fmt.Errorf("host: start %s worker %d: %w", p.cfg.Name, worker, err)
	}
	return vm, nil
}

func (vm *VM) startModule() error {
	if f := vm.mod.ExportedFunction("_initialize"); f != nil {
		if _, err := vm.callFn(f); err != nil {
			return fmt.Errorf("_initialize: %w", err)
		}
		if m := vm.mod.ExportedFunction("main"); m != nil {
			if _, err := vm.callFn(m, 0, 0); err != nil {
				return fmt.Errorf("main: %w", err)
			}
		}
		return nil
	}
	if f := vm.mod.ExportedFunction("_start"); f != nil {
		if _, err := vm.callFn(f); err != nil {
			return fmt.Errorf("_start: %w", err)
		}
	}
	return nil
}

// configure creates the root context and runs on_vm_start and on_configure.
func (vm *VM) configure() error {
	vm.nextID++
	vm.rootID = vm.nextID
	vm.current, vm.effective = vm.rootID, 0
	if f := vm.fns[cbContextCreate]; f != nil {
		if _, err := vm.callFn(f, uint64(vm.rootID), 0); err != nil {
			return fmt.Errorf("proxy_on_context_create: %w", err)
		}
	}
	if f := vm.fns[cbVMStart]; f != nil {
		vm.inVMStart = true
		ok, err := vm.callFn(f, uint64(vm.rootID), uint64(len(vm.plugin.cfg.VMConfig)))
		vm.inVMStart = false
		if err != nil {
			return fmt.Errorf("proxy_on_vm_start: %w", err)
		}
		if uint32(ok) == 0 {
			return errors.New("Wasm VM failed to start: proxy_on_vm_start returned false")
		}
	}
	if f := vm.fns[cbConfigure]; f != nil {
		vm.inConfigure = true
		ok, err := vm.callFn(f, uint64(vm.rootID), uint64(len(vm.plugin.cfg.Configuration)))
		vm.inConfigure = false
		if err != nil {
			return fmt.Errorf("proxy_on_configure: %w", err)
		}
		if uint32(ok) == 0 {
			return errors.New("Wasm VM failed to configure plugin: proxy_on_configure returned false")
		}
	}
	return nil
}

// Worker is the worker index of the VM.
func (vm *VM) Worker() int { return vm.worker }

// RootContextID is the id of this VM's root context (the parent of its
// stream contexts).
func (vm *VM) RootContextID() uint32 { return vm.rootID }

// Failed reports whether the VM trapped or was discarded.
func (vm *VM) Failed() bool { return vm.failed.Load() }

// Err is why the VM failed.
func (vm *VM) Err() error {
	vm.postMu.Lock()
	defer vm.postMu.Unlock()
	return vm.failErr
}

// MemoryPages is the VM's current linear memory size in 64 KiB pages.
func (vm *VM) MemoryPages() uint32 {
	if vm.mem == nil {
		return 0
	}
	return vm.mem.Size() / 65536
}

// callFn runs one guest function under the callback deadline. The caller
// holds vm.mu.
func (vm *VM) callFn(f api.Function, args ...uint64) (uint64, error) {
	if vm.failed.Load() {
		return 0, ErrVMFailed
	}
	n := copy(vm.stack[:], args)
	if d := vm.plugin.rt.cfg.CallbackDeadline; d > 0 {
		vm.deadline.Store(time.Now().Add(d).UnixNano())
		defer vm.deadline.Store(0)
	}
	err := f.CallWithStack(vm.ctx, vm.stack[:max(n, 1)])
	if err != nil {
		if vm.ctx.Err() != nil {
			err = fmt.Errorf("callback exceeded the %s deadline: %w", vm.plugin.rt.cfg.CallbackDeadline, err)
		}
		vm.discard(err)
		return 0, err
	}
	return vm.stack[0], nil
}

// discard marks the VM failed (a trap leaves the guest runtime undefined, so
// Envoy never runs it again) and counts it.
func (vm *VM) discard(err error) {
	if vm.failed.Swap(true) {
		return
	}
	vm.postMu.Lock()
	vm.failErr = err
	vm.postMu.Unlock()
	p := vm.plugin
	p.rt.stats.inc(p.statName("vm_failed"))
	p.rt.log.Error("wasm VM failed", "plugin", p.cfg.Name, "worker", vm.worker, "error", err)
	if vm.tickStop != nil {
		vm.tickStop()
	}
	for _, c := range vm.calls {
		if c.stop != nil {
			c.stop()
		}
	}
	vm.cancel()
	p.rt.trackVM(vm, false)
	if vm.mod != nil {
		_ = vm.mod.Close(context.Background())
	}
}

// run executes f with the VM to itself, then runs work other goroutines
// posted meanwhile.
func (vm *VM) run(f func()) {
	vm.mu.Lock()
	f()
	vm.unlockAndDrain()
}

// post queues f to run on the VM as soon as no callback is in progress.
func (vm *VM) post(f func()) {
	vm.postMu.Lock()
	vm.posted = append(vm.posted, f)
	vm.postMu.Unlock()
	if vm.mu.TryLock() {
		vm.unlockAndDrain()
	}
}

func (vm *VM) unlockAndDrain() {
	for {
		for {
			vm.postMu.Lock()
			if len(vm.posted) == 0 {
				vm.postMu.Unlock()
				break
			}
			f := vm.posted[0]
			vm.posted = vm.posted[1:]
			vm.postMu.Unlock()
			f()
		}
		vm.mu.Unlock()
		vm.postMu.Lock()
		more := len(vm.posted) > 0
		vm.postMu.Unlock()
		if !more || !vm.mu.TryLock() {
			return
		}
	}
}

// enter prepares a top-level callback on context id.
func (vm *VM) enter(id uint32) {
	vm.current, vm.effective = id, 0
}

// ctxFor is the context hostcalls act on: the effective context if set and
// alive, else the current one (proxy-wasm-cpp-host contextOrEffectiveContext).
func (vm *VM) ctxID() uint32 {
	if vm.effective != 0 {
		if vm.effective == vm.rootID {
			return vm.effective
		}
		if _, ok := vm.streams[vm.effective]; ok {
			return vm.effective
		}
	}
	return vm.current
}

func (vm *VM) stream() *Stream { return vm.streams[vm.ctxID()] }

// Tick runs proxy_on_tick now (tests use it; timers use the clock).
func (vm *VM) Tick() {
	vm.run(vm.tickNow)
}

func (vm *VM) tickNow() {
	if vm.failed.Load() || vm.fns[cbTick] == nil {
		return
	}
	vm.enter(vm.rootID)
	_, _ = vm.callFn(vm.fns[cbTick], uint64(vm.rootID))
}

func (vm *VM) setTickPeriod(d time.Duration) {
	if vm.tickStop != nil {
		vm.tickStop()
		vm.tickStop = nil
	}
	vm.tickPeriod = d
	if d > 0 {
		vm.scheduleTick()
	}
}

func (vm *VM) scheduleTick() {
	period := vm.tickPeriod
	clock := vm.plugin.rt.cfg.Clock
	var stop func() bool
	stop = clock.AfterFunc(period, func() {
		vm.post(func() {
			if vm.tickPeriod != period || vm.failed.Load() {
				return
			}
			vm.tickNow()
			if vm.tickPeriod == period && !vm.failed.Load() {
				vm.scheduleTick()
			}
		})
	})
	vm.tickStop = stop
}

// deliverCallout runs proxy_on_http_call_response for token.
func (vm *VM) deliverCallout(token uint32, resp *CalloutResponse) {
	c, ok := vm.calls[token]
	if !ok || vm.failed.Load() {
		return
	}
	delete(vm.calls, token)
	if c.stop != nil {
		c.stop()
	}
	f := vm.fns[cbHTTPCallResponse]
	if f == nil {
		return
	}
	vm.enter(vm.rootID)
	vm.callResp = resp
	var nh, nb, nt int
	if resp != nil {
		nh, nb, nt = len(resp.Headers), len(resp.Body), len(resp.Trailers)
		if nh == 0 {
			// A reply always carries :status; num_headers 0 means failure.
			resp.Headers = Headers{{":status", "200"}}
			nh = 1
		}
	}
	_, _ = vm.callFn(f, uint64(vm.rootID), uint64(token), uint64(nh), uint64(nb), uint64(nt))
	vm.callResp = nil
}

// PendingCallouts is the number of callouts awaiting a reply.
func (vm *VM) PendingCallouts() int {
	n := 0
	vm.run(func() { n = len(vm.calls) })
	return n
}

func (vm *VM) shutdown() {
	vm.run(func() {
		if vm.failed.Load() {
			return
		}
		vm.enter(vm.rootID)
		if f := vm.fns[cbDone]; f != nil {
			if r, err := vm.callFn(f, uint64(vm.rootID)); err == nil && uint32(r) == 0 {
				vm.pendingDone = true
			}
		}
		if f := vm.fns[cbDelete]; f != nil && !vm.failed.Load() {
			_, _ = vm.callFn(f, uint64(vm.rootID))
		}
		if vm.tickStop != nil {
			vm.tickStop()
		}
		vm.plugin.rt.trackVM(vm, false)
		vm.failed.Store(true)
		vm.cancel()
		_ = vm.mod.Close(context.Background())
	})
}
