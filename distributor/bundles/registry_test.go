package bundles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// revVerifier accepts "rev=N" payloads (the registry's own logic is under
// test here; signed bundles are tested end to end in distributor/server).
type revVerifier struct{}

func (revVerifier) Verify(data []byte, scope string, last uint64) (Verified, error) {
	s, ok := strings.CutPrefix(string(data), "rev=")
	if !ok {
		return Verified{}, errors.New("not a bundle")
	}
	s, _, _ = strings.Cut(s, " ")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return Verified{}, err
	}
	if n <= last {
		return Verified{}, fmt.Errorf("%w: %d <= %d", ErrConflict, n, last)
	}
	return Verified{Revision: n, Created: time.Unix(1700000000, 0)}, nil
}

func open(t *testing.T, dir string, retain int) *Registry {
	r, err := Open(Options{Dir: dir, Verifier: revVerifier{}, Retain: retain, AutoChannels: true,
		Channels: map[string]ChannelOptions{"short": {Retain: 1}, "prod": {}}})
	require.NoError(t, err)
	return r
}

func TestConcurrentPublishesOneWinnerPerRevision(t *testing.T) {
	r := open(t, t.TempDir(), 5)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := map[uint64]int{}
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rev := uint64(i%10 + 1)
			_, err := r.Publish("prod", []byte(fmt.Sprintf("rev=%d writer=%d", rev, i)))
			if err == nil {
				mu.Lock()
				wins[rev]++
				mu.Unlock()
			} else {
				assert.ErrorIs(t, err, ErrConflict)
			}
		}()
	}
	wg.Wait()
	for rev, n := range wins {
		assert.Equal(t, 1, n, "revision %d published %d times", rev, n)
	}
	s, err := r.Latest("prod")
	require.NoError(t, err)
	assert.Equal(t, uint64(10), s.Info.Revision)
	revs, err := r.Revisions("prod")
	require.NoError(t, err)
	assert.LessOrEqual(t, len(revs), 5)
	for i := 1; i < len(revs); i++ {
		assert.Less(t, revs[i-1].Revision, revs[i].Revision)
	}
}

func TestReloadRetentionAndCorruption(t *testing.T) {
	dir := t.TempDir()
	r := open(t, dir, 3)
	for rev := 1; rev <= 5; rev++ {
		_, err := r.Publish("short", []byte(fmt.Sprintf("rev=%d", rev)))
		require.NoError(t, err)
		_, err = r.Publish("prod", []byte(fmt.Sprintf("rev=%d", rev*2)))
		require.NoError(t, err)
	}
	revs, _ := r.Revisions("short")
	require.Len(t, revs, 1, "per-channel retention")
	files, _ := filepath.Glob(filepath.Join(dir, "prod", "*.bundle"))
	assert.Len(t, files, 3, "old revisions are deleted from disk")

	_, err := r.Publish("prod", []byte("garbage"))
	require.ErrorIs(t, err, ErrInvalid)
	_, err = r.Publish("BAD", []byte("rev=1"))
	require.ErrorIs(t, err, ErrBadChannel)

	r2 := open(t, dir, 3)
	s, err := r2.Latest("prod")
	require.NoError(t, err)
	assert.Equal(t, uint64(10), s.Info.Revision)
	assert.Equal(t, []byte("rev=10"), s.Data)
	_, data, err := r2.Revision("prod", 8)
	require.NoError(t, err)
	assert.Equal(t, []byte("rev=8"), data)
	_, _, err = r2.Revision("prod", 2)
	assert.ErrorIs(t, err, ErrNotFound)

	// A latest bundle whose bytes changed on disk is refused at load.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prod", fmt.Sprintf("%020d.bundle", 10)), []byte("rev=10 evil"), 0o644))
	_, err = Open(Options{Dir: dir, Verifier: revVerifier{}, AutoChannels: true})
	require.ErrorContains(t, err, "digest")
}

// scopeVerifier records the scope each publish asked for.
type scopeVerifier struct{ scopes *[]string }

func (v scopeVerifier) Verify(data []byte, scope string, min uint64) (Verified, error) {
	*v.scopes = append(*v.scopes, scope)
	return revVerifier{}.Verify(data, scope, min)
}

func TestChannelScopeDefaultsToItsNameAndReadersCreateNothing(t *testing.T) {
	var scopes []string
	r, err := Open(Options{Dir: t.TempDir(), Verifier: scopeVerifier{&scopes}, AutoChannels: true,
		Channels: map[string]ChannelOptions{"prod": {}, "eu": {Scope: "grid/eu"}}})
	require.NoError(t, err)
	for _, ch := range []string{"prod", "eu", "created-by-publish"} {
		_, err := r.Publish(ch, []byte("rev=1"))
		require.NoError(t, err)
	}
	assert.Equal(t, []string{"prod", "grid/eu", "created-by-publish"}, scopes)

	_, err = r.Wait(context.Background(), "never-configured", "")
	require.ErrorIs(t, err, ErrNotFound, "a long poll on an unknown name fails at once")
	_, known := r.Channels()["never-configured"]
	assert.False(t, known, "and creates no channel")
}

func TestWait(t *testing.T) {
	r := open(t, t.TempDir(), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s, err := r.Wait(ctx, "prod", "")
	require.NoError(t, err)
	assert.Nil(t, s, "nothing published: the wait times out")

	got := make(chan *Snapshot, 1)
	go func() {
		s, _ := r.Wait(context.Background(), "prod", "")
		got <- s
	}()
	time.Sleep(20 * time.Millisecond)
	_, err = r.Publish("prod", []byte("rev=1"))
	require.NoError(t, err)
	select {
	case s := <-got:
		require.NotNil(t, s)
		assert.Equal(t, uint64(1), s.Info.Revision)
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not woken")
	}
	s, err = r.Wait(context.Background(), "prod", `"stale"`)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), s.Info.Revision, "a different ETag returns at once")

	closed, err := Open(Options{Dir: t.TempDir(), Verifier: revVerifier{}})
	require.NoError(t, err)
	_, err = closed.Wait(context.Background(), "nope", "")
	assert.ErrorIs(t, err, ErrNotFound, "without auto channels unknown channels are not waited on")
}
