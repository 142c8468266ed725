package host

import (
	"sync"
	"sync/atomic"
)

// sharedData is one vm_id's key-value store; every write gets a new CAS.
type sharedData struct {
	mu  sync.Mutex
	m   map[string]*sharedValue
	cas uint32
}

type sharedValue struct {
	data []byte
	cas  uint32
}

func (s *sharedData) get(key string) ([]byte, uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, 0, false
	}
	return v.data, v.cas, true
}

// set stores value; a non-zero cas that is not the key's current one fails
// with CAS_MISMATCH (proxy-wasm-cpp-host semantics: cas is only compared when
// the key exists).
func (s *sharedData) set(key string, value []byte, cas uint32) status {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if ok && cas != 0 && cas != v.cas {
		return statusCasMismatch
	}
	s.cas++
	if s.cas == 0 {
		s.cas = 1
	}
	s.m[key] = &sharedValue{data: append([]byte(nil), value...), cas: s.cas}
	return statusOK
}

// queueRegistry holds every shared queue of the proxy, keyed by vm_id and name.
type queueRegistry struct {
	mu     sync.Mutex
	byName map[[2]string]uint32
	byID   map[uint32]*sharedQueue
	next   uint32
}

type sharedQueue struct {
	vmID, name string
	owner      *VM // registering VM
	rootID     uint32
	mu         sync.Mutex
	items      [][]byte
}

// dequeue takes the oldest item (EMPTY when there is none).
func (q *sharedQueue) dequeue() ([]byte, status) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, statusEmpty
	}
	item := q.items[0]
	q.items = q.items[1:]
	return item, statusOK
}

// enqueue appends a copy of data and tells the registering root context
// (proxy_on_queue_ready) once the VM is free.
func (q *sharedQueue) enqueue(id uint32, data []byte) {
	q.mu.Lock()
	q.items = append(q.items, append([]byte(nil), data...))
	owner, root := q.owner, q.rootID
	q.mu.Unlock()
	if owner == nil {
		return
	}
	owner.post(func() {
		if owner.failed.Load() || owner.fns[cbQueueReady] == nil {
			return
		}
		owner.enter(root)
		_, _ = owner.callFn(owner.fns[cbQueueReady], uint64(root), uint64(id))
	})
}

func newQueueRegistry() *queueRegistry {
	return &queueRegistry{byName: map[[2]string]uint32{}, byID: map[uint32]*sharedQueue{}}
}

func (q *queueRegistry) register(vmID, name string, owner *VM, rootID uint32) uint32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	key := [2]string{vmID, name}
	if id, ok := q.byName[key]; ok {
		// Re-registration moves the queue to the registering context.
		sq := q.byID[id]
		sq.owner, sq.rootID = owner, rootID
		return id
	}
	q.next++
	id := q.next
	q.byName[key] = id
	q.byID[id] = &sharedQueue{vmID: vmID, name: name, owner: owner, rootID: rootID}
	return id
}

func (q *queueRegistry) resolve(vmID, name string) (uint32, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	id, ok := q.byName[[2]string{vmID, name}]
	return id, ok
}

func (q *queueRegistry) get(id uint32) *sharedQueue {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byID[id]
}

// MetricType is a Proxy-Wasm metric type.
type MetricType uint32

// Metric types.
const (
	MetricCounter MetricType = iota
	MetricGauge
	MetricHistogram
)

// Stats is the proxy-wide stats store. Module metrics are named with
// Envoy's "wasmcustom." prefix; host counters (VM failures, ...) are named
// "wasm.<plugin>.<what>".
type Stats struct {
	mu     sync.RWMutex
	byName map[string]uint32
	list   []*metric
}

type metric struct {
	name  string
	typ   MetricType
	value atomic.Int64
	mu    sync.Mutex
	hist  []uint64
}

// increment is proxy_increment_metric: counters only go up; histograms
// cannot be incremented.
func (m *metric) increment(delta int64) status {
	switch m.typ {
	case MetricCounter:
		if delta < 0 {
			return statusBadArgument
		}
		m.value.Add(delta)
	case MetricGauge:
		m.value.Add(delta)
	default:
		return statusBadArgument
	}
	return statusOK
}

// record is proxy_record_metric: a counter adds, a gauge is set, a histogram
// keeps the sample.
func (m *metric) record(v uint64) {
	switch m.typ {
	case MetricCounter:
		m.value.Add(int64(v))
	case MetricGauge:
		m.value.Store(int64(v))
	case MetricHistogram:
		m.mu.Lock()
		m.hist = append(m.hist, v)
		m.mu.Unlock()
	}
}

// get is proxy_get_metric (a histogram has no single value).
func (m *metric) get() (int64, status) {
	if m.typ == MetricHistogram {
		return 0, statusBadArgument
	}
	return m.value.Load(), statusOK
}

func newStats() *Stats { return &Stats{byName: map[string]uint32{}} }

func (s *Stats) define(typ MetricType, name string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.byName[name]; ok && s.list[id-1].typ == typ {
		return id
	}
	s.list = append(s.list, &metric{name: name, typ: typ})
	id := uint32(len(s.list))
	s.byName[name] = id
	return id
}

func (s *Stats) byID(id uint32) *metric {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if id == 0 || int(id) > len(s.list) {
		return nil
	}
	return s.list[id-1]
}

// Counter returns a counter's or gauge's value by its full name
// (e.g. "wasmcustom.hello_requests_total").
func (s *Stats) Counter(name string) (int64, bool) {
	s.mu.RLock()
	id, ok := s.byName[name]
	s.mu.RUnlock()
	if !ok {
		return 0, false
	}
	return s.byID(id).value.Load(), true
}

// Histogram returns the samples recorded for a histogram.
func (s *Stats) Histogram(name string) ([]uint64, bool) {
	s.mu.RLock()
	id, ok := s.byName[name]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	m := s.byID(id)
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint64(nil), m.hist...), true
}

// Snapshot returns every counter and gauge by name.
func (s *Stats) Snapshot() map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]int64, len(s.list))
	for _, m := range s.list {
		if m.typ != MetricHistogram {
			out[m.name] = m.value.Load()
		}
	}
	return out
}

func (s *Stats) inc(name string) {
	s.byID(s.define(MetricCounter, name)).value.Add(1)
}
