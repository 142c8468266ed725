package decisionlog

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

// verifyChunk is how many records one verification round reads.
const verifyChunk = 16384

// verify checks the hash chain of the indexed records past Integrity's
// Verified, behind the indexing so that queries are served first. A chunk
// is split among the CPUs: each part is a ChainVerifier started from the
// hash of the record before it, so the parts together check every link.
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
			ix.checkHead(in)
			return
		}
		to := min(end, in.Verified+verifyChunk)
		lines, err := ix.lines(in.Verified, to)
		if err != nil {
			ix.fail(in.Verified+1, err.Error())
			return
		}
		head, bad, problem := verifyParts(in.Head, in.Verified+1, lines)
		if problem != "" {
			problem = ix.describe(bad, problem)
		}
		ix.mu.Lock()
		if problem == "" {
			ix.integ.Verified, ix.integ.Head = to, head
		} else {
			ix.integ.Verified, ix.integ.Head = bad-1, head
			if ix.integ.Problem == "" || bad < ix.integ.BadSeq {
				ix.integ.BadSeq, ix.integ.Problem = bad, problem
			}
		}
		ix.integ.Checked = time.Now().UTC()
		ix.mu.Unlock()
	}
}

// checkHead compares a fully verified chain's end with the log's head.
func (ix *Index) checkHead(in Integrity) {
	head := ix.log.Head()
	if in.Problem == "" && in.Verified == head.Seq && in.Head.Hash != head.Hash {
		ix.fail(head.Seq, fmt.Sprintf("the record at the head hashes to %s but the log's head is %s (rewritten under the running distributor)", in.Head.Hash, head.Hash))
	}
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

// verifyParts verifies lines (seq first onwards) following prev, in
// parallel parts. It returns the last verified head and, on failure, the
// lowest bad seq and its problem.
func verifyParts(prev Head, first uint64, lines [][]byte) (Head, uint64, string) {
	parts := max(1, min(runtime.GOMAXPROCS(0), len(lines)/512))
	type result struct {
		head    Head
		bad     uint64
		problem string
	}
	res := make([]result, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*len(lines)/parts, (p+1)*len(lines)/parts
		wg.Go(func() {
			v := ChainVerifier{next: first + uint64(lo), prev: prev.Hash}
			if lo > 0 {
				// Start from the hash of the record before the part; if that
				// record is bad, the part before reports it.
				var r Record
				h, _, err := "", []byte(nil), json.Unmarshal(lines[lo-1], &r)
				if err == nil {
					h, _, err = hashRecord(r)
				}
				if err != nil {
					res[p].bad, res[p].problem = first+uint64(lo), "skipped"
					return
				}
				v.prev = h
			}
			for i := lo; i < hi; i++ {
				h, err := v.Line(lines[i])
				if err != nil {
					res[p].bad, res[p].problem = first+uint64(i), err.Error()
					return
				}
				res[p].head = h
			}
		})
	}
	wg.Wait()
	head := prev
	for _, r := range res {
		if r.head.Seq != 0 {
			head = r.head
		}
		if r.problem != "" {
			return head, r.bad, r.problem
		}
	}
	return head, 0, ""
}
