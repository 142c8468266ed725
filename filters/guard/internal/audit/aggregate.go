package audit

import (
	"strings"

	"github.com/meshguard/meshguard/internal/contract"
)

// MaxAggregates bounds the aggregated records of one interval; refusals
// for further reasons are counted under OtherReasons.
const MaxAggregates = 32

// OtherReasons is the reason of the aggregated record counting refusals
// beyond MaxAggregates distinct reasons in one interval.
const OtherReasons = "further reasons (more than 32 distinct in one interval)"

// Aggregates reports whether records of decision d are aggregated:
// refusals without a decision (an unavailable policy, an internal error)
// can come in floods, one per request, and say the same thing.
func Aggregates(d string) bool {
	return d == contract.DecisionUnavailable || d == contract.DecisionError
}

// Aggregator folds the records of one interval by decision and reason
// into one record each, with Count, FirstTime and LastTime. Not for
// concurrent use.
type Aggregator struct {
	recs []*Record
	free []*Record
}

// Add folds r into the record of its decision and reason (created with
// id() on the first of the interval) and sets r.DecisionID to that
// record's id, the one a reply names. Only the fields every request of
// the record shares are kept: decision, reason, bundle revision and the
// proxy's identities.
func (a *Aggregator) Add(r *Record, id func() string) {
	g := a.find(r, r.Reason)
	if g == nil && len(a.recs) >= MaxAggregates {
		g = a.find(r, OtherReasons)
	}
	if g != nil {
		g.Count++
		if r.Time.Before(g.FirstTime) {
			g.FirstTime, g.Time = r.Time, r.Time
		}
		if r.Time.After(g.LastTime) {
			g.LastTime = r.Time
		}
		r.DecisionID = g.DecisionID
		return
	}
	reason := r.Reason
	if len(a.recs) >= MaxAggregates {
		reason = OtherReasons
	}
	if n := len(a.free); n > 0 {
		g, a.free = a.free[n-1], a.free[:n-1]
	} else {
		g = new(Record)
	}
	*g = Record{Time: r.Time, DecisionID: id(), Decision: r.Decision, RuleIDs: []string{}, Reason: strings.Clone(reason),
		BundleRevision: r.BundleRevision, Proxy: strings.Clone(r.Proxy), ProxyID: strings.Clone(r.ProxyID),
		Count: 1, FirstTime: r.Time, LastTime: r.Time}
	a.recs = append(a.recs, g)
	r.DecisionID = g.DecisionID
}

// find returns the interval's record of r's decision and revision for
// reason, nil if none.
func (a *Aggregator) find(r *Record, reason string) *Record {
	for _, g := range a.recs {
		if g.Decision == r.Decision && g.Reason == reason && g.BundleRevision == r.BundleRevision {
			return g
		}
	}
	return nil
}

// Len returns the number of aggregated records of the interval.
func (a *Aggregator) Len() int { return len(a.recs) }

// Flush hands each aggregated record to emit, oldest first, and starts a
// new interval.
func (a *Aggregator) Flush(emit func(*Record)) {
	for _, g := range a.recs {
		emit(g)
	}
	a.free = append(a.free, a.recs...)
	clear(a.recs)
	a.recs = a.recs[:0]
}
