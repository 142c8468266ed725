package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ChainError says exactly where a log stops being trustworthy.
type ChainError struct {
	File    string // segment file name (or "checkpoint", or a stream name)
	Line    int    // 1-based line in File, 0 when not about a line
	Seq     uint64 // the sequence number expected at that place
	Problem string
}

func (e *ChainError) Error() string {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: at seq %d: %s", e.File, e.Line, e.Seq, e.Problem)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Problem)
	}
}

// ErrTruncated is wrapped by errors about a log that ends before a
// checkpoint it signed.
var ErrTruncated = errors.New("decision log truncated")

// parseStored reads a stored line's seq by exact member name. The line
// must be the canonical (RFC 8785) encoding of the record it holds:
// anything else (duplicate names, re-escaped text, reordered members) was
// not written by the log.
func parseStored(line []byte) (uint64, error) {
	var rec Record
	if err := json.Unmarshal(line, &rec); err != nil {
		return 0, fmt.Errorf("unreadable record (edited or corrupted): %v", err)
	}
	var seq uint64
	if v, ok := rec[FieldSeq]; !ok || json.Unmarshal(v, &seq) != nil || seq == 0 {
		return 0, errors.New("record has no valid seq (edited or corrupted)")
	}
	canon, err := rec.Canonical()
	if err != nil {
		return 0, fmt.Errorf("record cannot be canonicalised: %v", err)
	}
	if !bytes.Equal(canon, line) {
		return 0, errors.New("record is not in the canonical form (RFC 8785) the log writes (edited)")
	}
	return seq, nil
}

// TreeVerifier rebuilds the Merkle tree of a log from its stored lines,
// one after another, in O(log n) memory, and remembers the roots at the
// sizes it is asked about.
type TreeVerifier struct {
	f     *frontier
	next  uint64
	want  map[uint64]bool
	roots map[uint64]tlog.Hash
	// stored, when set, is the log's tree.hash being compared up to
	// storedUpTo records (what the distributor proves from).
	stored     *bufio.Reader
	storedUpTo uint64
	// Count is the number of records verified so far.
	Count uint64
}

// NewTreeVerifier expects the log to start after anchor (the zero anchor
// is the start of the log) and records the tree roots at sizes.
func NewTreeVerifier(anchor Anchor, sizes ...uint64) (*TreeVerifier, error) {
	v := &TreeVerifier{f: newFrontier(), next: anchor.Seq + 1, want: map[uint64]bool{}, roots: map[uint64]tlog.Hash{}}
	if anchor.Seq > 0 {
		for _, h := range anchor.Frontier {
			v.f.hashes[h.Index] = h.Hash
		}
		v.f.n = int64(anchor.Seq)
		root, err := v.f.root()
		if err != nil {
			return nil, fmt.Errorf("retention anchor: %w", err)
		}
		v.roots[anchor.Seq] = root
	} else {
		v.roots[0], _ = tlog.TreeHash(0, nil)
	}
	for _, s := range sizes {
		v.want[s] = true
	}
	return v, nil
}

// Head is the size and root of the tree verified so far.
func (v *TreeVerifier) Head() Head {
	r, _ := v.f.root()
	return Head{Seq: v.next - 1, Hash: r.String()}
}

// Root is the tree root at size, if the verifier passed it.
func (v *TreeVerifier) Root(size uint64) (tlog.Hash, bool) {
	if size == v.next-1 {
		r, err := v.f.root()
		return r, err == nil
	}
	r, ok := v.roots[size]
	return r, ok
}

// Line verifies one stored line (without its newline) and adds it to the
// tree. Errors describe the problem; the caller adds the file and line.
func (v *TreeVerifier) Line(line []byte) error {
	seq, err := parseStored(line)
	if err != nil {
		return err
	}
	if seq != v.next {
		if seq > v.next {
			return fmt.Errorf("found seq %d: records %d..%d are missing (deleted) or out of order", seq, v.next, seq-1)
		}
		return fmt.Errorf("found seq %d again or out of order (reordered or duplicated records)", seq)
	}
	hs, err := v.f.add(LeafHash(line))
	if err != nil {
		return err
	}
	if v.stored != nil && seq <= v.storedUpTo {
		var h tlog.Hash
		for i := range hs {
			if _, err := io.ReadFull(v.stored, h[:]); err != nil || h != hs[i] {
				v.stored = nil
				return fmt.Errorf("%s does not hold the tree hashes of this record (the distributor's proofs from it would fail)", hashFile)
			}
		}
	}
	if v.want[seq] {
		r, _ := v.f.root()
		v.roots[seq] = r
	}
	v.next++
	v.Count++
	return nil
}

// VerifyReader verifies every line read from r, named name in errors. It
// reports an incomplete last line (a torn or cut write) as truncation.
func (v *TreeVerifier) VerifyReader(name string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			if line[len(line)-1] != '\n' {
				return &ChainError{File: name, Line: lineNo, Seq: v.next,
					Problem: fmt.Sprintf("incomplete last line (%d bytes without newline): %v", len(line), ErrTruncated)}
			}
			if verr := v.Line(line[:len(line)-1]); verr != nil {
				return &ChainError{File: name, Line: lineNo, Seq: v.next, Problem: verr.Error()}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: read: %w", name, err)
		}
	}
}

// Check holds the rebuilt tree to a checkpoint (name says whose, in
// errors): the log must reach its size, and the tree of that many records
// must have its root. This is consistency with the checkpoint proved from
// the records themselves.
func (v *TreeVerifier) Check(name string, c Checkpoint) error {
	got := v.next - 1
	if got < c.Size {
		return &ChainError{File: name, Problem: fmt.Sprintf("the log ends at seq %d but the checkpoint covers %d records: records %d..%d were removed from the tail: %v",
			got, c.Size, got+1, c.Size, ErrTruncated)}
	}
	root, ok := v.Root(c.Size)
	if !ok {
		return &ChainError{File: name, Problem: fmt.Sprintf("the checkpoint covers %d records, before the part of the log that was read", c.Size)}
	}
	if root != c.Root {
		return &ChainError{File: name, Problem: fmt.Sprintf("the tree of the first %d records hashes to %s but the checkpoint says %s: records 1..%d were rewritten, or the log forked",
			c.Size, root, c.Root, c.Size)}
	}
	return nil
}

// CheckpointReport is what a verification found about one checkpoint.
type CheckpointReport struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   string `json:"root"`
}

func reportOf(c Checkpoint) *CheckpointReport {
	return &CheckpointReport{Origin: c.Origin, Size: c.Size, Root: c.Root.String()}
}

// Report summarises a successful verification.
type Report struct {
	// Pruned is how many records retention removed before the first kept.
	Pruned   uint64 `json:"pruned,omitempty"`
	Records  uint64 `json:"records"`
	Segments int    `json:"segments"`
	Head     Head   `json:"head"`
	// Checkpoint is the log's latest signed checkpoint, verified against
	// the key and the rebuilt tree (nil when no key was given).
	Checkpoint *CheckpointReport `json:"checkpoint,omitempty"`
	// Earlier are the caller's earlier checkpoints the log is consistent with.
	Earlier []CheckpointReport `json:"earlier,omitempty"`
}

// VerifyOptions say what a log is held to.
type VerifyOptions struct {
	// Key is the log's verifier key; without it the stored checkpoint is
	// not checked (the rest of the log is).
	Key note.Verifier
	// Earlier are signed checkpoints the verifier kept from before: the
	// log must still hold each of them as a prefix.
	Earlier [][]byte
}

// VerifyDir verifies a log directory offline, with nothing from the
// distributor: every segment in order, each line canonical with the next
// seq, the Merkle tree rebuilt from the lines and compared with the stored
// tree hashes, the signed checkpoint and the earlier checkpoints given.
// The first problem is returned as a *ChainError.
func VerifyDir(dir string, opts VerifyOptions) (Report, error) {
	segs, err := segments(dir)
	if err != nil {
		return Report{}, err
	}
	anchor, err := readAnchor(dir)
	if err != nil {
		return Report{}, &ChainError{File: anchorFile, Problem: err.Error()}
	}
	var earlier []Checkpoint
	for i, b := range opts.Earlier {
		if opts.Key == nil {
			return Report{}, errors.New("an earlier checkpoint needs the log's verifier key to be checked")
		}
		c, err := OpenCheckpoint(b, opts.Key)
		if err != nil {
			return Report{}, fmt.Errorf("earlier checkpoint %d: %w", i+1, err)
		}
		earlier = append(earlier, c)
	}
	var cp Checkpoint
	if opts.Key != nil {
		b, err := os.ReadFile(filepath.Join(dir, checkpointFile))
		if err != nil {
			return Report{}, &ChainError{File: checkpointFile, Problem: fmt.Sprintf("no signed checkpoint to check: %v", err)}
		}
		if cp, err = OpenCheckpoint(b, opts.Key); err != nil {
			return Report{}, &ChainError{File: checkpointFile, Problem: err.Error()}
		}
	}
	sizes := []uint64{cp.Size}
	for _, c := range earlier {
		sizes = append(sizes, c.Size)
	}
	v, err := NewTreeVerifier(anchor, sizes...)
	if err != nil {
		return Report{}, &ChainError{File: anchorFile, Problem: err.Error()}
	}
	// The stored hashes are compared up to the checkpoint (past it a
	// crash may have left them for the distributor to recompute).
	if hf, err := os.Open(filepath.Join(dir, hashFile)); err == nil && cp.Size > anchor.Seq {
		defer hf.Close()
		if _, err := hf.Seek(tlog.StoredHashIndex(0, int64(anchor.Seq))*tlog.HashSize, io.SeekStart); err == nil {
			v.stored, v.storedUpTo = bufio.NewReaderSize(hf, 64<<10), cp.Size
		}
	}
	segs = retainedSegments(segs, anchor.Seq)
	var torn *TornTailError
	for i, s := range segs {
		if v.next != s.first {
			// A whole segment gone or renamed: point at it before reading.
			if s.first > v.next {
				return Report{}, &ChainError{File: s.name, Seq: v.next,
					Problem: fmt.Sprintf("segment starts at seq %d but seq %d was expected: records %d..%d are missing (a segment was deleted)", s.first, v.next, v.next, s.first-1)}
			}
			return Report{}, &ChainError{File: s.name, Seq: v.next,
				Problem: fmt.Sprintf("segment starts at seq %d but seq %d was expected (segments overlap or were renamed)", s.first, v.next)}
		}
		f, err := os.Open(filepath.Join(dir, s.name))
		if err != nil {
			return Report{}, err
		}
		var src io.Reader = f
		if i == len(segs)-1 {
			// An unterminated last line of the last segment is a write the
			// crash interrupted; Open cuts it. Verify what precedes it.
			if n, complete, terr := tornBytes(f); terr == nil && n > 0 {
				torn = &TornTailError{File: s.name, Offset: complete, Bytes: n}
				src = io.LimitReader(f, complete)
			}
		}
		err = v.VerifyReader(s.name, src)
		f.Close()
		if err != nil {
			return Report{}, err
		}
	}
	rep := Report{Records: v.Count, Segments: len(segs), Head: v.Head(), Pruned: anchor.Seq}
	addTorn := func(err error) error {
		var ce *ChainError
		if torn != nil && errors.As(err, &ce) {
			ce.Problem += fmt.Sprintf("; %s ends in an incomplete last line of %d bytes at offset %d, so acknowledged records were cut", torn.File, torn.Bytes, torn.Offset)
		}
		return err
	}
	if opts.Key != nil {
		if err := v.Check(checkpointFile, cp); err != nil {
			return Report{}, addTorn(err)
		}
		rep.Checkpoint = reportOf(cp)
	}
	for i, c := range earlier {
		if err := v.Check(fmt.Sprintf("earlier checkpoint %d", i+1), c); err != nil {
			return Report{}, addTorn(err)
		}
		rep.Earlier = append(rep.Earlier, *reportOf(c))
	}
	if torn != nil {
		torn.Head = rep.Head
		return rep, torn
	}
	return rep, nil
}

// TornTailError reports a log that is intact but whose last segment ends
// in an interrupted write (bytes after the last complete record, never
// acknowledged). It is recoverable, not tampering: Open cuts the bytes
// off. The Report returned with it is valid.
type TornTailError struct {
	File   string // the last segment
	Offset int64  // where the incomplete line starts
	Bytes  int64  // its length
	Head   Head   // the verified end of the log
}

func (e *TornTailError) Error() string {
	return fmt.Sprintf("%s: %d bytes after offset %d are an interrupted write after seq %d (recoverable: the distributor cuts them off when it starts)",
		e.File, e.Bytes, e.Offset, e.Head.Seq)
}

// tornBytes measures an unterminated last line of f and leaves f at its
// start.
func tornBytes(f *os.File) (n, complete int64, err error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, 0, err
	}
	size := fi.Size()
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		start := max(0, end-int64(len(buf)))
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			complete = start + int64(i) + 1
			break
		}
		end = start
	}
	_, err = f.Seek(0, io.SeekStart)
	return size - complete, complete, err
}
