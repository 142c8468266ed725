package host

import "time"

// Hostcalls whose state is the VM's own: logging, status, time and ticks,
// the effective context, proxy_done and foreign functions.

var logCalls = []hostcall{
	{"proxy_log", p32("log_level", "message_data", "message_size"), hLog},
	{"proxy_get_log_level", p32("return_log_level"), hGetLogLevel},
	{"proxy_get_status", p32("return_status_code", "return_status_message_data", "return_status_message_size"), hGetStatus},
}

var timerCalls = []hostcall{
	{"proxy_set_tick_period_milliseconds", p32("tick_period_milliseconds"), hSetTickPeriod},
	{"proxy_get_current_time_nanoseconds", p32("return_time"), hGetCurrentTime},
}

var contextCalls = []hostcall{
	{"proxy_set_effective_context", p32("context_id"), hSetEffectiveContext},
	{"proxy_done", nil, hDone},
}

var foreignCalls = []hostcall{
	{"proxy_call_foreign_function", p32("function_name_data", "function_name_size", "arguments_data", "arguments_size", "return_results_data", "return_results_size"), hCallForeign},
}

func hLog(vm *VM, p []uint64) status {
	level, msgData, msgSize := uint32(p[0]), p[1], p[2]
	msg, ok := vm.read(msgData, msgSize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	return vm.log(level, msg)
}

// log emits a module log line at a Proxy-Wasm level.
func (vm *VM) log(level uint32, msg []byte) status {
	if level > uint32(LogCritical) {
		return statusBadArgument
	}
	vm.plugin.rt.emitLog(LogEntry{Plugin: vm.plugin.cfg.Name, Worker: vm.worker, Level: LogLevel(level), Message: string(msg)})
	return statusOK
}

func hGetLogLevel(vm *VM, p []uint64) status {
	if !vm.putU32(p[0], uint32(vm.plugin.rt.cfg.LogLevel)) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hGetStatus(vm *VM, p []uint64) status {
	code, msgData, msgSize := p[0], p[1], p[2]
	// The gRPC status of the last gRPC callback; without gRPC support it is
	// always 0 and "".
	if !vm.putU32(code, 0) {
		return statusInvalidMemoryAccess
	}
	return vm.copyOut(nil, msgData, msgSize)
}

func hSetTickPeriod(vm *VM, p []uint64) status {
	vm.setTickPeriod(time.Duration(uint32(p[0])) * time.Millisecond)
	return statusOK
}

func hGetCurrentTime(vm *VM, p []uint64) status {
	if !vm.writeU64(uint32(p[0]), uint64(vm.plugin.rt.cfg.Clock.Now().UnixNano())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hSetEffectiveContext(vm *VM, p []uint64) status { return vm.setEffectiveContext(uint32(p[0])) }

// setEffectiveContext makes later hostcalls of this callback act on context
// id (the root or a live stream; anything else is BAD_ARGUMENT).
func (vm *VM) setEffectiveContext(id uint32) status {
	if id != vm.rootID {
		if _, ok := vm.streams[id]; !ok {
			return statusBadArgument
		}
	}
	vm.effective = id
	return statusOK
}

func hDone(vm *VM, _ []uint64) status { return vm.done() }

// done acknowledges a root context's deferred on_done (NOT_FOUND when none
// is pending).
func (vm *VM) done() status {
	if !vm.pendingDone {
		return statusNotFound
	}
	vm.pendingDone = false
	return statusOK
}

func hCallForeign(vm *VM, p []uint64) status {
	nameData, nameSize, argsData, argsSize, resData, resSize := p[0], p[1], p[2], p[3], p[4], p[5]
	name, ok1 := vm.read(nameData, nameSize)
	args, ok2 := vm.read(argsData, argsSize)
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	out, st := callForeign(string(name), args)
	if st != statusOK {
		return st
	}
	return vm.copyOut(out, resData, resSize)
}
