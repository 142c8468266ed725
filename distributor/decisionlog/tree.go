package decisionlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"golang.org/x/mod/sumdb/tlog"
)

// The log is an RFC 6962 / RFC 9162 Merkle tree over its stored lines:
// record seq s is leaf s-1, its leaf hash SHA-256(0x00 || line) where
// line is the record's RFC 8785 canonical JSON (with seq and the
// distributor's received_* fields) without the newline. All tree maths is
// golang.org/x/mod/sumdb/tlog's: the tree's hashes are stored in the
// order tlog.StoredHashIndex gives, 32 bytes each, in hashFile.
const hashFile = "tree.hash"

// LeafHash is the Merkle tree leaf hash of a stored line (RFC 6962
// section 2.1: SHA-256 of a 0x00 byte and the line).
func LeafHash(line []byte) tlog.Hash { return tlog.RecordHash(line) }

// hashStore is the stored hashes file. The hashes of a tree of n records
// occupy indexes [0, tlog.StoredHashCount(n)) and never change once
// written, so readers of a smaller tree need no lock.
type hashStore struct {
	f     *os.File
	count int64       // hashes in the file; guarded by the log's commit lock
	pend  []tlog.Hash // computed during a commit, after count
}

func openHashStore(path string) (*hashStore, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return &hashStore{f: f, count: st.Size() / tlog.HashSize}, nil
}

// recordsCovered is the largest n whose whole tree is stored in count hashes.
func recordsCovered(count int64) int64 {
	// StoredHashCount is increasing; n <= count always.
	return int64(sort.Search(int(count)+1, func(n int) bool { return tlog.StoredHashCount(int64(n)) > count })) - 1
}

// truncate keeps at most the hashes of the first n records (and cuts a
// torn hash at the end).
func (s *hashStore) truncate(n int64) error {
	c := min(tlog.StoredHashCount(n), s.count)
	if err := s.f.Truncate(c * tlog.HashSize); err != nil {
		return fmt.Errorf("decision log: truncate %s: %w", hashFile, err)
	}
	s.count = c
	return nil
}

// ReadHashes implements tlog.HashReader over the file and the hashes of
// the commit in progress.
func (s *hashStore) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= s.count {
			p := x - s.count
			if p >= int64(len(s.pend)) {
				return nil, fmt.Errorf("decision log: tree hash %d is not stored", x)
			}
			out[i] = s.pend[p]
			continue
		}
		if _, err := s.f.ReadAt(out[i][:], x*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("decision log: read %s: %w", hashFile, err)
		}
	}
	return out, nil
}

// add computes and queues the stored hashes of record index n (the
// records before it are stored or queued).
func (s *hashStore) add(n int64, leaf tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(n, leaf, s)
	if err != nil {
		return err
	}
	s.pend = append(s.pend, hs...)
	return nil
}

// flush writes the queued hashes.
func (s *hashStore) flush() error {
	if len(s.pend) == 0 {
		return nil
	}
	buf := make([]byte, 0, len(s.pend)*tlog.HashSize)
	for _, h := range s.pend {
		buf = append(buf, h[:]...)
	}
	if _, err := s.f.WriteAt(buf, s.count*tlog.HashSize); err != nil {
		s.pend = s.pend[:0]
		return fmt.Errorf("decision log: write %s: %w", hashFile, err)
	}
	s.count += int64(len(s.pend))
	s.pend = s.pend[:0]
	return nil
}

// reader is a lock-free reader of the first n records' hashes.
func (s *hashStore) reader(n int64) tlog.HashReader {
	limit := tlog.StoredHashCount(n)
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i := 0; i < len(idx); {
			// One read for each run of consecutive indexes.
			j := i + 1
			for j < len(idx) && idx[j] == idx[j-1]+1 {
				j++
			}
			if idx[i] < 0 || idx[j-1] >= limit {
				return nil, fmt.Errorf("decision log: tree hash %d is outside the tree of %d records", idx[j-1], n)
			}
			buf := make([]byte, (j-i)*tlog.HashSize)
			if _, err := s.f.ReadAt(buf, idx[i]*tlog.HashSize); err != nil {
				if errors.Is(err, io.EOF) {
					return nil, fmt.Errorf("decision log: %s is shorter than the tree of %d records", hashFile, n)
				}
				return nil, fmt.Errorf("decision log: read %s: %w", hashFile, err)
			}
			for k := i; k < j; k++ {
				copy(out[k][:], buf[(k-i)*tlog.HashSize:])
			}
			i = j
		}
		return out, nil
	})
}

// frontier is an in-memory tlog.HashReader that keeps only the hashes a
// growing tree still needs: those of its complete subtrees, which
// tlog.TreeHash reads and the next tlog.StoredHashesForRecordHash combines
// with. It lets a verifier rebuild the tree of a log of any length in
// O(log n) memory.
type frontier struct {
	n      int64 // records added
	hashes map[int64]tlog.Hash
	added  int64 // since the last prune
}

func newFrontier() *frontier { return &frontier{hashes: map[int64]tlog.Hash{}} }

// ReadHashes implements tlog.HashReader.
func (f *frontier) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := f.hashes[x]
		if !ok {
			return nil, fmt.Errorf("tree hash %d is not held (the log before it was not read)", x)
		}
		out[i] = h
	}
	return out, nil
}

// add appends the next record's leaf hash and returns the stored hashes
// it produced (what hashFile holds next).
func (f *frontier) add(leaf tlog.Hash) ([]tlog.Hash, error) {
	hs, err := tlog.StoredHashesForRecordHash(f.n, leaf, f)
	if err != nil {
		return nil, err
	}
	base := tlog.StoredHashIndex(0, f.n)
	for i, h := range hs {
		f.hashes[base+int64(i)] = h
	}
	f.n++
	if f.added++; f.added >= 4096 {
		f.prune()
	}
	return hs, nil
}

// prune drops the hashes the tree no longer needs.
func (f *frontier) prune() {
	f.added = 0
	keep := map[int64]tlog.Hash{}
	_, _ = tlog.TreeHash(f.n, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		for _, x := range idx {
			keep[x] = f.hashes[x]
		}
		return make([]tlog.Hash, len(idx)), nil
	}))
	f.hashes = keep
}

// root is the tree hash of the records added so far.
func (f *frontier) root() (tlog.Hash, error) { return tlog.TreeHash(f.n, f) }

// frontierOf reads from r the hashes a tree of n records needs to grow
// (an anchor for a log whose first n records were removed).
func frontierOf(n int64, r tlog.HashReader) (map[int64]tlog.Hash, error) {
	var idx []int64
	_, _ = tlog.TreeHash(n, tlog.HashReaderFunc(func(x []int64) ([]tlog.Hash, error) {
		idx = append(idx, x...)
		return make([]tlog.Hash, len(x)), nil
	}))
	hs, err := r.ReadHashes(idx)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]tlog.Hash, len(idx))
	for i, x := range idx {
		out[x] = hs[i]
	}
	return out, nil
}
