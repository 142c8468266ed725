package decisionlog

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGapAndUnavailableRecordsIndexed: the guard's gap and aggregated
// unavailable records are stored with their counts and time range, found
// by decision and counted apart in the stats.
func TestGapAndUnavailableRecordsIndexed(t *testing.T) {
	l, err := Open(t.TempDir(), Options{Logger: quiet()})
	require.NoError(t, err)
	defer l.Close()
	var recs []Record
	for _, line := range []string{
		`{"time":"2026-11-23T09:00:00Z","decision_id":"d-1","decision":"allow","proxy":"p"}`,
		`{"time":"2026-11-23T09:00:01Z","decision_id":"a-1","decision":"unavailable","reason":"policy unavailable","count":41,"first_time":"2026-11-23T09:00:01Z","last_time":"2026-11-23T09:00:02.5Z","proxy":"p"}`,
		`{"time":"2026-11-23T09:00:03Z","decision_id":"a-2","decision":"gap","reason":"audit buffer full","dropped":7,"first_time":"2026-11-23T08:59:00Z","last_time":"2026-11-23T08:59:59.999Z","proxy":"p"}`,
	} {
		r, err := DecodeRecord([]byte(line))
		require.NoError(t, err, line)
		recs = append(recs, r)
	}
	_, err = l.Append(recs)
	require.NoError(t, err)
	ix := openIndex(t, l)
	ctx := context.Background()
	for _, d := range []string{DecisionGap, DecisionUnavailable} {
		p, err := ix.Search(ctx, Filter{Decision: d}, PageRequest{Limit: 10})
		require.NoError(t, err)
		require.Equal(t, uint64(1), p.Total, d)
		assert.Contains(t, string(p.Records[0].Record), `"decision":"`+d+`"`)
	}
	p, err := ix.Search(ctx, Filter{Decision: DecisionGap}, PageRequest{Limit: 10})
	require.NoError(t, err)
	assert.Contains(t, string(p.Records[0].Record), `"dropped":7`)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	st, err := ix.Stats(ctx, Filter{Since: t0, Until: t0.Add(time.Minute)}, StatsRequest{Buckets: 1})
	require.NoError(t, err)
	require.Len(t, st.Series, 1)
	assert.Equal(t, uint64(1), st.Series[0].Unavailable)
	assert.Equal(t, uint64(1), st.Series[0].Gap)
	assert.Equal(t, uint64(1), st.Series[0].Allow)
}
