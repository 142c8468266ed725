package identity

import (
	"hash/maphash"
	"strings"
	"time"
)

// MaxCacheBytes bounds the token bytes a Cache keeps, whatever its entry limit.
const MaxCacheBytes = 4 << 20

// Cache is a bounded LRU of verified tokens keyed by a seeded 64-bit hash of
// the token. A hit also compares the whole token, so a hash collision can
// only cost a signature check, never return another caller's identity; that
// is why a cheap hash is enough where SHA-256 would dominate a cache hit.
// Entries carry the token expiry; callers re-check it on every hit. It is not
// safe for concurrent use: each Proxy-Wasm VM is single-threaded.
type Cache[T any] struct {
	max          int
	bytes        int
	seed         maphash.Seed
	m            map[uint64]*cacheEntry[T]
	head         cacheEntry[T] // sentinel of a circular list, most recent first
	Hits, Misses uint64
}

type cacheEntry[T any] struct {
	key        uint64
	token      string
	val        T
	exp        time.Time
	prev, next *cacheEntry[T]
}

// NewCache returns a cache holding at most max entries (0 disables caching).
func NewCache[T any](max int) *Cache[T] {
	c := &Cache[T]{max: max, seed: maphash.MakeSeed(), m: make(map[uint64]*cacheEntry[T])}
	c.head.prev, c.head.next = &c.head, &c.head
	return c
}

// Len returns the number of cached entries.
func (c *Cache[T]) Len() int { return len(c.m) }

// Bytes returns the token bytes held.
func (c *Cache[T]) Bytes() int { return c.bytes }

func (c *Cache[T]) key(token string) uint64 { return maphash.String(c.seed, token) }

// Get returns the value cached for token and marks it most recently used.
func (c *Cache[T]) Get(token string) (T, bool) {
	e, ok := c.m[c.key(token)]
	if !ok || e.token != token {
		c.Misses++
		var zero T
		return zero, false
	}
	c.Hits++
	c.unlink(e)
	c.pushFront(e)
	return e.val, true
}

// Put stores val for token until exp, evicting least recently used entries
// to stay within the entry and byte limits. Tokens larger than a quarter of
// MaxCacheBytes are not cached.
func (c *Cache[T]) Put(token string, val T, exp time.Time) {
	if c.max <= 0 || len(token) > MaxCacheBytes/4 {
		return
	}
	// Detach from the request's header buffer, which would otherwise stay
	// alive (and uncounted) as long as the entry.
	token = strings.Clone(token)
	k := c.key(token)
	if e, ok := c.m[k]; ok {
		// Same token refreshed, or a colliding one replacing it.
		c.bytes += len(token) - len(e.token)
		e.token, e.val, e.exp = token, val, exp
		c.unlink(e)
		c.pushFront(e)
		c.trim()
		return
	}
	e := &cacheEntry[T]{key: k, token: token, val: val, exp: exp}
	c.m[k] = e
	c.bytes += len(token)
	c.pushFront(e)
	c.trim()
}

// trim evicts from the LRU end until both limits hold (the newest entry,
// at the front, always stays).
func (c *Cache[T]) trim() {
	for (len(c.m) > c.max || c.bytes > MaxCacheBytes) && c.head.prev != c.head.next {
		c.drop(c.head.prev)
	}
}

// Remove drops token.
func (c *Cache[T]) Remove(token string) {
	if e, ok := c.m[c.key(token)]; ok && e.token == token {
		c.drop(e)
	}
}

// Clear drops every entry (after a key rotation).
func (c *Cache[T]) Clear() {
	clear(c.m)
	c.bytes = 0
	c.head.prev, c.head.next = &c.head, &c.head
}

// Sweep removes entries expired at now; the filter calls it on ticks.
func (c *Cache[T]) Sweep(now time.Time) int {
	n := 0
	for e := c.head.next; e != &c.head; {
		next := e.next
		if !now.Before(e.exp.Add(Leeway)) {
			c.drop(e)
			n++
		}
		e = next
	}
	return n
}

func (c *Cache[T]) drop(e *cacheEntry[T]) {
	c.unlink(e)
	delete(c.m, e.key)
	c.bytes -= len(e.token)
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
