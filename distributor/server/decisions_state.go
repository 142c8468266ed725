package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

// decisionLog is what the handlers use of the decision log: the
// filesystem log (*decisionlog.Log, one per distributor) or the shared
// one in PostgreSQL (pgDecisions, one per deployment).
type decisionLog interface {
	Append(recs []decisionlog.Record) (decisionlog.Appended, error)
	Head() decisionlog.Head
	Latest() decisionlog.Checkpoint
	Checkpoint() (decisionlog.Checkpoint, error)
	Key() *decisionlog.Key
	ProveInclusion(seq, size uint64, line []byte) (decisionlog.InclusionProof, error)
	ProveConsistency(from, size uint64) (decisionlog.ConsistencyProof, error)
	QueryEach(q decisionlog.Query, emit func(line []byte) error) (uint64, error)
	WriteLog(w io.Writer, head decisionlog.Head) error
	Anchor() decisionlog.Anchor
	Size() (segs int, bytes int64, err error)
	Writable() error
	Close() error
}

var _ decisionLog = (*decisionlog.Log)(nil)

// pgDecisions adapts the PostgreSQL decision log to decisionLog. Reads that
// cannot fail in the file log (Head, Latest) answer the last value read
// when the database is down; writes and proofs fail (503).
type pgDecisions struct {
	l        *postgres.DecisionLog
	db       *postgres.DB
	key      *decisionlog.Key
	log      *slog.Logger
	mu       sync.Mutex
	head     decisionlog.Head
	cp       decisionlog.Checkpoint
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

const dbTimeout = 10 * time.Second

func newPGDecisions(db *postgres.DB, key *decisionlog.Key, every time.Duration, log *slog.Logger) *pgDecisions {
	d := &pgDecisions{l: db.DecisionLog(key), db: db, key: key, log: log,
		head: decisionlog.Head{Hash: decisionlog.EmptyRoot}, stop: make(chan struct{}), done: make(chan struct{})}
	d.Head()
	d.Latest()
	go d.signEvery(every)
	return d
}

func dbCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), dbTimeout)
}

// signEvery signs a checkpoint at each tick when the log grew; with
// several replicas each may sign, all with the one key and of the one tree.
func (d *pgDecisions) signEvery(every time.Duration) {
	defer close(d.done)
	if every <= 0 || d.key == nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		if d.Head().Seq != d.Latest().Size {
			if _, err := d.Checkpoint(); err != nil {
				d.log.Error("decision log: checkpoint", "err", err)
			}
		}
	}
}

func (d *pgDecisions) Append(recs []decisionlog.Record) (decisionlog.Appended, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return d.l.Append(ctx, recs)
}

func (d *pgDecisions) Head() decisionlog.Head {
	ctx, cancel := dbCtx()
	defer cancel()
	h, err := d.l.Head(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.head = h
	}
	return d.head
}

func (d *pgDecisions) Latest() decisionlog.Checkpoint {
	ctx, cancel := dbCtx()
	defer cancel()
	c, err := d.l.Latest(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.cp = c
	}
	return d.cp
}

func (d *pgDecisions) Checkpoint() (decisionlog.Checkpoint, error) {
	ctx, cancel := dbCtx()
	defer cancel()
	c, err := d.l.Checkpoint(ctx)
	if err == nil {
		d.mu.Lock()
		if c.Size >= d.cp.Size {
			d.cp = c
		}
		d.mu.Unlock()
	}
	return c, err
}

func (d *pgDecisions) Key() *decisionlog.Key { return d.key }

// ProveInclusion reads the record from the database (line is unused).
func (d *pgDecisions) ProveInclusion(seq, size uint64, _ []byte) (decisionlog.InclusionProof, error) {
	ctx, cancel := dbCtx()
	defer cancel()
	return d.l.ProveInclusion(ctx, seq, size)
}

func (d *pgDecisions) ProveConsistency(from, size uint64) (decisionlog.ConsistencyProof, error) {
	ctx, cancel := dbCtx()
	defer cancel()
	return d.l.ProveConsistency(ctx, from, size)
}

func (d *pgDecisions) line(ctx context.Context, seq uint64) ([]byte, error) {
	return d.l.Record(ctx, seq)
}

// QueryEach is the file log's query over the database's records.
func (d *pgDecisions) QueryEach(q decisionlog.Query, emit func(line []byte) error) (uint64, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.Limit > 10000 {
		q.Limit = 10000
	}
	if err := q.Filter.Validate(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var lastSeq, next uint64
	n := 0
	var ferr error
	err := d.l.Records(ctx, q.AfterSeq+1, func(seq uint64, line []byte) bool {
		if !json.Valid(line) {
			ferr = fmt.Errorf("decision log: seq %d unreadable", seq)
			return false
		}
		if !q.Matches(line) {
			return true
		}
		if n == q.Limit {
			next = lastSeq
			return false
		}
		lastSeq, n = seq, n+1
		if ferr = emit(line); ferr != nil {
			return false
		}
		return true
	})
	return next, errors.Join(err, ferr)
}

// WriteLog streams records 1..head.Seq, one line each.
func (d *pgDecisions) WriteLog(w io.Writer, head decisionlog.Head) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var werr error
	err := d.l.Records(ctx, 1, func(seq uint64, line []byte) bool {
		if seq > head.Seq {
			return false
		}
		if _, werr = w.Write(append(line, '\n')); werr != nil {
			return false
		}
		return true
	})
	return errors.Join(err, werr)
}

// Anchor: retention does not remove records from the database (yet).
func (d *pgDecisions) Anchor() decisionlog.Anchor { return decisionlog.Anchor{} }

// Size reports no segments: the records are in the database.
func (d *pgDecisions) Size() (int, int64, error) { return 0, 0, nil }

func (d *pgDecisions) Writable() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return d.db.Ping(ctx)
}

func (d *pgDecisions) Close() error {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
	return nil
}

// errNoSearch: console search runs over the file log's index; with the
// decision log in PostgreSQL it is not built yet.
var errNoSearch = errors.New("decision search is not available with state.backend postgres (use GET /v1/decisions queries, export and proofs)")

// pgSearch answers the console's searcher with errNoSearch.
type pgSearch struct{}

func (pgSearch) Search(context.Context, decisionlog.Filter, decisionlog.PageRequest) (decisionlog.Page, error) {
	return decisionlog.Page{}, errNoSearch
}

func (pgSearch) Record(context.Context, uint64) (decisionlog.StoredRecord, error) {
	return decisionlog.StoredRecord{}, errNoSearch
}

func (pgSearch) Stats(context.Context, decisionlog.Filter, decisionlog.StatsRequest) (decisionlog.Stats, error) {
	return decisionlog.Stats{}, errNoSearch
}

func (pgSearch) Values(context.Context, string, int) ([]decisionlog.ValueCount, error) {
	return nil, errNoSearch
}

func (pgSearch) Integrity() decisionlog.Integrity {
	return decisionlog.Integrity{Method: "RFC 6962 Merkle tree (in PostgreSQL; verify with meshguard audit verify)"}
}

// recordLine is the stored line of record seq, from the index over the
// file log or from the database.
func (s *Server) recordLine(ctx context.Context, seq uint64) ([]byte, error) {
	if d, ok := s.dlog.(*pgDecisions); ok {
		return d.line(ctx, seq)
	}
	return s.index.Line(ctx, seq)
}

// DecisionLogKey is the checkpoint verifier key auditors pin.
func (s *Server) DecisionLogKey() string { return s.dlog.Key().Public }
