package decisionlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// anchorFile records where a log pruned by retention starts: the seq and
// hash of the last record removed, so the chain of what is kept still
// verifies from there. Like HEAD it is unsigned; a signed checkpoint of a
// verifiable log (issue 16) takes its place.
const anchorFile = "ANCHOR"

// Anchor returns the end of the pruned part (seq 0 and the genesis hash
// for a log never pruned).
func readAnchor(dir string) (Head, error) {
	b, err := os.ReadFile(filepath.Join(dir, anchorFile))
	if errors.Is(err, os.ErrNotExist) {
		return Head{Hash: GenesisHash}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("read anchor: %w", err)
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil || h.Seq == 0 || len(h.Hash) != len(GenesisHash) {
		return Head{}, errors.New("anchor file is corrupt")
	}
	return h, nil
}

// retainedSegments drops from segs those wholly at or before the anchor
// (left by a crash between writing the anchor and removing them).
func retainedSegments(segs []segment, anchor Head) []segment {
	for len(segs) > 1 && segs[1].first <= anchor.Seq+1 {
		segs = segs[1:]
	}
	return segs
}

// Anchor is where the kept part of the log starts (after retention).
func (l *Log) Anchor() Head {
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
	segs = retainedSegments(segs, l.anchor)
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
		b, _ := json.Marshal(last)
		if err := writeAtomic(l.dir, anchorFile, append(b, '\n')); err != nil {
			l.opts.Logger.Error("decision log: retention: anchor", "err", err)
			return
		}
		if err := os.Remove(path); err != nil {
			l.opts.Logger.Error("decision log: retention", "segment", s.name, "err", err)
			return
		}
		l.anchor = last
		total -= sizes[i]
		l.opts.Logger.Info("decision log: retention removed a segment", "segment", s.name, "through_seq", last.Seq)
	}
}

// lastRecord returns the chain head and line of a segment's last record.
func lastRecord(path string) (Head, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Head{}, nil, err
	}
	end := len(data)
	for end > 0 && data[end-1] == '\n' {
		end--
	}
	start := end
	for start > 0 && data[start-1] != '\n' {
		start--
	}
	_, st, err := parseStored(data[start:end])
	if err != nil {
		return Head{}, nil, err
	}
	return Head{Seq: st.Seq, Hash: st.Hash}, data[start:end], nil
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
