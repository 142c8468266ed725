package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFSStoreDurableAndCAS(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := OpenFS(dir)
	require.NoError(t, err)
	now := time.Unix(1700000000, 0).UTC()
	rec := Record{Kind: KindDevice, ID: "inv:1", Organisation: "a", Generation: 1, Created: now, Updated: now, Spec: []byte(`{"id":"inv:1"}`)}
	require.NoError(t, s.Put(ctx, rec, 0))
	assert.ErrorIs(t, s.Put(ctx, rec, 0), ErrExists)
	rec2 := rec
	rec2.Generation = 2
	assert.ErrorIs(t, s.Put(ctx, rec2, 5), ErrConflict)
	require.NoError(t, s.Put(ctx, rec2, 1))
	assert.ErrorIs(t, s.Delete(ctx, KindDevice, "inv:1", 1), ErrConflict)
	assert.ErrorIs(t, s.Delete(ctx, KindDevice, "nope", 0), ErrNotFound)
	assert.Error(t, s.Put(ctx, Record{Kind: "things", ID: "x"}, 0))

	// A crash between the temporary file and the rename leaves a .tmp-
	// file: reopening drops it and keeps the last complete record.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "devices", ".tmp-123"), []byte(`{"kind":"devi`), 0o600))
	s2, err := OpenFS(dir)
	require.NoError(t, err)
	got, err := s2.Get(ctx, KindDevice, "inv:1")
	require.NoError(t, err)
	assert.Equal(t, uint64(2), got.Generation)
	_, err = os.Stat(filepath.Join(dir, "devices", ".tmp-123"))
	assert.True(t, os.IsNotExist(err))

	// A file that is not a record of its directory is refused loudly.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "devices", fileName("x")), []byte(`{"kind":"workloads","id":"x"}`), 0o600))
	_, err = OpenFS(dir)
	assert.Error(t, err)
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"inv-1","class":"inverter","vendor":"v","credential":{"jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}}`), true)
	f.Add([]byte(`{"spiffe_id":"spiffe://grid.example/ns/a/sa/b","versions":{"range":">=1.0.0","denied":["1.2.3+b1"]}}`), false)
	f.Add([]byte(`{"id":"inv-1","readers":["spiffe://x/**"],"write_limit":{"per_second":1e308,"burst":-1}}`), true)
	f.Fuzz(func(t *testing.T, body []byte, dev bool) {
		k := KindWorkload
		if dev {
			k = KindDevice
		}
		id, spec, err := parse(k, body, "org")
		if err != nil {
			return
		}
		// What was accepted is canonical: parsing it again gives the same.
		id2, spec2, err := parse(k, spec, "org")
		require.NoError(t, err, "canonical form refused: %s", spec)
		require.Equal(t, id, id2)
		require.Equal(t, string(spec), string(spec2))
	})
}

// store100k is a store of 100k devices, a tenth of them on disk too (the
// rest in memory only, to keep the setup short).
func store100k(b *testing.B) (*FSStore, string) {
	dir := b.TempDir()
	s, err := OpenFS(dir)
	require.NoError(b, err)
	for i := range 100000 {
		id := fmt.Sprintf("inv-%06d", i)
		rec := Record{Kind: KindDevice, ID: id, Organisation: "o", Generation: 1, Spec: []byte(`{"id":"` + id + `"}`)}
		s.ids[KindDevice] = append(s.ids[KindDevice], id) // generated in order
		s.m[KindDevice][id] = rec
		if i%10 == 0 {
			data, _ := json.Marshal(rec)
			require.NoError(b, os.WriteFile(filepath.Join(dir, "devices", fileName(id)), data, 0o600))
		}
	}
	return s, dir
}

// BenchmarkFSStoreList100k lists 100k devices in id order (what a
// bundle compile and a full list read).
func BenchmarkFSStoreList100k(b *testing.B) {
	s, _ := store100k(b)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		recs, err := s.List(ctx, KindDevice)
		if err != nil || len(recs) != 100000 {
			b.Fatal(err, len(recs))
		}
	}
}

// BenchmarkFSStoreOpen10kFiles opens a store directory of 10k entry files
// (the distributor's start).
func BenchmarkFSStoreOpen10kFiles(b *testing.B) {
	_, dir := store100k(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := OpenFS(dir); err != nil {
			b.Fatal(err)
		}
	}
}
