// Package shared is the guard's view of Proxy-Wasm shared data
// (proxy_get_shared_data, proxy_set_shared_data): one key-value map per
// vm_id that every worker VM of a plugin in a proxy reads and writes, with a
// compare-and-swap version per key. The rate limiter, the poll lease, the
// bundle hand-over between workers and the verified-token cache all keep
// their state there through Store; the filter's adapter implements it over
// the host, Memory implements it natively.
package shared

import (
	"errors"
	"sync"
)

// ErrNotFound is returned by Store.Get for a missing key.
var ErrNotFound = errors.New("shared data: not found")

// ErrCASMismatch is returned by Store.Set when cas is stale.
var ErrCASMismatch = errors.New("shared data: cas mismatch")

// Store is shared data. Get returns the value and its cas; the value may be
// host memory valid only during the current callback, so copy what must
// outlive it. Set with cas 0 creates or overwrites; with another cas it
// fails with ErrCASMismatch unless the key's cas is still that one.
type Store interface {
	Get(key string) (value []byte, cas uint32, err error)
	Set(key string, value []byte, cas uint32) error
}

// MaxAttempts bounds compare-and-swap loops over a Store; contention beyond
// it is an error (callers fail closed).
const MaxAttempts = 16

// Memory is a Store in process memory with Envoy's semantics (every write
// bumps the key's cas; values are copied in and out), for running the
// guard's packages natively: several users of one Memory are several
// worker VMs of one proxy. Safe for concurrent use.
type Memory struct {
	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	v   []byte
	cas uint32
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{m: map[string]entry{}} }

// Get implements Store.
func (s *Memory) Get(key string) ([]byte, uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return nil, 0, ErrNotFound
	}
	return append([]byte(nil), e.v...), e.cas, nil
}

// Set implements Store.
func (s *Memory) Set(key string, value []byte, cas uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if cas != 0 && cas != e.cas {
		return ErrCASMismatch
	}
	s.m[key] = entry{v: append([]byte(nil), value...), cas: e.cas + 1}
	return nil
}

// Len returns the number of keys.
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
