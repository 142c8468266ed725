package audit

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/contract"
)

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// rec is record i, decided i ms after t0.
func rec(i int) *Record {
	return &Record{Time: t0.Add(time.Duration(i+1) * time.Millisecond), DecisionID: fmt.Sprintf("d-%d", i), Decision: contract.DecisionDeny}
}

func gapRec(g Gap) *Record {
	return &Record{Time: t0, DecisionID: "gap", Decision: contract.DecisionGap, Reason: g.Reason(), Dropped: g.Dropped, FirstTime: g.First, LastTime: g.Last}
}

func decodeBatch(t *testing.T, b []byte) []wire {
	t.Helper()
	var ws []wire
	require.NoError(t, json.Unmarshal(b, &ws), "%s", b)
	return ws
}

func ids(ws []wire) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.DecisionID)
	}
	return out
}

func TestBufferKeepsAFailedBatch(t *testing.T) {
	q := NewBuffer(1<<20, 100)
	for i := range 5 {
		q.Add(rec(i))
	}
	first := q.Next(3, 1<<20, gapRec)
	assert.Equal(t, []string{"d-0", "d-1", "d-2"}, ids(decodeBatch(t, first)))
	q.Add(rec(5))
	// A retry sends the very same bytes, the new record waits.
	assert.Equal(t, string(first), string(q.Next(3, 1<<20, gapRec)))
	assert.Equal(t, 6, q.Len())
	q.Done()
	assert.Equal(t, 3, q.Len())
	assert.Equal(t, []string{"d-3", "d-4", "d-5"}, ids(decodeBatch(t, q.Next(10, 1<<20, gapRec))))
	q.Done()
	assert.Nil(t, q.Next(10, 1<<20, gapRec))
	assert.Zero(t, q.Bytes())
}

// TestBufferDropsOldestIntoAGap: past MaxBytes the oldest records not in
// flight go, and the next batch starts with a gap record that accounts
// for exactly those.
func TestBufferDropsOldestIntoAGap(t *testing.T) {
	size := len(AppendJSON(nil, rec(0)))
	q := NewBuffer(4*size, 1000)
	for i := range 3 {
		q.Add(rec(i))
	}
	inflight := q.Next(2, 1<<20, gapRec) // d-0, d-1 pinned
	dropped := 0
	for i := 3; i < 8; i++ {
		dropped += q.Add(rec(i))
	}
	assert.Equal(t, 4, dropped, "d-2..d-5 dropped, oldest first")
	g := q.Pending()
	assert.Equal(t, uint64(4), g.Dropped)
	assert.Equal(t, rec(2).Time, g.First)
	assert.Equal(t, rec(5).Time, g.Last)
	assert.Equal(t, CauseFull, g.Causes)
	assert.Equal(t, []string{"d-0", "d-1"}, ids(decodeBatch(t, inflight)))
	q.Done()
	ws := decodeBatch(t, q.Next(10, 1<<20, gapRec))
	assert.Equal(t, []string{"gap", "d-6", "d-7"}, ids(ws))
	assert.Equal(t, uint64(4), ws[0].Dropped)
	assert.Equal(t, g.First, ws[0].FirstTime)
	assert.Equal(t, g.Last, ws[0].LastTime)
	n, sent := q.Sent()
	assert.Equal(t, 2, n)
	assert.Equal(t, uint64(4), sent.Dropped)
	assert.Zero(t, q.Pending().Dropped, "the gap is in flight now")
	q.Done()
	assert.Nil(t, q.Next(10, 1<<20, gapRec))
}

// TestBufferOnlyInFlight: when only the batch in flight is older, the new
// record itself is dropped (a batch in flight may still arrive).
func TestBufferOnlyInFlight(t *testing.T) {
	size := len(AppendJSON(nil, rec(0)))
	q := NewBuffer(2*size, 1000)
	q.Add(rec(0))
	q.Add(rec(1))
	q.Next(10, 1<<20, gapRec)
	assert.Equal(t, 1, q.Add(rec(2)))
	assert.Equal(t, uint64(1), q.Pending().Dropped)
	assert.Equal(t, 2, q.Len())
	// A record larger than the whole buffer never fits.
	q.Done()
	assert.Equal(t, 1, q.Add(&Record{Time: t0, Path: string(make([]byte, 3*size))}))
	assert.Equal(t, uint64(2), q.Pending().Dropped)
}

func TestBufferRecordBound(t *testing.T) {
	q := NewBuffer(1<<20, 3)
	d := 0
	for i := range 5 {
		d += q.Add(rec(i))
	}
	assert.Equal(t, 2, d)
	assert.Equal(t, 3, q.Len())
	assert.Equal(t, []string{"gap", "d-2", "d-3", "d-4"}, ids(decodeBatch(t, q.Next(10, 1<<20, gapRec))))
}

// TestBufferRefusedSplits: a refused batch is split down to the record
// the distributor refuses, which alone is dropped into a gap.
func TestBufferRefusedSplits(t *testing.T) {
	q := NewBuffer(1<<20, 100)
	for i := range 4 {
		q.Add(rec(i))
	}
	bad := "d-2"
	var stored []string
	for range 20 {
		b := q.Next(10, 1<<20, gapRec)
		if b == nil {
			break
		}
		ws := decodeBatch(t, b)
		refused := false
		for _, w := range ws {
			refused = refused || w.DecisionID == bad
		}
		if refused {
			require.True(t, q.Refused())
			continue
		}
		stored = append(stored, ids(ws)...)
		q.Done()
	}
	assert.Equal(t, []string{"d-0", "d-1", "gap", "d-3"}, stored, "d-2 alone dropped, accounted for in the next batch")
	assert.Contains(t, stored, "gap")
	assert.Len(t, stored, 4)
}

// TestBufferGapRefused: a distributor that refuses gap records (an old
// one) costs the gap record, never the records.
func TestBufferGapRefused(t *testing.T) {
	q := NewBuffer(1<<20, 2)
	for i := range 4 {
		q.Add(rec(i))
	}
	var stored []string
	gaveUp := 0
	for range 20 {
		b := q.Next(1, 1<<20, gapRec)
		if b == nil {
			break
		}
		ws := decodeBatch(t, b)
		if ws[0].Decision == contract.DecisionGap {
			if !q.Refused() {
				gaveUp++
			}
			continue
		}
		stored = append(stored, ids(ws)...)
		q.Done()
	}
	assert.Equal(t, []string{"d-2", "d-3"}, stored)
	assert.Equal(t, 1, gaveUp)
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		n        int
		lo, hi   time.Duration
		max      time.Duration
		jitter   float64
		expected time.Duration
	}{
		{n: 1, max: 30 * time.Second, jitter: 0, expected: 500 * time.Millisecond},
		{n: 1, max: 30 * time.Second, jitter: 0.999999, expected: 999999500 * time.Nanosecond},
		{n: 3, max: 30 * time.Second, jitter: 0, expected: 2 * time.Second},
		{n: 10, max: 30 * time.Second, jitter: 0, expected: 15 * time.Second},
		{n: 1000, max: 30 * time.Second, jitter: 0.5, expected: 22500 * time.Millisecond},
	} {
		assert.Equal(t, c.expected, Backoff(c.n, c.max, c.jitter), "%+v", c)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"99999999999999999999999", MaxRetryAfter, true},
		{"86400", MaxRetryAfter, true},
		{"Mon, 23 Nov 2026 09:00:07 GMT", 7 * time.Second, true},
		{"Mon, 23 Nov 2026 08:00:00 GMT", 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"", 0, false},
		{"soon", 0, false},
	} {
		d, ok := RetryAfter(c.in, now)
		assert.Equal(t, c.ok, ok, c.in)
		assert.Equal(t, c.want, d, c.in)
	}
}

func FuzzRetryAfter(f *testing.F) {
	f.Add("120")
	f.Add("Mon, 23 Nov 2026 09:00:07 GMT")
	f.Add("1e9")
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := RetryAfter(v, t0)
		if !ok {
			assert.Zero(t, d)
		}
		assert.True(t, d >= 0 && d <= MaxRetryAfter, "%q: %s", v, d)
	})
}

func TestAggregator(t *testing.T) {
	var a Aggregator
	n := 0
	id := func() string { n++; return fmt.Sprintf("a-%d", n) }
	var names []string
	for i := range 1000 {
		r := &Record{Time: t0.Add(time.Duration(i) * time.Millisecond), DecisionID: "own", Decision: contract.DecisionUnavailable,
			Reason: "policy unavailable: no verified policy bundle", Path: "/x", Proxy: "p"}
		if i%10 == 0 {
			r.Decision, r.Reason = contract.DecisionError, "internal error: boom"
		}
		a.Add(r, id)
		names = append(names, r.DecisionID)
	}
	require.Equal(t, 2, a.Len())
	assert.Equal(t, "a-1", names[0], "the reply names the aggregated record")
	assert.Equal(t, "a-2", names[1])
	var got []Record
	a.Flush(func(r *Record) { got = append(got, *r) })
	require.Len(t, got, 2)
	assert.Equal(t, contract.DecisionError, got[0].Decision)
	assert.Equal(t, uint64(100), got[0].Count)
	assert.Equal(t, uint64(900), got[1].Count)
	assert.Equal(t, t0.Add(time.Millisecond), got[1].FirstTime)
	assert.Equal(t, t0.Add(999*time.Millisecond), got[1].LastTime)
	assert.Empty(t, got[1].Path, "fields of one request are not kept")
	assert.Equal(t, "p", got[1].Proxy)
	assert.Zero(t, a.Len())

	// Distinct reasons are bounded.
	for i := range 3 * MaxAggregates {
		a.Add(&Record{Time: t0, Decision: contract.DecisionError, Reason: fmt.Sprint("reason ", i%(MaxAggregates+5))}, id)
	}
	assert.Equal(t, MaxAggregates+1, a.Len())
	var total uint64
	a.Flush(func(r *Record) { total += r.Count })
	assert.Equal(t, uint64(3*MaxAggregates), total)
}

// FuzzBufferAccounts drives the buffer with any sequence of adds and
// upload outcomes (stored, failed, refused) and checks the invariant the
// trail rests on: every record added is stored exactly once or counted in
// exactly one stored gap record, with its time inside that gap's range.
func FuzzBufferAccounts(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 0, 3, 1, 4}, uint16(2048))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 3, 3, 3, 2, 2}, uint16(600))
	f.Fuzz(func(t *testing.T, ops []byte, maxBytes uint16) {
		q := NewBuffer(int(maxBytes)+200, 8)
		bad := map[string]bool{}
		stored := map[string]int{}
		times := map[string]time.Time{}
		var gaps []Record
		added := 0
		// The distributor stores a batch unless it holds a record it
		// refuses (then it stores none of it, 400).
		deliver := func() {
			b := q.Next(4, 1<<20, gapRec)
			if b == nil {
				return
			}
			ws := decodeBatch(t, b)
			refuse := false
			for _, w := range ws {
				refuse = refuse || bad[w.DecisionID]
			}
			if refuse {
				q.Refused()
				return
			}
			for _, w := range ws {
				if w.Decision == contract.DecisionGap {
					gaps = append(gaps, w)
				} else {
					stored[w.DecisionID]++
				}
			}
			q.Done()
		}
		for i, op := range ops {
			switch op % 5 {
			case 0, 1:
				r := rec(added)
				if op%5 == 1 && i%3 == 0 {
					bad[r.DecisionID] = true // the distributor refuses this one
				}
				times[r.DecisionID] = r.Time
				added++
				q.Add(r)
			case 2, 4:
				// Sent, no answer: the retry is the same bytes.
				b := q.Next(4, 1<<20, gapRec)
				require.Equal(t, string(b), string(q.Next(4, 1<<20, gapRec)))
			case 3:
				deliver()
			}
		}
		for range 10 * (added + 1) {
			if q.Len() == 0 && q.Pending().Dropped == 0 && !q.InFlight() {
				break
			}
			deliver()
		}
		var inGaps uint64
		for _, g := range gaps {
			inGaps += g.Dropped
		}
		for id, n := range stored {
			require.Equal(t, 1, n, "%s stored twice", id)
		}
		require.Equal(t, uint64(added-len(stored)), inGaps, "records neither stored nor in a gap")
		for id, at := range times {
			if stored[id] == 1 {
				continue
			}
			in := false
			for _, g := range gaps {
				in = in || !at.Before(g.FirstTime) && !at.After(g.LastTime)
			}
			require.True(t, in, "%s dropped outside every gap's range", id)
		}
	})
}

func BenchmarkBufferAddFull(b *testing.B) {
	q := NewBuffer(64<<10, 1<<20)
	r := rec(1)
	r.Subject, r.Path, r.Proxy = "spiffe://grid.example/ns/metering/sa/meter-reader", "/v1/meters/42/readings", "sidecar~10.0.0.7~meter-0"
	for range 1000 {
		q.Add(r)
	}
	q.Next(100, 1<<20, gapRec) // a batch in flight, as during an outage
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		q.Add(r)
	}
}

func BenchmarkBufferAdd(b *testing.B) {
	r := rec(1)
	r.Subject, r.Path, r.Proxy = "spiffe://grid.example/ns/metering/sa/meter-reader", "/v1/meters/42/readings", "sidecar~10.0.0.7~meter-0"
	b.Run("room", func(b *testing.B) {
		q := NewBuffer(1<<30, 1<<30)
		b.ReportAllocs()
		for range b.N {
			q.Add(r)
			if q.Len() > 10000 {
				q.Next(10000, 1<<30, gapRec)
				q.Done()
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		q := NewBuffer(64<<10, 1<<20)
		b.ReportAllocs()
		for range b.N {
			q.Add(r)
		}
	})
}

// BenchmarkAggregatorFlood is one 503 of a flood: folded into its
// interval's record, nothing buffered.
func BenchmarkAggregatorFlood(b *testing.B) {
	var a Aggregator
	id := func() string { return "a-1" }
	r := &Record{Time: t0, Decision: contract.DecisionUnavailable, Reason: "policy unavailable: no verified policy bundle: bundle expired"}
	b.ReportAllocs()
	for i := range b.N {
		a.Add(r, id)
		if i%100000 == 0 {
			a.Flush(func(*Record) {})
		}
	}
}
