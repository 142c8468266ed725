package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
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
		s, err := store.OpenFS(t.TempDir())
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
	s, err := store.OpenFS(dir)
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

		s, err := store.OpenFS(dir)
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
