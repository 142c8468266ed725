package decisionlog

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrNoKey is returned when a checkpoint is asked of a log without a key.
var ErrNoKey = errors.New("decision log: no checkpoint key configured")

// Checkpoint signs a checkpoint of the log as it is now and stores it as
// the latest. The tree hashes it covers are synced first, so a checkpoint
// never commits to hashes a crash could lose.
func (l *Log) Checkpoint() (Checkpoint, error) {
	if l.opts.Key == nil {
		return Checkpoint{}, ErrNoKey
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.signLocked()
}

func (l *Log) signLocked() (Checkpoint, error) {
	if l.closed {
		return Checkpoint{}, errors.New("decision log: closed")
	}
	if err := l.tree.f.Sync(); err != nil {
		return Checkpoint{}, fmt.Errorf("decision log: sync %s: %w", hashFile, err)
	}
	root, err := tlog.ParseHash(l.head.Hash)
	if err != nil {
		return Checkpoint{}, err
	}
	c := Checkpoint{Origin: l.opts.Key.Signer.Name(), Size: l.head.Seq, Root: root}
	signed, err := note.Sign(&note.Note{Text: c.Body()}, l.opts.Key.Signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("decision log: sign checkpoint: %w", err)
	}
	c.Signed = signed
	if err := writeAtomic(l.dir, checkpointFile, signed); err != nil {
		return Checkpoint{}, fmt.Errorf("decision log: write checkpoint: %w", err)
	}
	l.cp = c
	return c, nil
}

// signEvery signs a checkpoint at each tick when the log grew.
func (l *Log) signEvery(every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		if !l.closed && l.cp.Size != l.head.Seq {
			if _, err := l.signLocked(); err != nil {
				l.opts.Logger.Error("decision log: checkpoint", "err", err)
			}
		}
		l.mu.Unlock()
	}
}

// Latest is the latest signed checkpoint (zero Size and no Signed bytes
// before the first).
func (l *Log) Latest() Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cp
}

// Key is the log's checkpoint key (nil without one).
func (l *Log) Key() *Key { return l.opts.Key }

// InclusionProof is the RFC 6962 audit path of one record in the tree of
// Size records: what tlog.CheckRecord (or any RFC 9162 verifier) needs,
// with the record's stored line to recompute its leaf hash from.
type InclusionProof struct {
	Seq      uint64      `json:"seq"`
	Size     uint64      `json:"size"`
	LeafHash tlog.Hash   `json:"leaf_hash"`
	Proof    []tlog.Hash `json:"proof"`
	// Record is the stored line (RFC 8785 canonical JSON), as a string.
	Record string `json:"record"`
}

// ProveInclusion proves record seq in the tree of size records (0: the
// current head). line is the stored record read from the segment files.
func (l *Log) ProveInclusion(seq, size uint64, line []byte) (InclusionProof, error) {
	head := l.Head().Seq
	if size == 0 {
		size = head
	}
	if seq == 0 || seq > size || size > head {
		return InclusionProof{}, fmt.Errorf("seq %d in a tree of %d records: %w (the log holds %d)", seq, size, ErrNoRecord, head)
	}
	p, err := tlog.ProveRecord(int64(size), int64(seq-1), l.tree.reader(int64(size)))
	if err != nil {
		return InclusionProof{}, fmt.Errorf("decision log: inclusion proof: %w", err)
	}
	return InclusionProof{Seq: seq, Size: size, LeafHash: LeafHash(line), Proof: p, Record: string(line)}, nil
}

// Check verifies the proof against a checkpoint with tlog.CheckRecord,
// the leaf hash recomputed from the record.
func (p InclusionProof) Check(c Checkpoint) error {
	if p.Size != c.Size {
		return fmt.Errorf("%w: the proof is for a tree of %d records, the checkpoint covers %d", ErrInconsistent, p.Size, c.Size)
	}
	leaf := LeafHash([]byte(p.Record))
	if leaf != p.LeafHash {
		return fmt.Errorf("the record's leaf hash is %s, the proof says %s: the record was changed", leaf, p.LeafHash)
	}
	seq, err := parseStored([]byte(p.Record))
	if err != nil {
		return err
	}
	if seq != p.Seq {
		return fmt.Errorf("the record holds seq %d, the proof is for seq %d", seq, p.Seq)
	}
	if err := tlog.CheckRecord(p.Proof, int64(c.Size), c.Root, int64(p.Seq-1), leaf); err != nil {
		return fmt.Errorf("record %d is not in the checkpoint's tree of %d records (root %s): %v", p.Seq, c.Size, c.Root, err)
	}
	return nil
}

// ConsistencyProof proves that the tree of From records is a prefix of the
// tree of Size records (RFC 6962 section 2.1.2).
type ConsistencyProof struct {
	From  uint64      `json:"from"`
	Size  uint64      `json:"size"`
	Proof []tlog.Hash `json:"proof"`
}

// ProveConsistency proves the tree of from records a prefix of the tree
// of size records (0: the current head).
func (l *Log) ProveConsistency(from, size uint64) (ConsistencyProof, error) {
	head := l.Head().Seq
	if size == 0 {
		size = head
	}
	if size > head || from > size {
		return ConsistencyProof{}, fmt.Errorf("consistency of %d with %d records: the log holds %d: %w", from, size, head, ErrNoRecord)
	}
	out := ConsistencyProof{From: from, Size: size, Proof: []tlog.Hash{}}
	if from == 0 || from == size {
		return out, nil
	}
	p, err := tlog.ProveTree(int64(size), int64(from), l.tree.reader(int64(size)))
	if err != nil {
		return ConsistencyProof{}, fmt.Errorf("decision log: consistency proof: %w", err)
	}
	out.Proof = p
	return out, nil
}

// TreeReader reads the stored tree hashes of the first n records (for
// verifiers inside the distributor).
func (l *Log) TreeReader(n uint64) tlog.HashReader { return l.tree.reader(int64(n)) }
