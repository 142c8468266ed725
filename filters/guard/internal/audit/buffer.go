package audit

import (
	"strings"
	"time"
)

// Why records were dropped (a Gap's Causes).
const (
	// CauseFull: the buffer was full (the distributor unreachable or slow
	// for longer than the buffer holds).
	CauseFull = 1 << iota
	// CauseRejected: the distributor refused the record for good (400,
	// 413, 422 for a batch of one).
	CauseRejected
)

// Gap accounts for dropped records: how many, the time range of their
// decisions and why.
type Gap struct {
	Dropped     uint64
	First, Last time.Time
	Causes      int
}

// add accounts for one dropped record decided at t.
func (g *Gap) add(t time.Time, cause int) {
	if g.Dropped == 0 || t.Before(g.First) {
		g.First = t
	}
	if g.Dropped == 0 || t.After(g.Last) {
		g.Last = t
	}
	g.Dropped++
	g.Causes |= cause
}

// merge adds o to g.
func (g *Gap) merge(o Gap) {
	if o.Dropped == 0 {
		return
	}
	if g.Dropped == 0 {
		*g = o
		return
	}
	if o.First.Before(g.First) {
		g.First = o.First
	}
	if o.Last.After(g.Last) {
		g.Last = o.Last
	}
	g.Dropped += o.Dropped
	g.Causes |= o.Causes
}

// Reason says why the records were dropped, for the gap record.
func (g Gap) Reason() string {
	var why []string
	if g.Causes&CauseFull != 0 {
		why = append(why, "audit buffer full: oldest records dropped")
	}
	if g.Causes&CauseRejected != 0 {
		why = append(why, "records refused by the distributor")
	}
	return strings.Join(why, "; ")
}

// entry is one encoded record and the time of its decision.
type entry struct {
	b []byte
	t time.Time
}

// Buffer holds encoded records for upload, bounded by MaxBytes (the sum
// of the encoded records) and MaxRecords. When a record does not fit, the
// oldest records not in flight are dropped, and the next batch starts with
// a gap record accounting for them. A batch stays in the buffer, its
// records counted, until Done; a failed upload sends the very same bytes
// again (the records' decision ids make a retry idempotent at the
// distributor). Not for concurrent use.
type Buffer struct {
	maxBytes, maxRecords int
	q                    []entry // oldest first; q[:inflight] is the batch in flight
	bytes                int
	free                 [][]byte

	gap      Gap    // dropped and not yet in a batch
	body     []byte // the batch in flight (nil: none)
	scratch  []byte // body's storage between batches
	inflight int    // its records
	sentGap  Gap    // the gap its gap record accounts for
	split    int    // after a refusal, batches of at most this many records (0: no limit)
	gapAlone bool   // after a refused batch of a gap and one record, the gap goes alone
}

// NewBuffer returns a buffer of at most maxBytes of encoded records and
// at most maxRecords records.
func NewBuffer(maxBytes, maxRecords int) *Buffer {
	return &Buffer{maxBytes: maxBytes, maxRecords: maxRecords}
}

// Len returns the number of buffered records (those in flight too).
func (q *Buffer) Len() int { return len(q.q) }

// Bytes returns the encoded size of the buffered records.
func (q *Buffer) Bytes() int { return q.bytes }

// Pending returns the gap not yet in a batch.
func (q *Buffer) Pending() Gap { return q.gap }

// InFlight reports whether a batch awaits Done, Retry or Refused.
func (q *Buffer) InFlight() bool { return q.body != nil }

// Add encodes r into the buffer, dropping the oldest records not in flight
// while it does not fit; it returns how many records were dropped (r
// itself when only the batch in flight is older, or r alone exceeds
// MaxBytes).
func (q *Buffer) Add(r *Record) (dropped int) {
	return q.add(AppendJSON(q.alloc(), r), r.Time)
}

// AddEncoded is Add for a record already encoded by AppendJSON (enc is
// copied), decided at t.
func (q *Buffer) AddEncoded(enc []byte, t time.Time) (dropped int) {
	return q.add(append(q.alloc(), enc...), t)
}

// alloc returns an empty byte slice for an encoded record, reusing the
// storage of records gone.
func (q *Buffer) alloc() []byte {
	if n := len(q.free); n > 0 {
		b := q.free[n-1][:0]
		q.free = q.free[:n-1]
		return b
	}
	return nil
}

func (q *Buffer) add(b []byte, t time.Time) (dropped int) {
	for len(q.q) > q.inflight && (q.bytes+len(b) > q.maxBytes || len(q.q) >= q.maxRecords) {
		q.drop(q.inflight, CauseFull)
		dropped++
	}
	if q.bytes+len(b) > q.maxBytes || len(q.q) >= q.maxRecords {
		q.gap.add(t, CauseFull)
		q.free = append(q.free, b)
		return dropped + 1
	}
	q.q = append(q.q, entry{b, t})
	q.bytes += len(b)
	return dropped
}

// drop removes q.q[i], the oldest record not in flight, into the pending
// gap: the batch in flight before it moves up by one (a batch's worth of
// copying, not the buffer's).
func (q *Buffer) drop(i, cause int) {
	e := q.q[i]
	q.gap.add(e.t, cause)
	q.bytes -= len(e.b)
	q.free = append(q.free, e.b)
	copy(q.q[1:i+1], q.q[:i])
	q.q[0] = entry{}
	q.q = q.q[1:]
}

// Next returns the batch to upload as a JSON array, or nil when there is
// nothing to send: the batch in flight when there is one (a retry), else
// a new one of up to n records and about maxBody bytes (at least one
// record), led by gap(g) when records were dropped since the last batch.
// The returned bytes are the buffer's until Done or Refused.
func (q *Buffer) Next(n, maxBody int, gap func(Gap) *Record) []byte {
	if q.body != nil {
		return q.body
	}
	if q.split > 0 && n > q.split {
		n = q.split
	}
	n = min(n, len(q.q))
	if q.gapAlone && q.gap.Dropped != 0 {
		n = 0
	}
	if n == 0 && q.gap.Dropped == 0 {
		return nil
	}
	body := append(q.scratch[:0], '[')
	if q.gap.Dropped != 0 {
		body = AppendJSON(body, gap(q.gap))
		q.sentGap, q.gap = q.gap, Gap{}
	}
	k := 0
	for ; k < n; k++ {
		if k > 0 && len(body)+len(q.q[k].b) > maxBody {
			break
		}
		if len(body) > 1 {
			body = append(body, ',')
		}
		body = append(body, q.q[k].b...)
	}
	q.body, q.inflight = append(body, ']'), k
	return q.body
}

// Sent returns the records and the gap of the batch in flight.
func (q *Buffer) Sent() (records int, gap Gap) { return q.inflight, q.sentGap }

// Done removes the batch in flight: it arrived.
func (q *Buffer) Done() {
	for _, e := range q.q[:q.inflight] {
		q.bytes -= len(e.b)
		q.free = append(q.free, e.b)
	}
	clear(q.q[:q.inflight])
	q.q = q.q[q.inflight:]
	q.reset()
	q.split, q.gapAlone = 0, false
}

// Refused handles a batch the distributor refused for good (it stored
// none of it): a batch of several records is split, its records sent
// again in batches of half its size; of a gap record and one record, the
// gap record is sent alone first; a single record is dropped into the
// gap. A batch of only a gap record is given up (the distributor cannot
// store gap records), reported by false.
func (q *Buffer) Refused() bool {
	n, g := q.inflight, q.sentGap
	q.reset()
	switch {
	case n > 1:
		q.split = n / 2
	case n == 1 && g.Dropped != 0:
		q.split, q.gapAlone = 1, true
	case n == 1:
		q.split = 1
		q.drop(0, CauseRejected)
	case g.Dropped != 0:
		q.gapAlone = false
		return false
	}
	q.gap.merge(g)
	return true
}

func (q *Buffer) reset() {
	if q.body != nil {
		q.scratch = q.body[:0]
	}
	q.body, q.inflight, q.sentGap = nil, 0, Gap{}
}
