package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/internal/pgtest"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

func record(by string, i int) decisionlog.Record {
	return decisionlog.Record{
		"decision_id": json.RawMessage(fmt.Sprintf("%q", fmt.Sprint(i))),
		"received_by": json.RawMessage(fmt.Sprintf("%q", by)),
		"decision":    json.RawMessage(`"allow"`),
		"path":        json.RawMessage(`"/v1/readings"`),
	}
}

func batch(by string, start, n int) []decisionlog.Record {
	var out []decisionlog.Record
	for i := start; i < start+n; i++ {
		out = append(out, record(by, i))
	}
	return out
}

// Two replicas append concurrently into one log: sequence numbers are
// dense and unique, the stored tree is the RFC 6962 tree of the stored
// lines (recomputed independently here), and inclusion and consistency
// proofs from either replica verify against a signed checkpoint.
func TestDecisionLogTwoReplicas(t *testing.T) {
	_, url := pgtest.Database(t)
	key, _, err := decisionlog.NewKey("meshguard.test/decisions")
	require.NoError(t, err)
	a, b := open(t, url).DecisionLog(&key), open(t, url).DecisionLog(&key)
	ctx := context.Background()

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := a
			if w%2 == 1 {
				l = b
			}
			for i := range 10 {
				res, err := l.Append(ctx, batch(fmt.Sprintf("proxy-%d", w), i*20, 20))
				assert.NoError(t, err)
				assert.Equal(t, 20, res.Accepted)
				assert.Equal(t, res.First+19, res.Last)
			}
		}()
	}
	wg.Wait()
	head, err := b.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1600), head.Seq)

	// A retried batch is not stored twice; a partly new one stores the rest.
	res, err := a.Append(ctx, batch("proxy-0", 190, 20))
	require.NoError(t, err)
	assert.Equal(t, decisionlog.Appended{First: 1601, Last: 1610, Accepted: 10, Duplicates: 10}, res)
	head, err = b.Head(ctx)
	require.NoError(t, err)

	// Recompute the tree from the lines alone.
	var hashes []tlog.Hash
	mem := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	next := uint64(1)
	require.NoError(t, a.Records(ctx, 1, func(seq uint64, line []byte) bool {
		require.Equal(t, next, seq)
		next++
		hs, err := tlog.StoredHashes(int64(seq-1), line, mem)
		require.NoError(t, err)
		hashes = append(hashes, hs...)
		return true
	}))
	root, err := tlog.TreeHash(int64(head.Seq), mem)
	require.NoError(t, err)
	assert.Equal(t, root.String(), head.Hash)

	cp, err := a.Checkpoint(ctx)
	require.NoError(t, err)
	latest, err := b.Latest(ctx)
	require.NoError(t, err)
	assert.Equal(t, cp.Size, latest.Size)
	for _, seq := range []uint64{1, 2, 777, 1600, head.Seq} {
		p, err := b.ProveInclusion(ctx, seq, 0)
		require.NoError(t, err)
		require.NoError(t, p.Check(latest), "seq %d", seq)
	}
	early := decisionlog.Checkpoint{Origin: latest.Origin, Size: 100}
	early.Root, err = tlog.TreeHash(100, mem)
	require.NoError(t, err)
	cons, err := a.ProveConsistency(ctx, 100, 0)
	require.NoError(t, err)
	require.NoError(t, decisionlog.Consistent(early, latest, cons.Proof))

	// A tampered record no longer proves.
	p, err := a.ProveInclusion(ctx, 5, 0)
	require.NoError(t, err)
	p.Record = p.Record[:len(p.Record)-1] + " }"
	assert.Error(t, p.Check(latest))
	_, err = a.ProveInclusion(ctx, head.Seq+1, 0)
	assert.ErrorIs(t, err, decisionlog.ErrNoRecord)
}

func BenchmarkDecisionAppendTwoReplicas(b *testing.B) {
	_, url := pgtest.Database(b)
	var logs []*postgres.DecisionLog
	for range 2 {
		db, err := postgres.Open(context.Background(), postgres.Options{URL: url})
		require.NoError(b, err)
		b.Cleanup(db.Close)
		logs = append(logs, db.DecisionLog(nil))
	}
	var mu sync.Mutex
	n := 0
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		w := n
		n++
		mu.Unlock()
		l := logs[w%2]
		i := 0
		for pb.Next() {
			if _, err := l.Append(context.Background(), batch(fmt.Sprintf("p%d", w), i*100, 100)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "records/s")
}
