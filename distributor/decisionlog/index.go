package decisionlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/contract"
)

// IndexOptions tune an Index.
type IndexOptions struct {
	// Poll is how often the index looks for new records (default 500ms).
	Poll time.Duration
	// WaitLag: a query waits for the index to catch up with the log when it
	// is at most this many records behind (default 50000); further behind
	// (a large log being indexed after a start) it answers at once from
	// what is indexed and says so.
	WaitLag uint64
	// Logger receives indexing problems (default slog.Default()).
	Logger *slog.Logger
}

// Index is the Searcher over a Log's segment files: an in-memory columnar
// index (time, decision, rule set, bundle revision, and interned subject,
// device, path, proxy and uploader ids, plus each record's file position),
// about 50 bytes a record plus each distinct value once. It follows the log
// by reading the segment files up to the log's head, so it needs nothing
// from the write path, and it verifies the hash chain as it reads.
type Index struct {
	log  *Log
	opts IndexOptions
	stop context.CancelFunc
	done chan struct{}

	feedMu  sync.Mutex // one reader of the files at a time; guards the fields below
	segs    []segment
	cur     int    // index in segs of the segment being read, -1 before the first
	segName string // its name
	off     int64  // file offset of the next line in segs[cur]
	inSeg   uint64 // lines of segs[cur] read
	logged  string // last indexing problem logged

	verMu sync.Mutex // one verifier at a time

	mu        sync.RWMutex // guards everything below
	n         uint64       // records indexed: seq 1..n
	times     []int64      // record "time", unix ns; noTime when absent
	dec       []uint8
	rset      []uint32
	rev       []uint64
	str       [numStrCols][]uint32
	offs      []int64 // line offset in its segment; -1: missing from the files
	lens      []uint32
	segStart  []uint64 // position (seq-1) of the first record of each indexed segment
	segNames  []string
	dicts     [numStrCols]*dict
	rules     *dict // counts: records naming the rule
	rsets     *dict // rule-id lists joined with NUL
	rsetRules [][]uint32
	revCounts map[uint64]uint64
	decCounts [numDecisions]uint64
	integ     Integrity

	filesMu sync.Mutex
	files   map[string]*os.File
}

// String columns held as dict ids, with their record field.
const (
	colSubject = iota
	colDevice
	colPath
	colProxy
	colUploader
	numStrCols
)

var (
	strColField = [numStrCols]string{"subject", "device_id", "path", "proxy", FieldReceivedBy}
	strColName  = [numStrCols]string{"subject", "device", "path", "proxy", "uploader"}
)

// Decision codes: the index of the value in contract.RecordDecisions
// (allow, deny, dry-run-deny, error, unavailable and gap first, whatever values the contract
// adds after them); decOther is an unreadable record or a placeholder.
const (
	decAllow uint8 = iota
	decDeny
	decDryRun
	decError
	decUnavailable
	decGap
)

const (
	numDecisions       = 16
	decOther     uint8 = numDecisions - 1
)

var decisionNames = func() (out [numDecisions]string) {
	for i, d := range contract.RecordDecisions[:min(len(contract.RecordDecisions), int(decOther))] {
		out[i] = d
	}
	if out[decAllow] != DecisionAllow || out[decDeny] != DecisionDeny || out[decDryRun] != DecisionDryRun || out[decError] != DecisionError ||
		out[decUnavailable] != DecisionUnavailable || out[decGap] != DecisionGap {
		panic("decisionlog: contract.RecordDecisions must start with allow, deny, dry-run-deny, error, unavailable, gap")
	}
	out[decOther] = "unreadable"
	return out
}()

func decisionCode(s string) uint8 {
	for i, n := range decisionNames[:decOther] {
		if s == n && n != "" {
			return uint8(i)
		}
	}
	return decOther
}

const (
	noTime     = math.MinInt64
	indexChunk = 4096
	maxLine    = 64 << 20
)

// OpenIndex indexes l and keeps following it until Close. The first
// indexing runs in the background; Integrity and every answer say how far
// it got.
func OpenIndex(l *Log, opts IndexOptions) *Index {
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.WaitLag == 0 {
		opts.WaitLag = 50000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ix := &Index{log: l, opts: opts, cur: -1, done: make(chan struct{}), rules: newDict(), rsets: newDict(),
		revCounts: map[uint64]uint64{}, files: map[string]*os.File{}}
	for c := range ix.dicts {
		ix.dicts[c] = newDict()
	}
	ix.integ = Integrity{Method: "RFC 6962 Merkle tree", Head: Head{Hash: EmptyRoot}}
	ctx, cancel := context.WithCancel(context.Background())
	ix.stop = cancel
	go ix.run(ctx)
	return ix
}

// Close stops following the log and closes the files.
func (ix *Index) Close() error {
	ix.stop()
	<-ix.done
	ix.filesMu.Lock()
	defer ix.filesMu.Unlock()
	for n, f := range ix.files {
		f.Close()
		delete(ix.files, n)
	}
	return nil
}

func (ix *Index) run(ctx context.Context) {
	defer close(ix.done)
	t := time.NewTicker(ix.opts.Poll)
	defer t.Stop()
	for {
		_ = ix.catchUp(ctx)
		ix.verify(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CatchUp indexes and verifies every record up to the log's current head.
func (ix *Index) CatchUp(ctx context.Context) error {
	err := ix.catchUp(ctx)
	ix.verify(ctx)
	return err
}

func (ix *Index) catchUp(ctx context.Context) error {
	ix.feedMu.Lock()
	defer ix.feedMu.Unlock()
	err := ix.feed(ctx, ix.log.Head())
	if err != nil && err.Error() != ix.logged && ctx.Err() == nil {
		ix.logged = err.Error()
		ix.opts.Logger.Warn("decision log index", "err", err)
	}
	return err
}

// settle lets a query see the records appended just before it, unless the
// index is far behind (then the answer says how far it got).
func (ix *Index) settle(ctx context.Context) {
	head := ix.log.Head().Seq
	ix.mu.RLock()
	n := ix.n
	ix.mu.RUnlock()
	if n < head && head-n <= ix.opts.WaitLag {
		_ = ix.catchUp(ctx)
	}
	ix.mu.RLock()
	n, verified, bad := ix.n, ix.integ.Verified, ix.integ.Problem != ""
	ix.mu.RUnlock()
	if !bad && verified < n && n-verified <= ix.opts.WaitLag {
		ix.verify(ctx)
	}
}

// feed reads segment files until seq head is indexed; feedMu is held.
func (ix *Index) feed(ctx context.Context, head Head) error {
	for ix.next() <= head.Seq {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := ix.pickSegment(); err != nil {
			return err
		}
		if ix.cur < 0 {
			return ix.missing(head.Seq, "no segment files hold them")
		}
		s := ix.segs[ix.cur]
		if s.first > ix.next() {
			// A gap before this segment: keep positions equal to seqs.
			ix.placeholders(s.first-ix.next(), fmt.Sprintf("records %d..%d are missing from the segment files", ix.next(), s.first-1))
			continue
		}
		limit := head.Seq
		if ix.cur+1 < len(ix.segs) && ix.segs[ix.cur+1].first-1 < limit {
			limit = ix.segs[ix.cur+1].first - 1
		}
		read, err := ix.readChunk(s, min(limit, ix.next()+indexChunk-1))
		if err != nil {
			return err
		}
		if read == 0 && ix.next() <= limit {
			if ix.cur+1 < len(ix.segs) {
				ix.placeholders(limit-ix.next()+1, fmt.Sprintf("segment %s ends at seq %d but the next starts at %d: records are missing", s.name, ix.next()-1, limit+1))
				continue
			}
			return ix.missing(head.Seq, fmt.Sprintf("segment %s ends before the head", s.name))
		}
	}
	return nil
}

func (ix *Index) next() uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n + 1
}

// missing notes that the files end before the head; feedMu is held.
func (ix *Index) missing(head uint64, why string) error {
	err := fmt.Errorf("records %d..%d cannot be indexed: %s", ix.next(), head, why)
	ix.fail(ix.next(), err.Error())
	return err
}

// fail records an integrity problem; the one at the lowest seq is kept.
func (ix *Index) fail(seq uint64, problem string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.integ.Problem == "" || seq < ix.integ.BadSeq {
		ix.integ.BadSeq, ix.integ.Problem = seq, problem
	}
}

// pickSegment makes segs[cur] the segment that holds (or, after a gap,
// follows) the next seq; feedMu is held.
func (ix *Index) pickSegment() error {
	next := ix.next()
	if ix.cur >= 0 && (ix.cur+1 >= len(ix.segs) || ix.segs[ix.cur+1].first > next) {
		// Still inside the current segment, unless it ran out and a
		// newer segment appeared since the list was read.
		if ix.cur+1 < len(ix.segs) || !ix.atEOF() {
			return nil
		}
	}
	segs, err := segments(ix.log.dir)
	if err != nil {
		return err
	}
	ix.segs = segs
	pick := -1
	for i, s := range segs {
		if s.first <= next {
			pick = i
		} else if pick < 0 {
			pick = i // the first segment after a gap
		}
	}
	if pick < 0 {
		ix.cur = -1
		return nil
	}
	if ix.cur >= 0 && segs[pick].name == ix.segName {
		ix.cur = pick
		return nil
	}
	ix.cur, ix.off, ix.inSeg = pick, 0, 0
	s := segs[pick]
	ix.segName = s.name
	if s.first < next {
		// Segments overlap (renamed or tampered): skip to the next position
		// so positions stay seqs; the chain check reports the seq mismatch.
		return ix.skipLines(s, next-s.first)
	}
	return nil
}

// atEOF reports whether segs[cur] has no complete line past off.
func (ix *Index) atEOF() bool {
	st, err := os.Stat(filepath.Join(ix.log.dir, ix.segs[ix.cur].name))
	return err != nil || st.Size() <= ix.off
}

func (ix *Index) skipLines(s segment, n uint64) error {
	f, err := os.Open(filepath.Join(ix.log.dir, s.name))
	if err != nil {
		return fmt.Errorf("decision log index: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for ; n > 0; n-- {
		line, err := br.ReadSlice('\n')
		ix.off += int64(len(line))
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = br.ReadSlice('\n')
			ix.off += int64(len(line))
		}
		if err != nil {
			return nil
		}
		ix.inSeg++
	}
	return nil
}

// entry is what the index keeps of one record.
type entry struct {
	time  int64
	dec   uint8
	rules []string
	rev   uint64
	str   [numStrCols]string
	off   int64
	len   uint32
}

// parseEntry reads the indexed fields of a stored line, by exact key as
// the chain check does; an unreadable line becomes decOther without time.
// It is the plain form of scanEntry, used where scanEntry gives up.
func parseEntry(line []byte) entry {
	e := entry{time: noTime, dec: decOther}
	var r Record
	if json.Unmarshal(line, &r) != nil {
		return e
	}
	if s, ok := r.str("time"); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil && t.Year() > 1677 && t.Year() < 2262 {
			e.time = t.UnixNano()
		}
	}
	if s, ok := r.str("decision"); ok {
		e.dec = decisionCode(s)
	}
	if v, ok := r["rule_ids"]; ok && json.Unmarshal(v, &e.rules) != nil {
		e.rules = nil
	}
	if v, ok := r["bundle_revision"]; ok && json.Unmarshal(v, &e.rev) != nil {
		e.rev = 0
	}
	for c, f := range strColField {
		e.str[c], _ = r.str(f)
	}
	return e
}

// readChunk indexes the complete lines of s from off up to seq last and
// returns how many it read; feedMu is held.
func (ix *Index) readChunk(s segment, last uint64) (int, error) {
	f, err := os.Open(filepath.Join(ix.log.dir, s.name))
	if err != nil {
		return 0, fmt.Errorf("decision log index: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(ix.off, io.SeekStart); err != nil {
		return 0, fmt.Errorf("decision log index: %w", err)
	}
	br := bufio.NewReaderSize(f, 256<<10)
	next := ix.next()
	es := make([]entry, 0, min(indexChunk, last-next+1))
	off := ix.off
	for seq := next; seq <= last; seq++ {
		line, err := br.ReadBytes('\n')
		if err != nil || len(line) > maxLine {
			break // the end of what is written (or a torn last line)
		}
		line = line[:len(line)-1]
		e, ok := scanEntry(line)
		if !ok {
			e = parseEntry(line)
		}
		e.off, e.len = off, uint32(len(line))
		off += int64(len(line)) + 1
		es = append(es, e)
	}
	ix.off = off
	ix.inSeg += uint64(len(es))
	ix.commit(es, s.name)
	return len(es), nil
}

// placeholders indexes n records that are not in the files.
func (ix *Index) placeholders(n uint64, problem string) {
	ix.fail(ix.next(), problem)
	for n > 0 {
		k := min(n, indexChunk)
		es := make([]entry, k)
		for i := range es {
			es[i] = entry{time: noTime, dec: decOther, off: -1}
		}
		ix.commit(es, "")
		n -= k
	}
}

// commit appends entries (from segment seg) to the columns.
func (ix *Index) commit(es []entry, seg string) {
	if len(es) == 0 {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seg != "" && (len(ix.segNames) == 0 || ix.segNames[len(ix.segNames)-1] != seg) {
		ix.segStart = append(ix.segStart, ix.n)
		ix.segNames = append(ix.segNames, seg)
	}
	var key strings.Builder
	for _, e := range es {
		ix.times = append(ix.times, e.time)
		ix.dec = append(ix.dec, e.dec)
		ix.decCounts[e.dec]++
		ix.rev = append(ix.rev, e.rev)
		ix.revCounts[e.rev]++
		for c := range ix.str {
			ix.str[c] = append(ix.str[c], ix.dicts[c].add(e.str[c]))
		}
		key.Reset()
		for i, r := range e.rules {
			if i > 0 {
				key.WriteByte(0)
			}
			key.WriteString(r)
		}
		before := len(ix.rsets.vals)
		id := ix.rsets.add(key.String())
		if int(id) == before {
			ids := make([]uint32, 0, len(e.rules))
			for _, r := range e.rules {
				ids = append(ids, ix.rules.addName(r))
			}
			if len(ids) == 0 {
				ids = append(ids, ix.rules.addName(NoRule))
			}
			ix.rsetRules = append(ix.rsetRules, ids)
		}
		for _, r := range ix.rsetRules[id] {
			ix.rules.counts[r]++
		}
		ix.rset = append(ix.rset, id)
		ix.offs = append(ix.offs, e.off)
		ix.lens = append(ix.lens, e.len)
	}
	ix.n += uint64(len(es))
}

// addName interns v without counting a record.
func (d *dict) addName(v string) uint32 {
	id := d.add(v)
	d.counts[id]--
	return id
}

// Integrity implements Searcher.
func (ix *Index) Integrity() Integrity {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.integ
}

// Indexed is the number of records indexed (seq 1..Indexed).
func (ix *Index) Indexed() uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

// matcher is a Filter compiled against the dictionaries; mu is read-held
// while it is used.
type matcher struct {
	all         bool // no condition
	timed       bool // since or till set
	dec         int  // -1: any
	rev         *uint64
	since, till int64
	rsets       bitset
	str         [numStrCols]bitset
}

func (ix *Index) compile(f Filter) matcher {
	m := matcher{dec: -1, since: math.MinInt64, till: math.MaxInt64, rev: f.Revision}
	m.all = f == Filter{}
	if f.Decision != "" {
		m.dec = int(decisionCode(f.Decision))
	}
	if !f.Since.IsZero() {
		m.since, m.timed = clampNano(f.Since), true
	}
	if !f.Until.IsZero() {
		m.till, m.timed = clampNano(f.Until), true
	}
	if f.Rule != "" {
		rules := ix.rules.match(f.Rule)
		m.rsets = make(bitset, (len(ix.rsetRules)+63)/64)
		for id, rs := range ix.rsetRules {
			for _, r := range rs {
				if rules.has(r) {
					m.rsets.set(uint32(id))
					break
				}
			}
		}
	}
	for c, v := range [numStrCols]string{f.Subject, f.Device, f.Path, f.Proxy, f.Uploader} {
		if v != "" {
			m.str[c] = ix.dicts[c].match(v)
		}
	}
	return m
}

func clampNano(t time.Time) int64 {
	switch {
	case t.Year() < 1678:
		return math.MinInt64 + 1
	case t.Year() > 2261:
		return math.MaxInt64
	}
	return t.UnixNano()
}

// match reports whether record position i matches.
func (ix *Index) match(m *matcher, i uint64) bool {
	if m.all {
		return true
	}
	if m.dec >= 0 && int(ix.dec[i]) != m.dec {
		return false
	}
	if t := ix.times[i]; m.timed && (t == noTime || t < m.since || t > m.till) {
		return false
	}
	if m.rev != nil && ix.rev[i] != *m.rev {
		return false
	}
	if m.rsets != nil && !m.rsets.has(ix.rset[i]) {
		return false
	}
	for c, b := range m.str {
		if b != nil && !b.has(ix.str[c][i]) {
			return false
		}
	}
	return true
}

// Search implements Searcher.
func (ix *Index) Search(ctx context.Context, f Filter, p PageRequest) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	p.Limit = bounded(p.Limit, DefaultPageSize, MaxPageSize)
	ix.settle(ctx)
	head := ix.log.Head().Seq
	ix.mu.RLock()
	m := ix.compile(f)
	n := ix.n
	start := n // positions below start are on this page or older
	if p.Before > 0 && p.Before-1 < n {
		start = p.Before - 1
	}
	pos := make([]uint64, 0, p.Limit)
	var total, next uint64
	if m.all {
		total = n
		for i := start; i > 0 && len(pos) < p.Limit; i-- {
			pos = append(pos, i-1)
		}
		if len(pos) == p.Limit && pos[len(pos)-1] > 0 {
			next = pos[len(pos)-1] + 1
		}
	}
	for i := n; i > 0 && !m.all; i-- {
		if i&0xffff == 0 && ctx.Err() != nil {
			ix.mu.RUnlock()
			return Page{}, ctx.Err()
		}
		if !ix.match(&m, i-1) {
			continue
		}
		total++
		if i-1 < start {
			if len(pos) < p.Limit {
				pos = append(pos, i-1)
			} else if next == 0 {
				next = pos[len(pos)-1] + 1
			}
		}
	}
	integ := ix.integ
	ix.mu.RUnlock()
	page := Page{Records: make([]StoredRecord, 0, len(pos)), Total: total, Next: next, Indexed: n, Head: head}
	for _, i := range pos {
		r, err := ix.read(i)
		if err != nil {
			return Page{}, err
		}
		r.Verified = integ.Verified >= r.Seq
		page.Records = append(page.Records, r)
	}
	return page, nil
}

// Record implements Searcher.
func (ix *Index) Record(ctx context.Context, seq uint64) (StoredRecord, error) {
	ix.settle(ctx)
	ix.mu.RLock()
	n, verified := ix.n, ix.integ.Verified
	ix.mu.RUnlock()
	if seq == 0 || seq > n {
		return StoredRecord{}, fmt.Errorf("seq %d: %w (the log holds seq 1..%d)", seq, ErrNoRecord, n)
	}
	r, err := ix.read(seq - 1)
	r.Verified = err == nil && verified >= seq
	return r, err
}

// Line is the stored line of record seq, as it is in the segment file.
func (ix *Index) Line(ctx context.Context, seq uint64) ([]byte, error) {
	ix.settle(ctx)
	ix.mu.RLock()
	n := ix.n
	ix.mu.RUnlock()
	if seq == 0 || seq > n {
		return nil, fmt.Errorf("seq %d: %w (the log holds seq 1..%d)", seq, ErrNoRecord, n)
	}
	return ix.readLine(seq - 1)
}

// read loads the stored record of position i from its segment.
func (ix *Index) read(i uint64) (StoredRecord, error) {
	buf, err := ix.readLine(i)
	if err != nil {
		return StoredRecord{}, err
	}
	if !json.Valid(buf) {
		// Shown as a JSON string so the answer stays valid JSON.
		q, _ := json.Marshal(string(buf))
		buf = q
	}
	return StoredRecord{Seq: i + 1, Record: buf}, nil
}

// readLine loads the stored line of position i from its segment.
func (ix *Index) readLine(i uint64) ([]byte, error) {
	ix.mu.RLock()
	off, ln := ix.offs[i], ix.lens[i]
	k := sort.Search(len(ix.segStart), func(j int) bool { return ix.segStart[j] > i }) - 1
	name := ""
	if k >= 0 {
		name = ix.segNames[k]
	}
	ix.mu.RUnlock()
	if off < 0 || name == "" {
		return nil, fmt.Errorf("seq %d: %w: it is missing from the segment files", i+1, ErrNoRecord)
	}
	f, err := ix.file(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ln)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("decision log: read seq %d from %s: %w", i+1, name, err)
	}
	return buf, nil
}

// file is an open segment for reading, kept for later reads.
func (ix *Index) file(name string) (*os.File, error) {
	ix.filesMu.Lock()
	defer ix.filesMu.Unlock()
	if f := ix.files[name]; f != nil {
		return f, nil
	}
	if len(ix.files) >= 64 {
		for n, f := range ix.files {
			f.Close()
			delete(ix.files, n)
			break
		}
	}
	f, err := os.Open(filepath.Join(ix.log.dir, name))
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	ix.files[name] = f
	return f, nil
}

// Values implements Searcher.
func (ix *Index) Values(ctx context.Context, column string, limit int) ([]ValueCount, error) {
	limit = bounded(limit, 100, 1000)
	ix.settle(ctx)
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	switch column {
	case "decision":
		d := newDict()
		for i, c := range ix.decCounts {
			if c > 0 {
				d.counts[d.addName(decisionNames[i])] = c
			}
		}
		return d.top(limit), nil
	case "revision":
		d := newDict()
		for r, c := range ix.revCounts {
			d.counts[d.addName(fmt.Sprint(r))] = c
		}
		return d.top(limit), nil
	case "rule":
		return ix.rules.top(limit), nil
	}
	for c, name := range strColName {
		if name == column {
			return ix.dicts[c].top(limit), nil
		}
	}
	return nil, fmt.Errorf("unknown column %q (want one of %s)", column, strings.Join(Columns, ", "))
}
