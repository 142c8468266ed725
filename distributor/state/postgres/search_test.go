package postgres_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/decisionlog/searchtest"
	"github.com/meshguard/meshguard/distributor/internal/pgtest"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openSearch appends batches through one replica and searches through
// another, verified.
func openSearch(t *testing.T, batches [][]decisionlog.Record) (*postgres.Search, *postgres.DB, string) {
	_, url := pgtest.Database(t)
	key, _, err := decisionlog.NewKey("meshguard.test/decisions")
	require.NoError(t, err)
	a, b := open(t, url), open(t, url)
	da := a.Decisions(&key, 0, quiet())
	t.Cleanup(func() { da.Close() })
	for _, batch := range batches {
		_, err := da.Append(batch)
		require.NoError(t, err)
	}
	db := b.Decisions(&key, 0, quiet())
	t.Cleanup(func() { db.Close() })
	s := b.Search(db, time.Hour, quiet())
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.Verify(context.Background()))
	return s, b, url
}

// The PostgreSQL searcher passes the conformance suite the file index
// passes: pages against the reference, stats and values equal to the
// file index's over the same records.
func TestSearchConformance(t *testing.T) {
	searchtest.Run(t, func(t *testing.T, batches [][]decisionlog.Record) decisionlog.Searcher {
		s, _, _ := openSearch(t, batches)
		return s
	})
}

// An edited record is found by the verifier at its seq; records before it
// stay verified.
func TestSearchReportsTampering(t *testing.T) {
	s, db, _ := openSearch(t, searchtest.Batches(t, 300))
	ctx := context.Background()
	require.Equal(t, uint64(300), s.Integrity().Verified)

	// A fresh searcher verifies from seq 1 and meets the edit.
	_, err := db.Pool().Exec(ctx, `UPDATE decision_records SET line = replace(convert_from(line, 'UTF8'), '"GET"', '"PUT"')::bytea WHERE seq = 123`)
	require.NoError(t, err)
	d := db.Decisions(nil, 0, quiet())
	defer d.Close()
	s2 := db.Search(d, time.Hour, quiet())
	defer s2.Close()
	require.NoError(t, s2.Verify(ctx))
	in := s2.Integrity()
	assert.Equal(t, uint64(122), in.Verified)
	assert.Equal(t, uint64(123), in.BadSeq)
	assert.Contains(t, in.Problem, "differs from the stored tree")
	r, err := s2.Record(ctx, 123)
	require.NoError(t, err)
	assert.False(t, r.Verified)
	r, err = s2.Record(ctx, 122)
	require.NoError(t, err)
	assert.True(t, r.Verified)

	// A deleted record is reported missing.
	_, err = db.Pool().Exec(ctx, `DELETE FROM decision_records WHERE seq = 50`)
	require.NoError(t, err)
	s3 := db.Search(d, time.Hour, quiet())
	defer s3.Close()
	require.NoError(t, s3.Verify(ctx))
	in = s3.Integrity()
	assert.Equal(t, uint64(49), in.Verified)
	assert.Equal(t, uint64(50), in.BadSeq)
	assert.Contains(t, in.Problem, "missing")
}

// Rows stored before the searched columns existed are read at start-up.
func TestSearchReadsFieldsOfOldRows(t *testing.T) {
	s, db, url := openSearch(t, searchtest.Batches(t, 100))
	ctx := context.Background()
	_, err := db.Pool().Exec(ctx, `UPDATE decision_records SET decision = NULL, subject = NULL WHERE seq % 2 = 0`)
	require.NoError(t, err)
	p, err := s.Search(ctx, decisionlog.Filter{Decision: "deny"}, decisionlog.PageRequest{})
	require.NoError(t, err)
	before := p.Total

	reopened := open(t, url)
	var missing int
	require.NoError(t, reopened.Pool().QueryRow(ctx, `SELECT count(*) FROM decision_records WHERE decision IS NULL`).Scan(&missing))
	assert.Zero(t, missing)
	p, err = s.Search(ctx, decisionlog.Filter{Decision: "deny"}, decisionlog.PageRequest{})
	require.NoError(t, err)
	var want uint64
	for i := range 100 {
		if searchtest.Generate(i).Decision == "deny" {
			want++
		}
	}
	assert.Equal(t, want, p.Total)
	assert.Less(t, before, want, "the cleared rows were not found before")
}
