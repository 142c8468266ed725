// Package pollers remembers, per bundle channel, which proxy last polled
// which revision and when: the distributor's answer to "which bundle does
// each proxy enforce". A poller is the authenticated identity of the
// caller plus the proxy id the guard sends (its Envoy node id), which is a
// claim, never an identity. The table is bounded in total and per
// identity, so one credential cannot push the other pollers out.
package pollers

import (
	"container/list"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Headers the guard sends with a bundle poll.
const (
	// HeaderProxy carries the guard's proxy id (Envoy's xds node id).
	HeaderProxy = "X-Meshguard-Proxy"
	// HeaderEnforcing carries the revision the guard enforces (0: none).
	HeaderEnforcing = "X-Meshguard-Enforcing"
)

// MaxProxyID bounds a proxy id in bytes; longer ones are not recorded.
const MaxProxyID = 256

// Poll is one answered bundle poll.
type Poll struct {
	Channel  string
	Identity string
	// Proxy is the proxy id header as sent ("" when absent or refused).
	Proxy string
	// Enforcing is the revision the guard says it enforces, nil when it
	// did not say.
	Enforcing *uint64
	// Served is the revision the answer carried (200) or confirmed (304).
	Served uint64
	Status int
	Time   time.Time
}

// Entry is what the table knows of one poller on one channel.
type Entry struct {
	Channel   string    `json:"channel"`
	Identity  string    `json:"identity"`
	Proxy     string    `json:"proxy,omitempty"`
	Enforcing *uint64   `json:"enforcing,omitempty"`
	Served    uint64    `json:"served"`
	Status    int       `json:"status"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Polls     uint64    `json:"polls"`
}

type key struct{ channel, identity, proxy string }

// Table is the bounded poller table. It is safe for concurrent use.
type Table struct {
	max, perIdentity int

	mu      sync.Mutex
	byKey   map[key]*list.Element // of *Entry
	lru     *list.List            // front: most recently seen
	perID   map[string]int
	evicted uint64
}

// New makes a table of at most max entries, at most perIdentity of them
// for any one identity (defaults 4096 and 256).
func New(max, perIdentity int) *Table {
	if max <= 0 {
		max = 4096
	}
	if perIdentity <= 0 {
		perIdentity = 256
	}
	return &Table{max: max, perIdentity: min(perIdentity, max), byKey: map[key]*list.Element{}, lru: list.New(), perID: map[string]int{}}
}

// ProxyID checks a proxy id header: printable ASCII without spaces, at
// most MaxProxyID bytes. Anything else is refused ("", false) rather than
// stored, since it ends up in an operator's page.
func ProxyID(h string) (string, bool) {
	if len(h) == 0 || len(h) > MaxProxyID {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] > '~' {
			return "", false
		}
	}
	return h, true
}

// Enforcing parses the enforced-revision header (decimal digits).
func Enforcing(h string) (*uint64, bool) {
	if h == "" || len(h) > 20 || h[0] < '0' || h[0] > '9' {
		return nil, false
	}
	n, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		return nil, false
	}
	return &n, true
}

// Record notes a poll, evicting the identity's (or else the table's)
// least recently seen entry when full.
func (t *Table) Record(p Poll) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key{p.Channel, p.Identity, p.Proxy}
	if p.Enforcing != nil {
		v := *p.Enforcing
		p.Enforcing = &v
	}
	if el, ok := t.byKey[k]; ok {
		e := el.Value.(*Entry)
		e.Served, e.Status, e.LastSeen, e.Enforcing = p.Served, p.Status, p.Time, p.Enforcing
		e.Polls++
		t.lru.MoveToFront(el)
		return
	}
	if t.perID[p.Identity] >= t.perIdentity {
		for el := t.lru.Back(); el != nil; el = el.Prev() {
			if el.Value.(*Entry).Identity == p.Identity {
				t.remove(el)
				break
			}
		}
	}
	if t.lru.Len() >= t.max {
		t.remove(t.lru.Back())
	}
	e := &Entry{Channel: p.Channel, Identity: p.Identity, Proxy: p.Proxy, Enforcing: p.Enforcing, Served: p.Served,
		Status: p.Status, FirstSeen: p.Time, LastSeen: p.Time, Polls: 1}
	t.byKey[k] = t.lru.PushFront(e)
	t.perID[p.Identity]++
}

func (t *Table) remove(el *list.Element) {
	e := t.lru.Remove(el).(*Entry)
	delete(t.byKey, key{e.Channel, e.Identity, e.Proxy})
	if t.perID[e.Identity]--; t.perID[e.Identity] <= 0 {
		delete(t.perID, e.Identity)
	}
	t.evicted++
}

// List returns the entries of a channel ("" for all), most recently seen
// first.
func (t *Table) List(channel string) []Entry {
	t.mu.Lock()
	out := make([]Entry, 0, min(t.lru.Len(), 1024))
	for el := t.lru.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*Entry); channel == "" || e.Channel == channel {
			c := *e
			if e.Enforcing != nil {
				v := *e.Enforcing
				c.Enforcing = &v
			}
			out = append(out, c)
		}
	}
	t.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out
}

// Stats are the table's size and how many entries it has evicted.
func (t *Table) Stats() (entries int, evicted uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len(), t.evicted
}
