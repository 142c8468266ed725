package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/internal/pgtest"
	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/distributor/state/postgres"
	"github.com/meshguard/meshguard/distributor/state/statetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Options{URL: url, Fallback: time.Hour})
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

func rev(n uint64) state.Revision {
	now := time.Date(2026, 12, 1, 0, 0, int(n), 0, time.UTC)
	return state.Revision{Revision: n, Digest: fmt.Sprintf("sha256:%064d", n), Created: now, Published: now, Size: 3}
}

func TestCommitLoadRetain(t *testing.T) {
	_, url := pgtest.Database(t)
	ch := open(t, url).Channels()
	ctx := context.Background()
	_, ok, err := ch.Latest(ctx, "prod")
	require.NoError(t, err)
	assert.False(t, ok)
	for n := uint64(1); n <= 4; n++ {
		require.NoError(t, ch.Commit(ctx, "prod", rev(n), []byte(fmt.Sprintf("b%d", n)), 2))
	}
	revs, data, err := ch.Load(ctx, "prod")
	require.NoError(t, err)
	require.Len(t, revs, 2)
	assert.Equal(t, []uint64{3, 4}, []uint64{revs[0].Revision, revs[1].Revision})
	assert.Equal(t, rev(4).Created, revs[1].Created)
	assert.Equal(t, "b4", string(data))
	_, err = ch.Bundle(ctx, "prod", 1)
	assert.ErrorIs(t, err, state.ErrNotFound)
	b, err := ch.Bundle(ctx, "prod", 3)
	require.NoError(t, err)
	assert.Equal(t, "b3", string(b))
	for _, n := range []uint64{4, 3} {
		assert.ErrorIs(t, ch.Commit(ctx, "prod", rev(n), []byte("x"), 2), state.ErrConflict)
	}
	names, err := ch.List(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"prod"}, names)
}

// Two stores (two replicas) committing revisions at once: the highest
// wins, every lower one that lost is a conflict, nothing is half stored.
func TestConcurrentCommits(t *testing.T) {
	_, url := pgtest.Database(t)
	a, b := open(t, url).Channels(), open(t, url).Channels()
	ctx := context.Background()
	for round := 0; round < 20; round++ {
		base := uint64(round*2 + 7)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, st := range []*postgres.Channels{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.Commit(ctx, "prod", rev(base+uint64(i)), []byte("x"), 10)
			}()
		}
		wg.Wait()
		require.NoError(t, errs[1], "the higher revision always commits")
		if errs[0] != nil {
			require.ErrorIs(t, errs[0], state.ErrConflict)
		}
		latest, ok, err := b.Latest(ctx, "prod")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, base+1, latest.Revision)
	}
	require.ErrorIs(t, a.Commit(ctx, "prod", rev(6), []byte("x"), 10), state.ErrConflict)
}

func TestWatchWakesOtherStore(t *testing.T) {
	_, url := pgtest.Database(t)
	a, b := open(t, url).Channels(), open(t, url).Channels()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 16)
	go b.Watch(ctx, func(n string) { got <- n })
	// The first listen resyncs; give the listener time to be in place.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	require.NoError(t, a.Commit(ctx, "edge", rev(1), []byte("x"), 10))
	for {
		select {
		case n := <-got:
			if n == "edge" {
				t.Logf("notified after %v", time.Since(start))
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notification")
		}
	}
}

func TestSchemaNewerRefused(t *testing.T) {
	_, url := pgtest.Database(t)
	open(t, url)
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	_, err = conn.Exec(context.Background(), `INSERT INTO meshguard_schema (version) VALUES ($1)`, postgres.SchemaVersion+1)
	require.NoError(t, err)
	conn.Close(context.Background())
	_, err = postgres.Open(context.Background(), postgres.Options{URL: url})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "newer than this distributor's")
}

func TestMigrationsIdempotentAndConcurrent(t *testing.T) {
	_, url := pgtest.Database(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := postgres.Open(context.Background(), postgres.Options{URL: url})
			if err == nil {
				db.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func TestStartupErrorsAreClear(t *testing.T) {
	c, url := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, postgres.Options{URL: strings.Replace(url, c.Password, "wrong", 1)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refused the credentials")
	assert.NotContains(t, err.Error(), c.Password)

	pw := t.TempDir() + "/pw"
	require.NoError(t, os.WriteFile(pw, []byte(c.Password+"\n"), 0o600))
	noPass := strings.Replace(url, ":"+c.Password, "", 1)
	db, err := postgres.Open(ctx, postgres.Options{URL: noPass, PasswordFile: pw})
	require.NoError(t, err, "the password file supplies the password")
	db.Close()

	_, err = postgres.Open(ctx, postgres.Options{URL: "postgres://meshguard:x@127.0.0.1:1/db?sslmode=disable"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unreachable")

	_, err = postgres.Open(ctx, postgres.Options{URL: "postgres://a:secret@[::1"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret")
}

func TestConformance(t *testing.T) {
	statetest.Channels(t, func(t *testing.T) (state.Channels, func() state.Channels) {
		_, url := pgtest.Database(t)
		return open(t, url).Channels(), func() state.Channels { return open(t, url).Channels() }
	})
}
