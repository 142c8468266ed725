package decisionlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// anchorFile records where a log pruned by retention starts: the seq of
// the last record removed and the tree hashes a tree of that many records
// grows from (its complete subtrees), so the tree of what is kept can
// still be rebuilt from the kept segments and held to the signed
// checkpoints. It need not be trusted: a wrong anchor gives roots no
// checkpoint signed.
const anchorFile = "ANCHOR"

// Anchor is the end of the part of the log retention removed.
type Anchor struct {
	Seq      uint64     `json:"seq"`
	Frontier []NodeHash `json:"frontier,omitempty"`
}

// NodeHash is one stored tree hash with its tlog storage index.
type NodeHash struct {
	Index int64     `json:"index"`
	Hash  tlog.Hash `json:"hash"`
}

func readAnchor(dir string) (Anchor, error) {
	b, err := os.ReadFile(filepath.Join(dir, anchorFile))
	if errors.Is(err, os.ErrNotExist) {
		return Anchor{}, nil
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("read anchor: %w", err)
	}
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil || a.Seq == 0 {
		return Anchor{}, errors.New("anchor file is corrupt")
	}
	f := newFrontier()
	for _, h := range a.Frontier {
		f.hashes[h.Index] = h.Hash
	}
	if _, err := tlog.TreeHash(int64(a.Seq), f); err != nil {
		return Anchor{}, fmt.Errorf("anchor file is corrupt: %v", err)
	}
	return a, nil
}

// retainedSegments drops from segs those wholly at or before the anchor
// (left by a crash between writing the anchor and removing them).
func retainedSegments(segs []segment, anchor uint64) []segment {
	for len(segs) > 1 && segs[1].first <= anchor+1 {
		segs = segs[1:]
	}
	return segs
}

// Anchor is where the kept part of the log starts (after retention).
func (l *Log) Anchor() Anchor {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.anchor
}

// prune removes the oldest whole segments beyond the retention age or
// size, never the current one; l.mu is held. The anchor is written before
// a segment goes, so a crash in between leaves an extra segment, not a
// gap.
func (l *Log) prune() {
	if l.opts.Retention <= 0 && l.opts.RetainBytes <= 0 {
		return
	}
	segs, err := segments(l.dir)
	if err != nil {
		l.opts.Logger.Error("decision log: retention", "err", err)
		return
	}
	segs = retainedSegments(segs, l.anchor.Seq)
	var total int64
	sizes := make([]int64, len(segs))
	for i, s := range segs {
		if fi, err := os.Stat(filepath.Join(l.dir, s.name)); err == nil {
			sizes[i] = fi.Size()
			total += sizes[i]
		}
	}
	now := l.opts.Now()
	for i, s := range segs[:len(segs)-1] {
		path := filepath.Join(l.dir, s.name)
		last, lastLine, err := lastRecord(path)
		if err != nil {
			l.opts.Logger.Error("decision log: retention stopped at an unreadable segment", "segment", s.name, "err", err)
			return
		}
		old := false
		if l.opts.Retention > 0 {
			at, perr := time.Parse(time.RFC3339Nano, storedString(lastLine, FieldReceivedAt))
			old = perr == nil && now.Sub(at) > l.opts.Retention
		}
		if !old && !(l.opts.RetainBytes > 0 && total > l.opts.RetainBytes) {
			return
		}
		if l.opts.Key != nil && l.cp.Size < last {
			// Retention never removes records no checkpoint covers.
			if _, err := l.signLocked(); err != nil {
				l.opts.Logger.Error("decision log: retention: checkpoint", "err", err)
				return
			}
		}
		fr, err := frontierOf(int64(last), l.tree)
		if err != nil {
			l.opts.Logger.Error("decision log: retention: anchor", "err", err)
			return
		}
		a := Anchor{Seq: last}
		for i, h := range fr {
			a.Frontier = append(a.Frontier, NodeHash{Index: i, Hash: h})
		}
		sort.Slice(a.Frontier, func(i, j int) bool { return a.Frontier[i].Index < a.Frontier[j].Index })
		b, _ := json.Marshal(a)
		if err := writeAtomic(l.dir, anchorFile, append(b, '\n')); err != nil {
			l.opts.Logger.Error("decision log: retention: anchor", "err", err)
			return
		}
		if err := os.Remove(path); err != nil {
			l.opts.Logger.Error("decision log: retention", "segment", s.name, "err", err)
			return
		}
		l.anchor = a
		total -= sizes[i]
		l.opts.Logger.Info("decision log: retention removed a segment", "segment", s.name, "through_seq", last)
	}
}

// lastRecord returns the seq and line of a segment's last record.
func lastRecord(path string) (uint64, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	end := len(data)
	for end > 0 && data[end-1] == '\n' {
		end--
	}
	start := end
	for start > 0 && data[start-1] != '\n' {
		start--
	}
	seq, err := parseStored(data[start:end])
	if err != nil {
		return 0, nil, err
	}
	return seq, data[start:end], nil
}

// writeAtomic writes name in dir through a synced temporary file.
func writeAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}
