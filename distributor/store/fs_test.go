package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/distributor/store/storetest"
)

func TestFSConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenFS(t.TempDir(), store.FSOptions{})
		require.NoError(t, err)
		return s
	})
}

func TestValidRepository(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "a/b": true, "a-b/c.d/e__f": true, "a--b": true,
		"": false, "A": false, "a/../b": false, "../a": false, "a/": false, "/a": false,
		"a//b": false, "a/_tags": false, ".a": false, "a..b": false, strings.Repeat("a", 256): false,
	} {
		require.Equal(t, ok, store.ValidRepository(name), name)
	}
}

func FuzzValidRepository(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "a/./b", "a/_blobs/sha256", "a__b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !store.ValidRepository(name) {
			return
		}
		if filepath.Clean(name) != name || strings.HasPrefix(name, "/") {
			t.Fatalf("accepted %q which does not clean to itself", name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, "_") {
				t.Fatalf("accepted unsafe segment in %q", name)
			}
		}
	})
}

const crashEnv = "MESHGUARD_STORE_CRASH_CHILD"

// TestCrashChild is the child process of TestCrashRecovery: it writes blobs
// from several goroutines and prints each digest once committed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("child process of TestCrashRecovery")
	}
	s, err := store.OpenFS(dir, store.FSOptions{})
	require.NoError(t, err)
	ctx := context.Background()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				data := make([]byte, 64<<10+g*4096+i)
				_, _ = rand.Read(data)
				d := digest.FromBytes(data)
				if g%2 == 0 {
					if _, err := s.PutBlob(ctx, "crash/repo", d, bytes.NewReader(data), 0); err != nil {
						panic(err)
					}
				} else {
					id, err := s.NewUpload(ctx, "crash/repo")
					if err != nil {
						panic(err)
					}
					half := len(data) / 2
					if id, _, err = s.AppendUpload(ctx, "crash/repo", id, 0, bytes.NewReader(data[:half]), 0); err != nil {
						panic(err)
					}
					if id, _, err = s.AppendUpload(ctx, "crash/repo", id, int64(half), bytes.NewReader(data[half:]), 0); err != nil {
						panic(err)
					}
					if _, err := s.CommitUpload(ctx, "crash/repo", id, d); err != nil {
						panic(err)
					}
				}
				mu.Lock()
				fmt.Fprintln(out, d)
				out.Flush()
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	var committed []digest.Digest
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(stdout)
		deadline := time.Now().Add(30 * time.Second)
		n := 0
		for n < 40 && sc.Scan() && time.Now().Before(deadline) {
			if d, err := digest.Parse(strings.TrimSpace(sc.Text())); err == nil {
				committed = append(committed, d)
				n++
			}
		}
		// kill -9 in the middle of concurrent writes.
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		require.Greater(t, n, 0, "child committed nothing")

		s, err := store.OpenFS(dir, store.FSOptions{})
		require.NoError(t, err)
		ctx := context.Background()
		for _, d := range committed {
			rc, _, err := s.OpenBlob(ctx, "crash/repo", d)
			require.NoError(t, err, "committed blob %s lost", d)
			v := digest.Canonical.Digester()
			_, err = io.Copy(v.Hash(), rc)
			require.NoError(t, err)
			rc.Close()
			require.Equal(t, d, v.Digest(), "blob content corrupted")
		}
		// No visible blob is partial: every file in blobs/ hashes to its name.
		require.NoError(t, filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			alg := filepath.Base(filepath.Dir(filepath.Dir(p)))
			want := digest.NewDigestFromEncoded(digest.Algorithm(alg), e.Name())
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, want, want.Algorithm().FromBytes(data), "partial or corrupt blob visible: %s", p)
			return nil
		}))
		// Stale uploads and temporary files are gone after reopening.
		for _, sub := range []string{"tmp", "uploads"} {
			ents, err := os.ReadDir(filepath.Join(dir, sub))
			require.NoError(t, err)
			require.Empty(t, ents, sub)
		}
	}
	t.Logf("verified %d committed blobs across 3 crashes", len(committed))
}

func blobFile(s *store.FS, d digest.Digest) string {
	return filepath.Join(s.Root(), "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

func readBlob(t *testing.T, s store.Store, repo string, d digest.Digest) ([]byte, error) {
	t.Helper()
	f, _, err := s.OpenBlob(context.Background(), repo, d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// TestFSUploadRaceCannotPoisonBlob: a chunk still arriving cannot be
// committed under it, and nothing written into the upload after a commit
// reaches the blob.
func TestFSUploadRaceCannotPoisonBlob(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	require.NoError(t, err)
	good := []byte("the module content the client pushed")
	junk := []byte("attacker bytes arriving late")
	id, err := s.NewUpload(ctx, "a")
	require.NoError(t, err)
	_, _, err = s.AppendUpload(ctx, "a", id, 0, bytes.NewReader(good), 0)
	require.NoError(t, err)

	pr, pw := io.Pipe()
	type result struct {
		size int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, n, err := s.AppendUpload(ctx, "a", id, -1, pr, 0)
		done <- result{n, err}
	}()
	_, err = pw.Write(junk[:5]) // returns once the append is reading
	require.NoError(t, err)
	_, err = s.CommitUpload(ctx, "a", id, digest.FromBytes(good))
	require.ErrorIs(t, err, store.ErrUploadBusy, "a commit while a chunk arrives must not proceed")
	require.ErrorIs(t, s.AbortUpload(ctx, "a", id), store.ErrUploadBusy)
	_, err = pw.Write(junk[5:])
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	r := <-done
	require.NoError(t, r.err)
	require.EqualValues(t, len(good)+len(junk), r.size)

	_, err = s.CommitUpload(ctx, "a", id, digest.FromBytes(good))
	require.ErrorIs(t, err, store.ErrDigestMismatch)
	all := append(append([]byte{}, good...), junk...)
	// A writer that kept the upload file open (bypassing the lock) writes
	// after the commit: the blob is a copy, so it stays intact.
	stale, err := os.OpenFile(filepath.Join(s.Root(), "uploads", id), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	defer stale.Close()
	_, err = s.CommitUpload(ctx, "a", id, digest.FromBytes(all))
	require.NoError(t, err)
	_, err = stale.Write([]byte("poison"))
	require.NoError(t, err)
	got, err := readBlob(t, s, "a", digest.FromBytes(all))
	require.NoError(t, err)
	require.Equal(t, all, got)
	_, err = s.UploadSize(ctx, "a", id)
	require.ErrorIs(t, err, store.ErrNotFound, "a commit consumes the upload")
}

// TestFSCorruptBlobIsNeverLinkedOrServed: a blob whose file no longer
// matches its digest is quarantined on read, replaced by the next verified
// push instead of being linked, and found by Scrub.
func TestFSCorruptBlobIsNeverLinkedOrServed(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenFS(t.TempDir(), store.FSOptions{Logger: quietLog()})
	require.NoError(t, err)
	good, other := []byte("good module bytes"), []byte("another blob")
	d, d2 := digest.FromBytes(good), digest.FromBytes(other)
	_, err = s.PutBlob(ctx, "a", d, bytes.NewReader(good), 0)
	require.NoError(t, err)
	_, err = s.PutBlob(ctx, "a", d2, bytes.NewReader(other), 0)
	require.NoError(t, err)
	corrupt := func(p string) {
		require.NoError(t, os.WriteFile(p, []byte("poisoned content!"), 0o644))
		// A different mtime than the verified copy had.
		require.NoError(t, os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour)))
	}

	// A later push of the same content to another repository replaces the
	// corrupted file instead of linking to it.
	corrupt(blobFile(s, d))
	_, err = s.PutBlob(ctx, "b", d, bytes.NewReader(good), 0)
	require.NoError(t, err)
	for _, repo := range []string{"a", "b"} {
		got, err := readBlob(t, s, repo, d)
		require.NoError(t, err, repo)
		require.Equal(t, good, got, repo)
	}

	// Corrupted after it was verified: the next read refuses and quarantines.
	corrupt(blobFile(s, d))
	_, err = readBlob(t, s, "a", d)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoFileExists(t, blobFile(s, d))
	q, err := os.ReadDir(filepath.Join(s.Root(), "corrupt"))
	require.NoError(t, err)
	require.Len(t, q, 2)

	// Scrub re-hashes everything, whatever this process verified before.
	_, err = s.PutBlob(ctx, "a", d, bytes.NewReader(good), 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(blobFile(s, d2), []byte("same-size-blob"[:len(other)]), 0o644))
	rep, err := s.Scrub(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, rep.Checked)
	require.Equal(t, []digest.Digest{d2}, rep.Quarantined)
}

func TestFSUploadsBoundToRepositoryBoundedAndPurged(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	s, err := store.OpenFS(t.TempDir(), store.FSOptions{MaxUploads: 2, UploadTTL: time.Hour, Now: func() time.Time { return now }})
	require.NoError(t, err)
	id, err := s.NewUpload(ctx, "team-a/guard")
	require.NoError(t, err)
	_, _, err = s.AppendUpload(ctx, "team-b/guard", id, -1, strings.NewReader("x"), 0)
	require.ErrorIs(t, err, store.ErrNotFound, "an upload belongs to its repository")
	_, err = s.UploadSize(ctx, "team-b/guard", id)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.CommitUpload(ctx, "team-b/guard", id, digest.FromString(""))
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.AbortUpload(ctx, "team-b/guard", id), store.ErrNotFound)

	_, err = s.NewUpload(ctx, "team-a/guard")
	require.NoError(t, err)
	_, err = s.NewUpload(ctx, "team-a/guard")
	require.ErrorIs(t, err, store.ErrTooManyUploads)

	now = now.Add(30 * time.Minute)
	_, _, err = s.AppendUpload(ctx, "team-a/guard", id, -1, strings.NewReader("x"), 0) // keeps id alive
	require.NoError(t, err)
	now = now.Add(45 * time.Minute) // the other upload is idle 75 min, id 45 min
	fresh, err := s.NewUpload(ctx, "team-a/guard")
	require.NoError(t, err, "an idle upload past the TTL is purged")
	size, err := s.UploadSize(ctx, "team-a/guard", id)
	require.NoError(t, err)
	require.EqualValues(t, 1, size)
	ents, err := os.ReadDir(filepath.Join(s.Root(), "uploads"))
	require.NoError(t, err)
	require.Len(t, ents, 2, "the purged upload's file is gone")
	require.NotEqual(t, id, fresh)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
