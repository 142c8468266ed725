package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Record is one stored entry: its kind and id, owner, generation (bumped
// by every change; the ETag) and the entry's JSON.
type Record struct {
	Kind         Kind            `json:"kind"`
	ID           string          `json:"id"`
	Organisation string          `json:"organisation"`
	Generation   uint64          `json:"generation"`
	Created      time.Time       `json:"created"`
	Updated      time.Time       `json:"updated"`
	Spec         json.RawMessage `json:"spec"`
}

// ETag is the record's entity tag.
func (r Record) ETag() string { return fmt.Sprintf(`"%d"`, r.Generation) }

// Store errors.
var (
	ErrNotFound = errors.New("registry: no such entry")
	ErrExists   = errors.New("registry: entry exists")
	// ErrConflict: the entry's generation is not the expected one.
	ErrConflict = errors.New("registry: entry changed (generation mismatch)")
)

// Store keeps registry records. Implementations are safe for concurrent
// use and make each Put and Delete durable before returning; the
// generation check makes them compare-and-swap, so several distributor
// replicas sharing a store cannot lose each other's updates.
type Store interface {
	// Get returns one record (ErrNotFound).
	Get(ctx context.Context, kind Kind, id string) (Record, error)
	// List returns every record of a kind, sorted by id.
	List(ctx context.Context, kind Kind) ([]Record, error)
	// Scan calls fn with the records of a kind whose id sorts after
	// after, in id order, until fn returns false (keyset paging). fn must
	// not call the store.
	Scan(ctx context.Context, kind Kind, after string, fn func(Record) bool) error
	// Put writes rec if the stored generation is prev (0: must not exist,
	// ErrExists; otherwise ErrNotFound or ErrConflict).
	Put(ctx context.Context, rec Record, prev uint64) error
	// Delete removes a record if its generation is prev (0: any).
	Delete(ctx context.Context, kind Kind, id string, prev uint64) error
}

// FSStore is a Store in a directory: one JSON file per entry under
// <dir>/<kind>/, written to a temporary file, synced and renamed over the
// old one (then the directory is synced), so a crash leaves either the old
// or the new entry, never a torn one. Records are kept in memory too.
type FSStore struct {
	dir string
	mu  sync.RWMutex
	m   map[Kind]map[string]Record
	ids map[Kind][]string // sorted, for ordered scans without sorting
}

// OpenFS opens (creating) a filesystem store, loading every record and
// removing temporary files a crash left behind.
func OpenFS(dir string) (*FSStore, error) {
	s := &FSStore{dir: dir, m: map[Kind]map[string]Record{}, ids: map[Kind][]string{}}
	for _, k := range []Kind{KindWorkload, KindDevice} {
		d := filepath.Join(dir, string(k))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("registry store: %w", err)
		}
		s.m[k] = map[string]Record{}
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("registry store: %w", err)
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if strings.HasPrefix(e.Name(), ".tmp-") {
				_ = os.Remove(p)
				continue
			}
			if !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("registry store: %w", err)
			}
			var rec Record
			if err := json.Unmarshal(b, &rec); err != nil || rec.Kind != k || fileName(rec.ID) != e.Name() {
				return nil, fmt.Errorf("registry store: %s: not a %s record (%v)", p, k, err)
			}
			s.m[k][rec.ID] = rec
			s.ids[k] = append(s.ids[k], rec.ID)
		}
		sort.Strings(s.ids[k])
	}
	return s, nil
}

// fileName is an entry's file: a hash of the id, since ids may hold
// characters (':') some filesystems refuse and may differ only in case
// on case-insensitive ones.
func fileName(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:20]) + ".json"
}

func (s *FSStore) kind(k Kind) (map[string]Record, error) {
	m, ok := s.m[k]
	if !ok {
		return nil, fmt.Errorf("registry store: unknown kind %q", k)
	}
	return m, nil
}

// Get implements Store.
func (s *FSStore) Get(_ context.Context, k Kind, id string) (Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, err := s.kind(k)
	if err != nil {
		return Record{}, err
	}
	rec, ok := m[id]
	if !ok {
		return Record{}, ErrNotFound
	}
	return rec, nil
}

// List implements Store.
func (s *FSStore) List(ctx context.Context, k Kind) ([]Record, error) {
	s.mu.RLock()
	out := make([]Record, 0, len(s.ids[k]))
	s.mu.RUnlock()
	err := s.Scan(ctx, k, "", func(r Record) bool { out = append(out, r); return true })
	return out, err
}

// Scan implements Store.
func (s *FSStore) Scan(_ context.Context, k Kind, after string, fn func(Record) bool) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, err := s.kind(k)
	if err != nil {
		return err
	}
	ids := s.ids[k]
	i := sort.SearchStrings(ids, after)
	if i < len(ids) && ids[i] == after {
		i++
	}
	for _, id := range ids[i:] {
		if !fn(m[id]) {
			break
		}
	}
	return nil
}

func checkGen(m map[string]Record, id string, prev uint64, put bool) error {
	cur, ok := m[id]
	switch {
	case put && prev == 0 && ok:
		return ErrExists
	case put && prev == 0:
		return nil
	case !ok:
		return ErrNotFound
	case prev != 0 && cur.Generation != prev:
		return ErrConflict
	}
	return nil
}

// Put implements Store.
func (s *FSStore) Put(_ context.Context, rec Record, prev uint64) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.kind(rec.Kind)
	if err != nil {
		return err
	}
	if err := checkGen(m, rec.ID, prev, true); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(s.dir, string(rec.Kind)), fileName(rec.ID), b); err != nil {
		return err
	}
	if _, ok := m[rec.ID]; !ok {
		ids := s.ids[rec.Kind]
		i := sort.SearchStrings(ids, rec.ID)
		s.ids[rec.Kind] = append(ids[:i], append([]string{rec.ID}, ids[i:]...)...)
	}
	m[rec.ID] = rec
	return nil
}

// Delete implements Store.
func (s *FSStore) Delete(_ context.Context, k Kind, id string, prev uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.kind(k)
	if err != nil {
		return err
	}
	if err := checkGen(m, id, prev, false); err != nil {
		return err
	}
	d := filepath.Join(s.dir, string(k))
	if err := os.Remove(filepath.Join(d, fileName(id))); err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	if err := syncDir(d); err != nil {
		return err
	}
	delete(m, id)
	ids := s.ids[k]
	if i := sort.SearchStrings(ids, id); i < len(ids) && ids[i] == id {
		s.ids[k] = append(ids[:i], ids[i+1:]...)
	}
	return nil
}

func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("registry store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("registry store: sync %s: %w", dir, err)
	}
	return nil
}
