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

	"golang.org/x/mod/sumdb/tlog"
)

const (
	legacyHeadFile = "HEAD" // the hash chain's unsigned head, replaced by checkpointFile
	segSuffix      = ".log"
	segDigits      = 20
	defaultSeg     = 64 << 20
)

// Head is the end of the log: its size (the last seq) and the Merkle tree
// root of records 1..Seq (base64, as in a checkpoint).
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// EmptyRoot is the root of the tree of no records (SHA-256 of nothing).
var EmptyRoot = func() string { h, _ := tlog.TreeHash(0, nil); return h.String() }()

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
	// current segment always stays; 0 keeps everything. The tree's hashes
	// stay, so later checkpoints and proofs still cover the removed part.
	Retention   time.Duration
	RetainBytes int64
	// Key signs checkpoints. Without it the log keeps its tree but signs
	// nothing (and refuses a directory holding a signed checkpoint).
	Key *Key
	// CheckpointEvery signs a checkpoint at this interval when the log
	// grew (0: only on Checkpoint calls and before retention).
	CheckpointEvery time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// Log is an open decision log directory. It is safe for concurrent use.
type Log struct {
	dir  string
	opts Options

	mu      sync.Mutex // commit lock: segment, tree, head
	seg     *os.File
	segSize int64
	head    Head
	tree    *hashStore
	cp      Checkpoint // latest signed
	closed  bool
	stopCP  chan struct{}
	cpDone  chan struct{}

	qmu   sync.Mutex // guards queue
	queue []*pending

	seen   *dedupe // guarded by mu
	anchor Anchor  // end of the part removed by retention; guarded by mu
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

// readCheckpoint reads the stored checkpoint (zero when there is none).
func readCheckpoint(dir string, key *Key) (Checkpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read checkpoint: %w", err)
	}
	if key == nil {
		return Checkpoint{}, errors.New("the directory holds a signed checkpoint but no checkpoint key is configured")
	}
	c, err := OpenCheckpoint(b, key.Verifier)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%s: %w (signed by another key? the configured key is %s)", checkpointFile, err, key.Public)
	}
	return c, nil
}

// Open opens (creating if needed) the log in dir. It recovers from a crash
// during a batch: a torn last line is cut off, and the tree hashes of
// records after the latest signed checkpoint are recomputed from the
// segment files (the hashes up to it were synced before it was signed).
// A log that ends before its checkpoint, or whose tree differs from it,
// is refused: run `meshguard audit verify`.
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
	l := &Log{dir: dir, opts: opts, head: Head{Hash: EmptyRoot}, seen: newDedupe(opts.DedupeWindow)}
	if l.anchor, err = readAnchor(dir); err != nil {
		return nil, fmt.Errorf("decision log %s: %w; run meshguard audit verify", dir, err)
	}
	if l.cp, err = readCheckpoint(dir, opts.Key); err != nil {
		return nil, fmt.Errorf("decision log %s: %w", dir, err)
	}
	segs = retainedSegments(segs, l.anchor.Seq)
	var tail uint64
	var size int64
	if len(segs) == 0 {
		if err := l.openSegment(max(1, l.anchor.Seq+1)); err != nil {
			return nil, err
		}
		tail = l.anchor.Seq
	} else {
		last := segs[len(segs)-1]
		if tail, size, err = recoverTail(filepath.Join(dir, last.name), last.first, opts.Logger); err != nil {
			return nil, fmt.Errorf("decision log %s: %w", dir, err)
		}
		if tail == 0 && len(segs) > 1 {
			// An empty last segment: take the tail from the one before.
			prev := segs[len(segs)-2]
			if tail, _, err = recoverTail(filepath.Join(dir, prev.name), prev.first, opts.Logger); err != nil {
				return nil, fmt.Errorf("decision log %s: %w", dir, err)
			}
		}
		if tail == 0 {
			tail = last.first - 1
		}
		f, err := os.OpenFile(filepath.Join(dir, last.name), os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("decision log: %w", err)
		}
		l.seg, l.segSize = f, size
	}
	if tail < l.cp.Size {
		l.seg.Close()
		return nil, fmt.Errorf("decision log %s: log ends at seq %d but the signed checkpoint covers %d records: %w; run meshguard audit verify", dir, tail, l.cp.Size, ErrTruncated)
	}
	if err := l.openTree(tail); err != nil {
		l.seg.Close()
		return nil, fmt.Errorf("decision log %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyHeadFile)); err == nil {
		opts.Logger.Info("decision log: the hash chain's HEAD file is replaced by signed checkpoints; removing it", "dir", dir)
		_ = os.Remove(filepath.Join(dir, legacyHeadFile))
	}
	// Records written but never acknowledged before a crash are kept; the
	// client's retry of them is dropped by the dedupe window.
	for _, sg := range segs[max(0, len(segs)-2):] {
		l.seen.load(filepath.Join(dir, sg.name))
	}
	l.mu.Lock()
	l.prune()
	l.mu.Unlock()
	if opts.Key != nil && (l.cp.Signed == nil || l.cp.Size != l.head.Seq) {
		if _, err := l.Checkpoint(); err != nil {
			l.Close()
			return nil, err
		}
	}
	if opts.Key != nil && opts.CheckpointEvery > 0 {
		l.stopCP, l.cpDone = make(chan struct{}), make(chan struct{})
		go l.signEvery(opts.CheckpointEvery, l.stopCP, l.cpDone)
	}
	return l, nil
}

// openTree opens the tree hashes and brings them to tail records: the
// hashes up to the signed checkpoint are kept if they give its root, the
// rest are recomputed from the segment files.
func (l *Log) openTree(tail uint64) error {
	t, err := openHashStore(filepath.Join(l.dir, hashFile))
	if err != nil {
		return err
	}
	l.tree = t
	keep := l.cp.Size
	if recordsCovered(t.count) < int64(keep) {
		// The hashes behind the checkpoint are gone: rebuild them, which
		// needs every record.
		keep = 0
	}
	if err := t.truncate(int64(keep)); err != nil {
		return err
	}
	if keep < l.anchor.Seq {
		return fmt.Errorf("the tree hashes of records 1..%d, removed by retention, are missing from %s: %w; run meshguard audit verify", l.anchor.Seq, hashFile, ErrTruncated)
	}
	if l.cp.Size > 0 && keep == l.cp.Size {
		if err := l.checkRoot(); err != nil {
			return err
		}
	}
	if keep < tail {
		l.opts.Logger.Info("decision log: computing tree hashes from the segment files", "from", keep+1, "to", tail)
		l.head = Head{Seq: tail}
		next := keep + 1
		err := l.scan(keep+1, func(seq uint64, line []byte) (bool, error) {
			if seq != next {
				return false, fmt.Errorf("record %d: %w: the segment files skip records %d..%d", next, ErrTruncated, next, seq-1)
			}
			next++
			if err := t.add(int64(seq-1), LeafHash(line)); err != nil {
				return false, err
			}
			if len(t.pend) >= 1<<16 {
				return true, t.flush()
			}
			return true, nil
		})
		if err == nil {
			err = t.flush()
		}
		if err != nil {
			return fmt.Errorf("rebuild tree: %w", err)
		}
		if got := recordsCovered(t.count); uint64(got) != tail {
			return fmt.Errorf("the segment files hold records up to %d of %d: %w; run meshguard audit verify", got, tail, ErrTruncated)
		}
	}
	root, err := tlog.TreeHash(int64(tail), t)
	if err != nil {
		return err
	}
	l.head = Head{Seq: tail, Hash: root.String()}
	if l.cp.Size > 0 && keep < l.cp.Size {
		return l.checkRoot()
	}
	return nil
}

// checkRoot compares the stored tree with the signed checkpoint.
func (l *Log) checkRoot() error {
	root, err := tlog.TreeHash(int64(l.cp.Size), l.tree)
	if err != nil {
		return err
	}
	if root != l.cp.Root {
		return &ChainError{File: checkpointFile, Problem: fmt.Sprintf("the tree of the first %d records hashes to %s but the signed checkpoint says %s: records were rewritten; run meshguard audit verify",
			l.cp.Size, root, l.cp.Root)}
	}
	return nil
}

// recoverTail reads a segment, cuts off an incomplete last line and returns
// the last record's seq and the segment's size.
func recoverTail(path string, first uint64, log *slog.Logger) (uint64, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	if end < len(data) {
		log.Warn("decision log: cutting an incomplete last line (interrupted write)", "file", path, "bytes", len(data)-end)
		if err := os.Truncate(path, int64(end)); err != nil {
			return 0, 0, err
		}
		data = data[:end]
	}
	if end == 0 {
		return 0, 0, nil
	}
	start := bytes.LastIndexByte(data[:end-1], '\n') + 1
	seq, err := parseStored(data[start : end-1])
	if err != nil {
		return 0, 0, fmt.Errorf("%s: last record: %v; run meshguard audit verify", filepath.Base(path), err)
	}
	if seq < first {
		return 0, 0, fmt.Errorf("%s: last record seq %d is below the segment start %d", filepath.Base(path), seq, first)
	}
	return seq, int64(end), nil
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

// Append stores a batch durably: all records are written and the segment
// fsync'd, then their tree hashes are written. Records whose (received_by,
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

// seal is the stored line of r at seq: its canonical form with seq.
func seal(r Record, seq uint64) ([]byte, error) {
	r[FieldSeq] = strconv.AppendUint(nil, seq, 10)
	line, err := r.Canonical()
	delete(r, FieldSeq)
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
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
	seq := l.head.Seq
	buf := make([]byte, 0, 64<<10)
	var ok []*pending
	var keys []dedupeKey // of the records written
	var leaves []tlog.Hash
	for _, p := range group {
		s, n, nk, nl := seq, len(buf), len(keys), len(leaves)
		for _, r := range p.recs {
			k, has := keyOf(r)
			if has && (l.seen.has(k) || slices.Contains(keys[nk:], k)) {
				p.res.Duplicates++
				continue
			}
			line, err := seal(r, s+1)
			if err != nil {
				p.err = fmt.Errorf("decision log: encode record: %w", err)
				break
			}
			buf = append(buf, line...)
			leaves = append(leaves, LeafHash(line[:len(line)-1]))
			s++
			if has {
				keys = append(keys, k)
			}
		}
		if p.err != nil {
			buf, keys, leaves = buf[:n], keys[:nk], leaves[:nl]
			p.res = Appended{}
			continue
		}
		p.res.Accepted = int(s - seq)
		if p.res.Accepted > 0 {
			p.res.First, p.res.Last = seq+1, s
		}
		seq = s
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
	for i, h := range leaves {
		if err := l.tree.add(int64(l.head.Seq)+int64(i), h); err != nil {
			l.tree.pend = l.tree.pend[:0]
			fail(fmt.Errorf("decision log: tree: %w", err))
			return
		}
	}
	root, err := tlog.TreeHash(int64(seq), l.tree)
	if err != nil {
		l.tree.pend = l.tree.pend[:0]
		fail(fmt.Errorf("decision log: tree: %w", err))
		return
	}
	if l.segSize > 0 && l.segSize+int64(len(buf)) > l.opts.SegmentBytes {
		if err := l.openSegment(l.head.Seq + 1); err != nil {
			l.tree.pend = l.tree.pend[:0]
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
		l.tree.pend = l.tree.pend[:0]
		fail(fmt.Errorf("decision log: write: %w", werr))
		return
	}
	l.segSize += int64(n)
	// The records are durable; their tree hashes follow them (a crash
	// before these reach the disk is repaired from the segments on open).
	if err := l.tree.flush(); err != nil {
		l.opts.Logger.Error("decision log: tree hashes not written; the log stops taking records until restarted", "err", err)
		l.closed = true
		fail(err)
		return
	}
	l.head = Head{Seq: seq, Hash: root.String()}
	for _, k := range keys {
		l.seen.add(k)
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

// Close stops signing and closes the files.
func (l *Log) Close() error {
	l.mu.Lock()
	stop := l.stopCP
	l.stopCP = nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-l.cpDone
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seg == nil {
		return nil
	}
	var err error
	if l.opts.Key != nil && !l.closed && l.cp.Size != l.head.Seq {
		// A clean shutdown leaves a checkpoint of everything stored.
		_, err = l.signLocked()
	}
	l.closed = true
	err = errors.Join(err, l.seg.Close())
	l.seg = nil
	if l.tree != nil {
		err = errors.Join(err, l.tree.f.Close())
	}
	return err
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
	segs = retainedSegments(segs, l.Anchor().Seq)
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

// Query selects stored records in seq order. Zero fields do not filter.
type Query struct {
	Since, Until time.Time // inclusive bounds on the record's time
	Subject      string
	Decision     string
	// Filter selects as the console's search does (rule, path, device,
	// proxy, uploader, revision; '*' suffix for a prefix); it is applied
	// with the fields above.
	Filter   Filter
	AfterSeq uint64 // only records with seq > AfterSeq (paging)
	Limit    int    // default 100, at most 10000
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

// Matches reports whether a stored line is selected by q's filters (not
// its paging), for QueryEach and for other log backends.
func (q Query) Matches(line []byte) bool {
	// Exact names only: a client field that merely folds to "decision"
	// must never stand in for it.
	if q.Subject != "" && !storedIs(line, "subject", q.Subject) || q.Decision != "" && !storedIs(line, "decision", q.Decision) {
		return false
	}
	if !q.Since.IsZero() || !q.Until.IsZero() {
		t, err := time.Parse(time.RFC3339Nano, storedString(line, "time"))
		if err != nil || (!q.Since.IsZero() && t.Before(q.Since)) || (!q.Until.IsZero() && t.After(q.Until)) {
			return false
		}
	}
	return q.Filter == (Filter{}) || q.Filter.matches(line)
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
	if err := q.Filter.Validate(); err != nil {
		return 0, err
	}
	var lastSeq, next uint64
	n := 0
	err := l.scan(q.AfterSeq+1, func(seq uint64, line []byte) (bool, error) {
		if !json.Valid(line) {
			return false, fmt.Errorf("decision log: seq %d unreadable", seq)
		}
		if !q.Matches(line) {
			return true, nil
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
