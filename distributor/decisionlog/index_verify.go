package decisionlog

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// verifyChunk is how many records one verification round reads.
const verifyChunk = 16384

// verify checks the records past Integrity's Verified against the
// Merkle tree, behind the indexing so that queries are served first: each
// line must be canonical with its seq, and the tree hashes recomputed from
// it (tlog.StoredHashesForRecordHash, combining with hashes verified
// before) must be the stored ones the distributor proves from. Once the
// verified part reaches the latest signed checkpoint, the stored tree's
// root at its size is compared with the signed root.
func (ix *Index) verify(ctx context.Context) {
	ix.verMu.Lock()
	defer ix.verMu.Unlock()
	for ctx.Err() == nil {
		ix.mu.RLock()
		in, n := ix.integ, ix.n
		ix.mu.RUnlock()
		end := n
		if in.Problem != "" {
			end = min(end, in.BadSeq-1)
		}
		if in.Verified >= end {
			ix.checkCheckpoint(in)
			return
		}
		to := min(end, in.Verified+verifyChunk)
		lines, err := ix.lines(in.Verified, to)
		if err != nil {
			ix.fail(in.Verified+1, err.Error())
			return
		}
		good, bad, problem := verifyTreeWith(ix.log.TreeReader, in.Verified+1, lines)
		if problem != "" {
			problem = ix.describe(bad, problem)
		}
		var root string
		if r, err := tlog.TreeHash(int64(good), ix.log.TreeReader(good)); err == nil {
			root = r.String()
		}
		ix.mu.Lock()
		ix.integ.Verified, ix.integ.Head = good, Head{Seq: good, Hash: root}
		if problem != "" && (ix.integ.Problem == "" || bad < ix.integ.BadSeq) {
			ix.integ.BadSeq, ix.integ.Problem = bad, problem
		}
		ix.integ.Checked = time.Now().UTC()
		ix.mu.Unlock()
		if problem != "" {
			return
		}
	}
}

// checkCheckpoint compares the latest signed checkpoint with the verified
// tree once the verified part covers it.
func (ix *Index) checkCheckpoint(in Integrity) {
	cp := ix.log.Latest()
	if cp.Signed == nil || in.Problem != "" || in.Verified < cp.Size || in.Checkpoint != nil && in.Checkpoint.Size == cp.Size {
		return
	}
	root, err := tlog.TreeHash(int64(cp.Size), ix.log.TreeReader(cp.Size))
	if err != nil {
		ix.fail(cp.Size, err.Error())
		return
	}
	if root != cp.Root {
		ix.fail(cp.Size, fmt.Sprintf("the verified tree of %d records hashes to %s but the signed checkpoint says %s", cp.Size, root, cp.Root))
		return
	}
	ix.mu.Lock()
	ix.integ.Checkpoint = reportOf(cp)
	ix.mu.Unlock()
}

// describe names the segment file and line of seq in a problem.
func (ix *Index) describe(seq uint64, problem string) string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	k := sort.Search(len(ix.segStart), func(j int) bool { return ix.segStart[j] > seq-1 }) - 1
	if k < 0 || ix.offs[seq-1] < 0 {
		return fmt.Sprintf("seq %d: %s", seq, problem)
	}
	return fmt.Sprintf("%s line %d: %s", ix.segNames[k], seq-ix.segStart[k], problem)
}

// lines reads the stored lines of positions [from, to).
func (ix *Index) lines(from, to uint64) ([][]byte, error) {
	out := make([][]byte, 0, to-from)
	for i := from; i < to; {
		ix.mu.RLock()
		off := ix.offs[i]
		k := sort.Search(len(ix.segStart), func(j int) bool { return ix.segStart[j] > i }) - 1
		end := to
		if k+1 < len(ix.segStart) {
			end = min(end, ix.segStart[k+1])
		}
		if off < 0 || k < 0 {
			ix.mu.RUnlock()
			return nil, fmt.Errorf("seq %d is missing from the segment files", i+1)
		}
		// Lines of one segment are contiguous: one read for the run.
		j := i + 1
		for j < end && ix.offs[j] == ix.offs[j-1]+int64(ix.lens[j-1])+1 {
			j++
		}
		last := j - 1
		size := ix.offs[last] + int64(ix.lens[last]) - off
		lens := append([]uint32(nil), ix.lens[i:j]...)
		name := ix.segNames[k]
		ix.mu.RUnlock()
		f, err := ix.file(name)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		for _, n := range lens {
			out = append(out, buf[:n:n])
			buf = buf[min(len(buf), int(n)+1):]
		}
		i = j
	}
	return out, nil
}

// verifyTreeWith checks lines (seq first onwards) against the log's stored
// tree (tree reads the stored hashes of the tree of a size). Parsing, the canonical form and leaf hashes are checked in
// parallel parts; the tree hashes in order. It returns the last good seq
// and, on failure, the first bad seq and its problem.
func verifyTreeWith(tree func(size uint64) tlog.HashReader, first uint64, lines [][]byte) (uint64, uint64, string) {
	leaves := make([]tlog.Hash, len(lines))
	bad := make([]string, len(lines))
	parts := max(1, min(runtime.GOMAXPROCS(0), len(lines)/512))
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*len(lines)/parts, (p+1)*len(lines)/parts
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				seq, err := parseStored(lines[i])
				switch {
				case err != nil:
					bad[i] = err.Error()
				case seq != first+uint64(i):
					bad[i] = fmt.Sprintf("found seq %d at the place of seq %d (records deleted, reordered or duplicated)", seq, first+uint64(i))
				}
				leaves[i] = LeafHash(lines[i])
			}
		})
	}
	wg.Wait()
	last := first - 1 + uint64(len(lines))
	lo, hi := tlog.StoredHashIndex(0, int64(first-1)), tlog.StoredHashCount(int64(last))
	stored, err := tree(last).ReadHashes(indexRange(lo, hi))
	if err != nil {
		return first - 1, first, err.Error()
	}
	file := tree(first - 1)
	// Hashes before lo were verified before; those from lo on are checked
	// here before anything reads them.
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= lo {
				out[i] = stored[x-lo]
				continue
			}
			h, err := file.ReadHashes([]int64{x})
			if err != nil {
				return nil, err
			}
			out[i] = h[0]
		}
		return out, nil
	})
	for i := range lines {
		if bad[i] != "" {
			return first - 1 + uint64(i), first + uint64(i), bad[i]
		}
		n := int64(first-1) + int64(i)
		hs, err := tlog.StoredHashesForRecordHash(n, leaves[i], r)
		if err != nil {
			return uint64(n), uint64(n) + 1, err.Error()
		}
		at := tlog.StoredHashIndex(0, n) - lo
		for j, h := range hs {
			if stored[at+int64(j)] != h {
				what := "the record's leaf hash"
				if j > 0 {
					what = "a tree hash the record completes"
				}
				return uint64(n), uint64(n) + 1, fmt.Sprintf("%s differs from the stored tree: the record was edited after it was stored (or %s was changed)", what, hashFile)
			}
		}
	}
	return last, 0, ""
}

// indexRange is lo, lo+1, ..., hi-1.
func indexRange(lo, hi int64) []int64 {
	out := make([]int64, 0, hi-lo)
	for x := lo; x < hi; x++ {
		out = append(out, x)
	}
	return out
}
