package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	headFile   = "HEAD"
	segSuffix  = ".log"
	segDigits  = 20
	defaultSeg = 64 << 20
)

// Options tune a Log.
type Options struct {
	// SegmentBytes starts a new segment file once the current one reaches
	// this size (default 64 MiB).
	SegmentBytes int64
	// Logger receives recovery notes (default slog.Default()).
	Logger *slog.Logger
	// DedupeWindow is how many recent (uploader, decision_id) pairs are
	// remembered to drop retried records (default 1<<18; negative: off).
	DedupeWindow int
	// Retention removes whole segments whose last record arrived longer
	// ago; RetainBytes removes the oldest segments beyond that total. The
	// current segment always stays; 0 keeps everything.
	Retention   time.Duration
	RetainBytes int64
	// Now is the clock (tests).
	Now func() time.Time
}

// Log is an open decision log directory. It is safe for concurrent use.
type Log struct {
	dir  string
	opts Options

	mu      sync.Mutex // commit lock: segment, head
	seg     *os.File
	segSize int64
	head    Head
	closed  bool

	qmu   sync.Mutex // guards queue
	queue []*pending

	seen   *dedupe // guarded by mu
	anchor Head    // end of the part removed by retention; guarded by mu
}

type segment struct {
	name  string
	first uint64
}

// segments lists the segment files of dir in seq order.
func segments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	var out []segment
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, segSuffix) || e.IsDir() {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(n, segSuffix), 10, 64)
		if err != nil || len(n) != segDigits+len(segSuffix) {
			return nil, fmt.Errorf("decision log: unexpected file %s in %s", n, dir)
		}
		out = append(out, segment{name: n, first: first})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

func segName(first uint64) string { return fmt.Sprintf("%0*d%s", segDigits, first, segSuffix) }

func readHead(dir string) (Head, error) {
	b, err := os.ReadFile(filepath.Join(dir, headFile))
	if err != nil {
		return Head{}, fmt.Errorf("read head: %w", err)
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return Head{}, fmt.Errorf("head file is corrupt: %w", err)
	}
	return h, nil
}

// Open opens (creating if needed) the log in dir. It recovers from a crash
// during a batch: a torn last line is cut off and records fsync'd after the
// previous HEAD update are adopted. A log that ends before its HEAD, or has
// segments but no HEAD, is refused: run `meshguard audit verify`.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSeg
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	segs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = 1 << 18
	}
	l := &Log{dir: dir, opts: opts, head: Head{Hash: GenesisHash}, seen: newDedupe(opts.DedupeWindow)}
	if l.anchor, err = readAnchor(dir); err != nil {
		return nil, fmt.Errorf("decision log %s: %w; run meshguard audit verify", dir, err)
	}
	segs = retainedSegments(segs, l.anchor)
	head, herr := readHead(dir)
	if herr != nil && !errors.Is(herr, os.ErrNotExist) {
		return nil, fmt.Errorf("decision log %s: %w", dir, herr)
	}
	if len(segs) == 0 {
		if herr == nil && head.Seq != 0 {
			return nil, fmt.Errorf("decision log %s: HEAD is at seq %d but there are no segments: %w", dir, head.Seq, ErrTruncated)
		}
		if err := l.openSegment(1); err != nil {
			return nil, err
		}
		return l, l.writeHead()
	}
	if herr != nil {
		return nil, fmt.Errorf("decision log %s: segments exist but HEAD is missing (deleted?); run meshguard audit verify", dir)
	}
	last := segs[len(segs)-1]
	tail, size, err := recoverTail(filepath.Join(dir, last.name), last.first, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("decision log %s: %w", dir, err)
	}
	if tail.Seq == 0 && len(segs) > 1 {
		// An empty last segment: take the tail from the one before.
		prev := segs[len(segs)-2]
		if tail, _, err = recoverTail(filepath.Join(dir, prev.name), prev.first, opts.Logger); err != nil {
			return nil, fmt.Errorf("decision log %s: %w", dir, err)
		}
	}
	if tail.Seq == 0 {
		tail.Hash = GenesisHash
	}
	switch {
	case tail.Seq < head.Seq:
		return nil, fmt.Errorf("decision log %s: log ends at seq %d but HEAD is seq %d: %w; run meshguard audit verify", dir, tail.Seq, head.Seq, ErrTruncated)
	case tail.Seq == head.Seq && tail.Hash != head.Hash:
		return nil, fmt.Errorf("decision log %s: last record hash differs from HEAD (tail rewritten); run meshguard audit verify", dir)
	case tail.Seq > head.Seq:
		opts.Logger.Warn("decision log: adopting records written after the last HEAD update", "from", head.Seq+1, "to", tail.Seq)
	}
	l.head = tail
	f, err := os.OpenFile(filepath.Join(dir, last.name), os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	l.seg, l.segSize = f, size
	// Records written but never acknowledged before a crash are kept; the
	// client's retry of them is dropped by the dedupe window.
	for _, sg := range segs[max(0, len(segs)-2):] {
		l.seen.load(filepath.Join(dir, sg.name))
	}
	l.prune()
	return l, l.writeHead()
}

// recoverTail reads a segment, cuts off an incomplete last line and returns
// the last record's seq and verified hash, and the segment's size.
func recoverTail(path string, first uint64, log *slog.Logger) (Head, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Head{}, 0, err
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	if end < len(data) {
		log.Warn("decision log: cutting an incomplete last line (interrupted write)", "file", path, "bytes", len(data)-end)
		if err := os.Truncate(path, int64(end)); err != nil {
			return Head{}, 0, err
		}
		data = data[:end]
	}
	if end == 0 {
		return Head{}, 0, nil
	}
	start := bytes.LastIndexByte(data[:end-1], '\n') + 1
	line := data[start : end-1]
	rec, s, err := parseStored(line)
	if err != nil {
		return Head{}, 0, fmt.Errorf("%s: last record: %v; run meshguard audit verify", filepath.Base(path), err)
	}
	h, _, err := hashRecord(rec)
	if err != nil || h != s.Hash {
		return Head{}, 0, fmt.Errorf("%s: last record's hash does not match its content; run meshguard audit verify", filepath.Base(path))
	}
	if s.Seq < first {
		return Head{}, 0, fmt.Errorf("%s: last record seq %d is below the segment start %d", filepath.Base(path), s.Seq, first)
	}
	return Head{Seq: s.Seq, Hash: h}, int64(end), nil
}

func (l *Log) openSegment(first uint64) error {
	f, err := os.OpenFile(filepath.Join(l.dir, segName(first)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	if l.seg != nil {
		l.seg.Close()
	}
	l.seg, l.segSize = f, 0
	return syncDir(l.dir)
}

// writeHead records the head atomically (temp file, fsync, rename, dir fsync).
func (l *Log) writeHead() error {
	b, _ := json.Marshal(l.head)
	tmp := filepath.Join(l.dir, headFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("decision log: write head: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("decision log: write head: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("decision log: sync head: %w", err)
	}
	f.Close()
	if err := os.Rename(tmp, filepath.Join(l.dir, headFile)); err != nil {
		return fmt.Errorf("decision log: write head: %w", err)
	}
	// No directory fsync: if the rename is lost in a crash the older HEAD
	// is behind the fsync'd segment, and Open adopts the extra records.
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("decision log: sync %s: %w", dir, err)
	}
	return nil
}

// Appended is the outcome of one Append.
type Appended struct {
	// First and Last are the seqs of the stored records (0 when every
	// record was a duplicate).
	First, Last uint64
	// Accepted records were stored; Duplicates were dropped because a
	// record with the same received_by and decision_id is already in the
	// log (a client retrying a batch whose answer it never got).
	Accepted, Duplicates int
}

// Append chains and durably stores a batch: all records are written, the
// segment fsync'd, then HEAD advanced. Records whose (received_by,
// decision_id) was already stored are dropped, not stored twice.
// Concurrent appends are group-committed: whoever gets the commit lock
// writes every queued batch with one fsync.
func (l *Log) Append(recs []Record) (Appended, error) {
	if len(recs) == 0 {
		return Appended{}, errors.New("decision log: empty batch")
	}
	p := &pending{recs: recs, done: make(chan struct{})}
	l.qmu.Lock()
	l.queue = append(l.queue, p)
	l.qmu.Unlock()
	l.mu.Lock()
	select {
	case <-p.done: // committed by another appender
	default:
		l.qmu.Lock()
		group := l.queue
		l.queue = nil
		l.qmu.Unlock()
		l.commit(group)
	}
	l.mu.Unlock()
	return p.res, p.err
}

// pending is a batch waiting for group commit.
type pending struct {
	recs []Record
	res  Appended
	err  error
	done chan struct{}
}

// commit writes a group of batches; l.mu is held.
func (l *Log) commit(group []*pending) {
	defer func() {
		for _, p := range group {
			close(p.done)
		}
	}()
	if l.closed {
		for _, p := range group {
			p.err = errors.New("decision log: closed")
		}
		return
	}
	head := l.head
	buf := make([]byte, 0, 64<<10)
	var ok []*pending
	var keys []dedupeKey // of the records written
	for _, p := range group {
		h, n, nk := head, len(buf), len(keys)
		for _, r := range p.recs {
			k, has := keyOf(r)
			if has && (l.seen.has(k) || slices.Contains(keys[nk:], k)) {
				p.res.Duplicates++
				continue
			}
			line, hash, err := seal(r, h.Seq+1, h.Hash)
			if err != nil {
				p.err = fmt.Errorf("decision log: encode record: %w", err)
				break
			}
			buf = append(buf, line...)
			h = Head{Seq: h.Seq + 1, Hash: hash}
			if has {
				keys = append(keys, k)
			}
		}
		if p.err != nil {
			buf, keys = buf[:n], keys[:nk]
			p.res = Appended{}
			continue
		}
		p.res.Accepted = int(h.Seq - head.Seq)
		if p.res.Accepted > 0 {
			p.res.First, p.res.Last = head.Seq+1, h.Seq
		}
		head = h
		ok = append(ok, p)
	}
	if len(buf) == 0 {
		return
	}
	fail := func(err error) {
		for _, p := range ok {
			p.res, p.err = Appended{}, err
		}
	}
	if l.segSize > 0 && l.segSize+int64(len(buf)) > l.opts.SegmentBytes {
		if err := l.openSegment(l.head.Seq + 1); err != nil {
			fail(err)
			return
		}
		defer l.prune() // a segment was completed
	}
	n, werr := l.seg.Write(buf)
	if werr == nil {
		werr = l.seg.Sync()
	}
	if werr != nil {
		// Undo a partial write so the file ends on the old head.
		_ = l.seg.Truncate(l.segSize)
		fail(fmt.Errorf("decision log: write: %w", werr))
		return
	}
	l.segSize += int64(n)
	l.head = head
	for _, k := range keys {
		l.seen.add(k)
	}
	if err := l.writeHead(); err != nil {
		// The records are durable; a stale HEAD is repaired on open.
		l.opts.Logger.Error("decision log: HEAD update failed", "err", err)
	}
}

// Head is the last stored record.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Writable reports whether the log can take writes (used by /readyz).
func (l *Log) Writable() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("decision log closed")
	}
	f, err := os.CreateTemp(l.dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("decision log not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// Close closes the current segment.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.seg.Close()
}

// scan calls fn for each stored line with seq in [from, head.Seq], where the
// head is taken when scan starts (lines beyond it may be half written).
func (l *Log) scan(from uint64, fn func(seq uint64, line []byte) (bool, error)) error {
	head := l.Head()
	if from == 0 {
		from = 1
	}
	segs, err := segments(l.dir)
	if err != nil {
		return err
	}
	segs = retainedSegments(segs, l.Anchor())
	for i, s := range segs {
		if i+1 < len(segs) && segs[i+1].first <= from {
			continue // wholly before from
		}
		if s.first > head.Seq {
			return nil
		}
		f, err := os.Open(filepath.Join(l.dir, s.name))
		if err != nil {
			return err
		}
		br := bufio.NewReaderSize(f, 64<<10)
		seq := s.first
		var long []byte
		for seq <= head.Seq {
			// ReadSlice avoids a copy per line; only a line longer than the
			// buffer is assembled (and fn may not keep the slice anyway).
			line, err := br.ReadSlice('\n')
			for err == bufio.ErrBufferFull {
				long = append(long[:0], line...)
				var more []byte
				more, err = br.ReadSlice('\n')
				long = append(long, more...)
				for err == bufio.ErrBufferFull {
					more, err = br.ReadSlice('\n')
					long = append(long, more...)
				}
				line = long
			}
			if err == io.EOF && len(line) == 0 {
				break
			}
			if err != nil && err != io.EOF {
				f.Close()
				return err
			}
			if seq >= from {
				more, ferr := fn(seq, bytes.TrimSuffix(line, []byte{'\n'}))
				if ferr != nil || !more {
					f.Close()
					return ferr
				}
			}
			seq++
		}
		f.Close()
	}
	return nil
}

// WriteLog streams the stored lines from seq 1 up to head (taken from
// Head beforehand), for remote verification.
func (l *Log) WriteLog(w io.Writer, head Head) error {
	return l.scan(1, func(seq uint64, line []byte) (bool, error) {
		if seq > head.Seq {
			return false, nil
		}
		if _, err := w.Write(line); err != nil {
			return false, err
		}
		_, err := w.Write([]byte{'\n'})
		return true, err
	})
}

// Query selects stored records. Zero fields do not filter.
type Query struct {
	Since, Until time.Time // inclusive bounds on the record's time
	Subject      string
	Decision     string
	AfterSeq     uint64 // only records with seq > AfterSeq (paging)
	Limit        int    // default 100, at most 10000
}

// QueryResult is the answer to a Query: stored records in seq order.
type QueryResult struct {
	Records []json.RawMessage `json:"records"`
	// Next is the AfterSeq for the next page, 0 when the log is exhausted.
	Next uint64 `json:"next,omitempty"`
}

// Query scans the log for matching records, collecting them.
func (l *Log) Query(q Query) (QueryResult, error) {
	res := QueryResult{Records: []json.RawMessage{}}
	next, err := l.QueryEach(q, func(line []byte) error {
		res.Records = append(res.Records, json.RawMessage(bytes.Clone(line)))
		return nil
	})
	res.Next = next
	return res, err
}

// QueryEach scans the log for matching records and hands each stored line
// to emit as it is found (the line is only valid during the call), so an
// answer can be streamed without holding it. It returns the AfterSeq of
// the next page (0 when the log is exhausted).
func (l *Log) QueryEach(q Query, emit func(line []byte) error) (uint64, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.Limit > 10000 {
		q.Limit = 10000
	}
	var lastSeq, next uint64
	n := 0
	err := l.scan(q.AfterSeq+1, func(seq uint64, line []byte) (bool, error) {
		if !json.Valid(line) {
			return false, fmt.Errorf("decision log: seq %d unreadable", seq)
		}
		// Exact names only: a client field that merely folds to "decision"
		// must never stand in for it.
		if q.Subject != "" && !storedIs(line, "subject", q.Subject) || q.Decision != "" && !storedIs(line, "decision", q.Decision) {
			return true, nil
		}
		if !q.Since.IsZero() || !q.Until.IsZero() {
			t, err := time.Parse(time.RFC3339Nano, storedString(line, "time"))
			if err != nil || (!q.Since.IsZero() && t.Before(q.Since)) || (!q.Until.IsZero() && t.After(q.Until)) {
				return true, nil
			}
		}
		if n == q.Limit {
			next = lastSeq
			return false, nil
		}
		lastSeq = seq
		n++
		return true, emit(line)
	})
	return next, err
}
