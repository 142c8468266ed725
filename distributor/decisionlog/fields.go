package decisionlog

import (
	"math"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Fields are the values a Searcher filters on, read from a stored line
// exactly as the Index reads them, so that a database backend storing
// them in columns selects the same records.
type Fields struct {
	// Time is the record's "time" in unix nanoseconds; HasTime is false
	// when it is absent or unreadable.
	Time    int64
	HasTime bool
	// Decision is the decision's name, "unreadable" for anything else.
	Decision string
	// Rules are the rule_ids, [NoRule] when there are none.
	Rules []string
	// Revision is bundle_revision (0 when absent).
	Revision uint64
	// Subject, Device, Path, Proxy and Uploader are the string columns
	// ("" when absent).
	Subject, Device, Path, Proxy, Uploader string
}

// DecisionUnreadable is Fields.Decision for a record whose decision is
// none of contract.RecordDecisions.
const DecisionUnreadable = "unreadable"

// IndexFields reads a stored line's Fields.
func IndexFields(line []byte) Fields {
	e, ok := scanEntry(line)
	if !ok {
		e = parseEntry(line)
	}
	f := Fields{Time: e.time, HasTime: e.time != noTime, Decision: decisionNames[e.dec], Rules: e.rules,
		Revision: e.rev, Subject: e.str[colSubject], Device: e.str[colDevice], Path: e.str[colPath],
		Proxy: e.str[colProxy], Uploader: e.str[colUploader]}
	if len(f.Rules) == 0 {
		f.Rules = []string{NoRule}
	}
	return f
}

// TimeBounds are Since and Until in unix nanoseconds as the Index
// compares them (math.MinInt64 and math.MaxInt64 when unset).
func (f Filter) TimeBounds() (since, until int64) {
	since, until = math.MinInt64, math.MaxInt64
	if !f.Since.IsZero() {
		since = clampNano(f.Since)
	}
	if !f.Until.IsZero() {
		until = clampNano(f.Until)
	}
	return since, until
}

// StatsLayout is the bucket layout Stats uses for a filter whose matching
// timed records (up to an hour from now) lie in [lo, hi] (found false:
// none): buckets start at from, each step nanoseconds long, nb of them;
// records after to or before from are out of range. r.Buckets must be
// bounded already.
func StatsLayout(f Filter, lo, hi int64, found bool, buckets int) (from, to, step int64, nb int) {
	from, to = f.TimeBounds()
	if f.Since.IsZero() || f.Until.IsZero() {
		if !found {
			hi = time.Now().UnixNano()
			lo = hi - int64(time.Hour)
		}
		if f.Since.IsZero() {
			from = max(lo, hi-int64(maxSpan))
		}
		if f.Until.IsZero() {
			to = hi
		}
	}
	// Nothing valid lies far in the future: a given range ends an hour from now.
	to = min(to, time.Now().Add(maxAhead).UnixNano())
	if to < from {
		to = from
	}
	// A given range may be centuries wide; past a century the records
	// before it are out of range (and the subtraction stays in int64).
	from = max(from, to-int64(maxRange))
	// Buckets start at multiples of the width; aligning can add a bucket,
	// so widen until they fit.
	for width := bucketWidth(time.Duration(to-from), buckets); ; width = bucketWidth(width*time.Duration(buckets), buckets) {
		step = int64(width)
		start := from - ((from%step)+step)%step
		if nb = int((to-start)/step) + 1; nb <= buckets {
			from = start
			break
		}
	}
	return from, to, step, nb
}

// StatsCeiling is the latest record time Stats charts when the filter
// leaves the range open (an hour from now).
func StatsCeiling() int64 { return time.Now().Add(maxAhead).UnixNano() }

// RankRules orders per-rule counts most frequent first (ties by name) and
// keeps top of them, summing the rest (nb buckets each) into other.
func RankRules(all []*RuleCounts, top, nb int) (rules []RuleCounts, other *RuleCounts) {
	sort.Slice(all, func(i, j int) bool {
		if all[i].Total != all[j].Total {
			return all[i].Total > all[j].Total
		}
		return all[i].Rule < all[j].Rule
	})
	rules = []RuleCounts{}
	for i, rc := range all {
		if i < top {
			rules = append(rules, *rc)
			continue
		}
		if other == nil {
			other = &RuleCounts{Rule: "other", Counts: make([]uint64, nb)}
		}
		for b, c := range rc.Counts {
			other.Counts[b] += c
		}
		other.Total += rc.Total
		other.Deny += rc.Deny
		other.DryRun += rc.DryRun
	}
	return rules, other
}

// BoundStats applies StatsRequest's defaults and limits.
func BoundStats(r StatsRequest) StatsRequest {
	r.Buckets = bounded(r.Buckets, DefaultBuckets, MaxBuckets)
	r.TopRules = bounded(r.TopRules, DefaultTopRules, MaxTopRules)
	return r
}

// BoundPage applies PageRequest's defaults and limits.
func BoundPage(p PageRequest) PageRequest {
	p.Limit = bounded(p.Limit, DefaultPageSize, MaxPageSize)
	return p
}

// BoundValues applies Values' default (100) and limit (1000).
func BoundValues(limit int) int { return bounded(limit, 100, 1000) }

// VerifyTree checks stored lines, seq first onwards, against a stored
// tree as the Index does: each line canonical with its seq, and the tree
// hashes recomputed from it the stored ones. tree reads the stored
// hashes of the tree of at least the given size. It returns the last good
// seq and, on failure, the first bad seq and its problem.
func VerifyTree(tree func(size uint64) tlog.HashReader, first uint64, lines [][]byte) (good, bad uint64, problem string) {
	return verifyTreeWith(tree, first, lines)
}

// CheckpointReportOf describes a signed checkpoint a verified tree reached.
func CheckpointReportOf(c Checkpoint) *CheckpointReport { return reportOf(c) }
