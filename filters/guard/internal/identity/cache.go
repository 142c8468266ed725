package identity

import "time"

// Cache is a bounded LRU of verified tokens keyed by the token's SHA-256.
// Entries also carry the token expiry; callers re-check it on every hit.
// It is not safe for concurrent use: each Proxy-Wasm VM is single-threaded.
type Cache[T any] struct {
	max          int
	m            map[[32]byte]*cacheEntry[T]
	head         cacheEntry[T] // sentinel of a circular list, most recent first
	Hits, Misses uint64
}

type cacheEntry[T any] struct {
	key        [32]byte
	val        T
	exp        time.Time
	prev, next *cacheEntry[T]
}

// NewCache returns a cache holding at most max entries (0 disables caching).
func NewCache[T any](max int) *Cache[T] {
	c := &Cache[T]{max: max, m: make(map[[32]byte]*cacheEntry[T])}
	c.head.prev, c.head.next = &c.head, &c.head
	return c
}

// Len returns the number of cached entries.
func (c *Cache[T]) Len() int { return len(c.m) }

// Get returns the value for key and marks it most recently used.
func (c *Cache[T]) Get(key [32]byte) (T, bool) {
	e, ok := c.m[key]
	if !ok {
		c.Misses++
		var zero T
		return zero, false
	}
	c.Hits++
	c.unlink(e)
	c.pushFront(e)
	return e.val, true
}

// Put stores val until exp, evicting the least recently used entry when full.
func (c *Cache[T]) Put(key [32]byte, val T, exp time.Time) {
	if c.max <= 0 {
		return
	}
	if e, ok := c.m[key]; ok {
		e.val, e.exp = val, exp
		c.unlink(e)
		c.pushFront(e)
		return
	}
	if len(c.m) >= c.max {
		// Prefer dropping an expired entry at the tail; otherwise the LRU one.
		last := c.head.prev
		c.unlink(last)
		delete(c.m, last.key)
	}
	e := &cacheEntry[T]{key: key, val: val, exp: exp}
	c.m[key] = e
	c.pushFront(e)
}

// Remove drops key.
func (c *Cache[T]) Remove(key [32]byte) {
	if e, ok := c.m[key]; ok {
		c.unlink(e)
		delete(c.m, key)
	}
}

// Clear drops every entry (after a key rotation).
func (c *Cache[T]) Clear() {
	clear(c.m)
	c.head.prev, c.head.next = &c.head, &c.head
}

// Sweep removes entries expired at now; the filter calls it on ticks.
func (c *Cache[T]) Sweep(now time.Time) int {
	n := 0
	for e := c.head.next; e != &c.head; {
		next := e.next
		if !now.Before(e.exp.Add(Leeway)) {
			c.unlink(e)
			delete(c.m, e.key)
			n++
		}
		e = next
	}
	return n
}

func (c *Cache[T]) unlink(e *cacheEntry[T]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache[T]) pushFront(e *cacheEntry[T]) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}
