package host

// Hostcalls on proxy-wide state: shared data and shared queues (per vm_id)
// and metrics (the stats store).

var sharedDataCalls = []hostcall{
	{"proxy_get_shared_data", p32("key_data", "key_size", "return_value_data", "return_value_size", "return_cas"), hGetSharedData},
	{"proxy_set_shared_data", p32("key_data", "key_size", "value_data", "value_size", "cas"), hSetSharedData},
}

var queueCalls = []hostcall{
	{"proxy_register_shared_queue", p32("queue_name_data", "queue_name_size", "return_queue_id"), hRegisterQueue},
	{"proxy_resolve_shared_queue", p32("vm_id_data", "vm_id_size", "queue_name_data", "queue_name_size", "return_queue_id"), hResolveQueue},
	{"proxy_dequeue_shared_queue", p32("queue_id", "return_payload_data", "return_payload_size"), hDequeue},
	{"proxy_enqueue_shared_queue", p32("queue_id", "payload_data", "payload_size"), hEnqueue},
}

var metricCalls = []hostcall{
	{"proxy_define_metric", p32("metric_type", "metric_name_data", "metric_name_size", "return_metric_id"), hDefineMetric},
	{"proxy_increment_metric", []param{{"metric_id", i32}, {"offset", i64}}, hIncrementMetric},
	{"proxy_record_metric", []param{{"metric_id", i32}, {"value", i64}}, hRecordMetric},
	{"proxy_get_metric", p32("metric_id", "return_value"), hGetMetric},
}

// sharedData is the store of this VM's vm_id.
func (vm *VM) sharedData() *sharedData { return vm.plugin.rt.sharedDataFor(vm.plugin.cfg.VMID) }

func hGetSharedData(vm *VM, p []uint64) status {
	keyData, keySize, retData, retSize, retCas := p[0], p[1], p[2], p[3], p[4]
	key, ok := vm.read(keyData, keySize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	v, cas, found := vm.sharedData().get(string(key))
	if !found {
		return statusNotFound
	}
	if st := vm.copyOut(v, retData, retSize); st != statusOK {
		return st
	}
	if !vm.putU32(retCas, cas) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hSetSharedData(vm *VM, p []uint64) status {
	keyData, keySize, valData, valSize, cas := p[0], p[1], p[2], p[3], uint32(p[4])
	key, ok1 := vm.read(keyData, keySize)
	val, ok2 := vm.read(valData, valSize)
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	return vm.sharedData().set(string(key), val, cas)
}

func hRegisterQueue(vm *VM, p []uint64) status {
	nameData, nameSize, retID := p[0], p[1], p[2]
	name, ok := vm.read(nameData, nameSize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := vm.plugin.rt.queues.register(vm.plugin.cfg.VMID, string(name), vm, vm.rootID)
	if !vm.putU32(retID, id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hResolveQueue(vm *VM, p []uint64) status {
	vmIDData, vmIDSize, nameData, nameSize, retID := p[0], p[1], p[2], p[3], p[4]
	vmID, ok1 := vm.read(vmIDData, vmIDSize)
	name, ok2 := vm.read(nameData, nameSize)
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	id, found := vm.plugin.rt.queues.resolve(string(vmID), string(name))
	if !found {
		return statusNotFound
	}
	if !vm.putU32(retID, id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hDequeue(vm *VM, p []uint64) status {
	id, retData, retSize := uint32(p[0]), p[1], p[2]
	q := vm.plugin.rt.queues.get(id)
	if q == nil {
		return statusNotFound
	}
	item, st := q.dequeue()
	if st != statusOK {
		return st
	}
	return vm.copyOut(item, retData, retSize)
}

func hEnqueue(vm *VM, p []uint64) status {
	id, data, size := uint32(p[0]), p[1], p[2]
	q := vm.plugin.rt.queues.get(id)
	if q == nil {
		return statusNotFound
	}
	payload, ok := vm.read(data, size)
	if !ok {
		return statusInvalidMemoryAccess
	}
	q.enqueue(id, payload)
	return statusOK
}

func hDefineMetric(vm *VM, p []uint64) status {
	t, nameData, nameSize, retID := MetricType(uint32(p[0])), p[1], p[2], p[3]
	if t > MetricHistogram {
		return statusBadArgument
	}
	name, ok := vm.read(nameData, nameSize)
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := vm.plugin.rt.stats.define(t, "wasmcustom."+string(name))
	if !vm.putU32(retID, id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hIncrementMetric(vm *VM, p []uint64) status {
	m := vm.plugin.rt.stats.byID(uint32(p[0]))
	if m == nil {
		return statusNotFound
	}
	return m.increment(int64(p[1]))
}

func hRecordMetric(vm *VM, p []uint64) status {
	m := vm.plugin.rt.stats.byID(uint32(p[0]))
	if m == nil {
		return statusNotFound
	}
	m.record(p[1])
	return statusOK
}

func hGetMetric(vm *VM, p []uint64) status {
	id, retValue := uint32(p[0]), p[1]
	m := vm.plugin.rt.stats.byID(id)
	if m == nil {
		return statusNotFound
	}
	v, st := m.get()
	if st != statusOK {
		return st
	}
	if !vm.writeU64(uint32(retValue), uint64(v)) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}
