// Package storetest is a conformance suite every store.Store backend must
// pass.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/store"
)

// Run runs the suite against a fresh store from newStore for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := context.Background()
	blob := func(n int, seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, seed))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}

	t.Run("blobs", func(t *testing.T) {
		s := newStore(t)
		data := blob(100_000, 1)
		d := digest.FromBytes(data)
		_, err := s.StatBlob(ctx, "suite/a", d)
		require.ErrorIs(t, err, store.ErrNotFound)
		n, err := s.PutBlob(ctx, "suite/a", d, bytes.NewReader(data), 0)
		require.NoError(t, err)
		require.EqualValues(t, len(data), n)
		size, err := s.StatBlob(ctx, "suite/a", d)
		require.NoError(t, err)
		require.EqualValues(t, len(data), size)
		rc, size, err := s.OpenBlob(ctx, "suite/a", d)
		require.NoError(t, err)
		got, _ := io.ReadAll(rc)
		require.Equal(t, data, got)
		require.EqualValues(t, len(data), size)
		// Seeking serves Range requests: back, forward, relative to the end.
		for _, off := range []int64{40_000, 10, 99_990} {
			pos, err := rc.Seek(off, io.SeekStart)
			require.NoError(t, err)
			require.Equal(t, off, pos)
			part := make([]byte, 10)
			_, err = io.ReadFull(rc, part)
			require.NoError(t, err)
			require.Equal(t, data[off:off+10], part, "at %d", off)
		}
		end, err := rc.Seek(-5, io.SeekEnd)
		require.NoError(t, err)
		require.EqualValues(t, len(data)-5, end)
		tail, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.Equal(t, data[len(data)-5:], tail)
		require.NoError(t, rc.Close())

		_, err = s.PutBlob(ctx, "suite/a", digest.FromString("x"), bytes.NewReader(data), 0)
		require.ErrorIs(t, err, store.ErrDigestMismatch)
		_, err = s.PutBlob(ctx, "suite/a", d, bytes.NewReader(data), 10)
		require.ErrorIs(t, err, store.ErrTooLarge)

		require.NoError(t, s.MountBlob(ctx, "suite/a", "suite/b", d))
		_, err = s.StatBlob(ctx, "suite/b", d)
		require.NoError(t, err)
		require.NoError(t, s.DeleteBlob(ctx, "suite/a", d))
		_, err = s.StatBlob(ctx, "suite/a", d)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("uploads", func(t *testing.T) {
		s := newStore(t)
		data := blob(300_000, 2)
		d := digest.FromBytes(data)
		// Chunks follow the id each call returns.
		id, err := s.NewUpload(ctx, "suite/up")
		require.NoError(t, err)
		id, n, err := s.AppendUpload(ctx, "suite/up", id, 0, bytes.NewReader(data[:1000]), 0)
		require.NoError(t, err)
		require.EqualValues(t, 1000, n)
		id, n, err = s.AppendUpload(ctx, "suite/up", id, 5, bytes.NewReader(data[1000:]), 0)
		require.ErrorIs(t, err, store.ErrInvalidOffset)
		require.EqualValues(t, 1000, n, "the current size comes with ErrInvalidOffset")
		// Over the limit: refused, and the upload keeps its size.
		id, n, err = s.AppendUpload(ctx, "suite/up", id, 1000, bytes.NewReader(data[1000:]), 2000)
		require.ErrorIs(t, err, store.ErrTooLarge)
		require.EqualValues(t, 1000, n)
		id, n, err = s.AppendUpload(ctx, "suite/up", id, 1000, bytes.NewReader(data[1000:200_000]), 0)
		require.NoError(t, err)
		require.EqualValues(t, 200_000, n)
		// A negative offset appends at the end (a PATCH without Content-Range).
		id, n, err = s.AppendUpload(ctx, "suite/up", id, -1, bytes.NewReader(data[200_000:]), 0)
		require.NoError(t, err)
		require.EqualValues(t, len(data), n)
		size, err := s.UploadSize(ctx, "suite/up", id)
		require.NoError(t, err)
		require.EqualValues(t, len(data), size)
		_, err = s.CommitUpload(ctx, "suite/up", id, digest.FromString("x"))
		require.ErrorIs(t, err, store.ErrDigestMismatch)
		// The upload survives a failed commit.
		n, err = s.CommitUpload(ctx, "suite/up", id, d)
		require.NoError(t, err)
		require.EqualValues(t, len(data), n)
		rc, _, err := s.OpenBlob(ctx, "suite/up", d)
		require.NoError(t, err)
		got, _ := io.ReadAll(rc)
		rc.Close()
		require.Equal(t, data, got)

		id, err = s.NewUpload(ctx, "suite/up")
		require.NoError(t, err)
		require.NoError(t, s.AbortUpload(ctx, "suite/up", id))
		_, err = s.UploadSize(ctx, "suite/up", id)
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("manifests and tags", func(t *testing.T) {
		s := newStore(t)
		cfg := []byte(`{}`)
		cd := digest.FromBytes(cfg)
		_, err := s.PutBlob(ctx, "suite/m", cd, bytes.NewReader(cfg), 0)
		require.NoError(t, err)
		raw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[]}`, cd))
		m := store.Manifest{MediaType: string(types.OCIManifestSchema1), Digest: digest.FromBytes(raw), Data: raw}
		require.NoError(t, s.PutManifest(ctx, "suite/m", "v1", m))
		require.NoError(t, s.PutManifest(ctx, "suite/m", "v2", m))
		for _, ref := range []string{"v1", "v2", m.Digest.String()} {
			got, err := s.GetManifest(ctx, "suite/m", ref)
			require.NoError(t, err, ref)
			require.Equal(t, m, got)
		}
		tags, err := s.Tags(ctx, "suite/m")
		require.NoError(t, err)
		require.Equal(t, []string{"v1", "v2"}, tags)
		ds, err := s.Manifests(ctx, "suite/m")
		require.NoError(t, err)
		require.Contains(t, ds, m.Digest)
		repos, err := s.Repositories(ctx)
		require.NoError(t, err)
		require.Contains(t, repos, "suite/m")
		require.IsNonDecreasing(t, repos)
		_, err = s.GetManifest(ctx, "suite/m", "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Tags(ctx, "suite/none")
		require.ErrorIs(t, err, store.ErrNotFound)

		require.NoError(t, s.DeleteManifest(ctx, "suite/m", "v2"))
		tags, _ = s.Tags(ctx, "suite/m")
		require.Equal(t, []string{"v1"}, tags)
		require.NoError(t, s.DeleteManifest(ctx, "suite/m", m.Digest.String()))
		_, err = s.GetManifest(ctx, "suite/m", "v1")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.GetManifest(ctx, "suite/m", m.Digest.String())
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.DeleteManifest(ctx, "suite/m", m.Digest.String()), store.ErrNotFound)
	})

	t.Run("referrers", func(t *testing.T) {
		s := newStore(t)
		cfg := []byte(`{}`)
		cd := digest.FromBytes(cfg)
		_, err := s.PutBlob(ctx, "suite/r", cd, bytes.NewReader(cfg), 0)
		require.NoError(t, err)
		manifest := func(extra string) store.Manifest {
			raw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[]%s}`, cd, extra))
			return store.Manifest{MediaType: string(types.OCIManifestSchema1), Digest: digest.FromBytes(raw), Data: raw}
		}
		subject := manifest("")
		require.NoError(t, s.PutManifest(ctx, "suite/r", "v1", subject))
		// An untagged manifest pointing at the subject (a signature, an SBOM).
		sig := manifest(fmt.Sprintf(`,"artifactType":"application/example.sig","subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}`, subject.Digest, len(subject.Data)))
		require.NoError(t, s.PutManifest(ctx, "suite/r", "", sig))
		var found []digest.Digest
		if rl, ok := s.(store.ReferrerLister); ok {
			found, err = rl.Referrers(ctx, "suite/r", subject.Digest)
		} else {
			found, err = s.Manifests(ctx, "suite/r")
		}
		require.NoError(t, err)
		require.Contains(t, found, sig.Digest)
		got, err := s.GetManifest(ctx, "suite/r", sig.Digest.String())
		require.NoError(t, err)
		require.Equal(t, sig, got)
	})

	t.Run("concurrent", func(t *testing.T) {
		s := newStore(t)
		data := blob(50_000, 3)
		d := digest.FromBytes(data)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Same content from many writers: dedup must be safe.
				if _, err := s.PutBlob(ctx, "suite/c", d, bytes.NewReader(data), 0); err != nil {
					errs <- err
					return
				}
				rc, _, err := s.OpenBlob(ctx, "suite/c", d)
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("read back %d bytes, want %d", len(got), len(data))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})
}
