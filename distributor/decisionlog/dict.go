package decisionlog

import (
	"container/heap"
	"strings"
)

// dict interns one column's values: records hold a uint32 id, so a
// column of a million records costs 4 MB plus each distinct value once.
type dict struct {
	ids    map[string]uint32
	vals   []string
	counts []uint64
}

func newDict() *dict { return &dict{ids: map[string]uint32{}} }

// add interns v and counts one more record holding it.
func (d *dict) add(v string) uint32 {
	id, ok := d.ids[v]
	if !ok {
		id = uint32(len(d.vals))
		d.ids[v] = id
		d.vals = append(d.vals, v)
		d.counts = append(d.counts, 0)
	}
	d.counts[id]++
	return id
}

// bitset is a set of dict ids.
type bitset []uint64

func (b bitset) has(id uint32) bool {
	w := id >> 6
	return int(w) < len(b) && b[w]&(1<<(id&63)) != 0
}

func (b bitset) set(id uint32) { b[id>>6] |= 1 << (id & 63) }

// match is the set of ids whose value equals pattern, or starts with it
// when it ends in '*'.
func (d *dict) match(pattern string) bitset {
	b := make(bitset, (len(d.vals)+63)/64)
	if pre, ok := strings.CutSuffix(pattern, "*"); ok {
		for id, v := range d.vals {
			if strings.HasPrefix(v, pre) {
				b.set(uint32(id))
			}
		}
		return b
	}
	if id, ok := d.ids[pattern]; ok {
		b.set(id)
	}
	return b
}

// top returns the limit most frequent values, most frequent first (ties
// by value), in O(n log limit).
func (d *dict) top(limit int) []ValueCount {
	h := &minCounts{}
	for id, c := range d.counts {
		if c == 0 || d.vals[id] == "" {
			continue
		}
		vc := ValueCount{Value: d.vals[id], Count: c}
		if h.Len() < limit {
			heap.Push(h, vc)
		} else if h.less(h.items[0], vc) {
			h.items[0] = vc
			heap.Fix(h, 0)
		}
	}
	out := make([]ValueCount, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(ValueCount)
	}
	return out
}

// minCounts is a min-heap of ValueCounts: the least frequent on top.
type minCounts struct{ items []ValueCount }

// less orders by count, then by reverse value so that equal counts list
// alphabetically once the heap is emptied back to front.
func (h *minCounts) less(a, b ValueCount) bool {
	if a.Count != b.Count {
		return a.Count < b.Count
	}
	return a.Value > b.Value
}

func (h *minCounts) Len() int           { return len(h.items) }
func (h *minCounts) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *minCounts) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *minCounts) Push(x any)         { h.items = append(h.items, x.(ValueCount)) }
func (h *minCounts) Pop() any {
	n := len(h.items) - 1
	x := h.items[n]
	h.items = h.items[:n]
	return x
}
