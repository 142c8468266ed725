package decisionlog

import (
	"context"
	"time"
)

// niceSteps are the bucket widths Stats picks from (then multiples of 30 days).
var niceSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 30 * 24 * time.Hour,
}

// bucketWidth is the smallest nice width w with span/w < n, so that span
// fits in n buckets of w.
func bucketWidth(span time.Duration, n int) time.Duration {
	for _, s := range niceSteps {
		if span/s < time.Duration(n) {
			return s
		}
	}
	month := 30 * 24 * time.Hour
	return (span/time.Duration(n)/month + 1) * month
}

// autoRange bounds the charted range when the filter leaves it open: a few
// records stamped by a clock far off must not squash the chart.
const (
	maxAhead = time.Hour
	maxSpan  = 366 * 24 * time.Hour
	maxRange = 100 * 365 * 24 * time.Hour
)

// Stats implements Searcher.
func (ix *Index) Stats(ctx context.Context, f Filter, r StatsRequest) (Stats, error) {
	if err := f.Validate(); err != nil {
		return Stats{}, err
	}
	r = BoundStats(r)
	ix.settle(ctx)
	head := ix.log.Head().Seq
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	m := ix.compile(f)
	n := ix.n
	lo, hi, any := int64(0), int64(0), false
	if f.Since.IsZero() || f.Until.IsZero() {
		ceiling := StatsCeiling()
		for i := uint64(0); i < n; i++ {
			t := ix.times[i]
			if t == noTime || t > ceiling || !ix.match(&m, i) {
				continue
			}
			if !any || t < lo {
				lo = t
			}
			if !any || t > hi {
				hi = t
			}
			any = true
		}
	}
	from, to, step, nb := StatsLayout(f, lo, hi, any, r.Buckets)
	st := Stats{From: time.Unix(0, from).UTC(), Bucket: Duration(step), Series: make([]BucketCounts, nb),
		Rules: []RuleCounts{}, Indexed: n, Head: head}
	for b := range st.Series {
		st.Series[b].Start = time.Unix(0, from+int64(b)*step).UTC()
	}
	perSet := make([][]uint64, len(ix.rsetRules))
	decSet := make([][numDecisions]uint64, len(ix.rsetRules))
	for i := uint64(0); i < n; i++ {
		if i&0xffff == 0 && ctx.Err() != nil {
			return Stats{}, ctx.Err()
		}
		if !ix.match(&m, i) {
			continue
		}
		st.Total++
		t := ix.times[i]
		if t == noTime || t < from || t > to {
			st.OutOfRange++
			continue
		}
		b := int((t - from) / step)
		sc := &st.Series[b]
		sc.Total++
		switch ix.dec[i] {
		case decAllow:
			sc.Allow++
		case decDeny:
			sc.Deny++
		case decDryRun:
			sc.DryRun++
		case decError:
			sc.Error++
		case decUnavailable:
			sc.Unavailable++
		case decGap:
			sc.Gap++
		}
		rs := ix.rset[i]
		if perSet[rs] == nil {
			perSet[rs] = make([]uint64, nb)
		}
		perSet[rs][b]++
		decSet[rs][ix.dec[i]]++
	}
	byRule := map[uint32]*RuleCounts{}
	for rs, counts := range perSet {
		if counts == nil {
			continue
		}
		for _, rule := range ix.rsetRules[rs] {
			rc := byRule[rule]
			if rc == nil {
				rc = &RuleCounts{Rule: ix.rules.vals[rule], Counts: make([]uint64, nb)}
				byRule[rule] = rc
			}
			for b, c := range counts {
				rc.Counts[b] += c
				rc.Total += c
			}
			rc.Deny += decSet[rs][decDeny]
			rc.DryRun += decSet[rs][decDryRun]
		}
	}
	all := make([]*RuleCounts, 0, len(byRule))
	for _, rc := range byRule {
		all = append(all, rc)
	}
	st.Rules, st.Other = RankRules(all, r.TopRules, nb)
	return st, nil
}
