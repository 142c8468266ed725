package postgres

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
	"github.com/meshguard/meshguard/distributor/state"
)

var _ state.DecisionLog = (*Decisions)(nil)

// Decisions is the shared decision log as a state.DecisionLog: the
// DecisionLog with timeouts, the last head and checkpoint read kept for
// when the database is down, and checkpoints signed at an interval.
type Decisions struct {
	l        *DecisionLog
	db       *DB
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

// Decisions returns the shared decision log as a state.DecisionLog; key
// signs checkpoints, every is the checkpoint interval (0: only on
// request). Close stops signing.
func (db *DB) Decisions(key *decisionlog.Key, every time.Duration, log *slog.Logger) *Decisions {
	d := &Decisions{l: db.DecisionLog(key), db: db, key: key, log: log,
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
func (d *Decisions) signEvery(every time.Duration) {
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

// Append implements state.DecisionLog.
func (d *Decisions) Append(recs []decisionlog.Record) (decisionlog.Appended, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return d.l.Append(ctx, recs)
}

// Head implements state.DecisionLog (the last head read when the database is down).
func (d *Decisions) Head() decisionlog.Head {
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

// Latest implements state.DecisionLog (the last checkpoint read when the database is down).
func (d *Decisions) Latest() decisionlog.Checkpoint {
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

// Checkpoint implements state.DecisionLog.
func (d *Decisions) Checkpoint() (decisionlog.Checkpoint, error) {
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

// Key implements state.DecisionLog.
func (d *Decisions) Key() *decisionlog.Key { return d.key }

// ProveInclusion implements state.DecisionLog, reading the record from
// the database (line is unused).
func (d *Decisions) ProveInclusion(seq, size uint64, _ []byte) (decisionlog.InclusionProof, error) {
	ctx, cancel := dbCtx()
	defer cancel()
	return d.l.ProveInclusion(ctx, seq, size)
}

// ProveConsistency implements state.DecisionLog.
func (d *Decisions) ProveConsistency(from, size uint64) (decisionlog.ConsistencyProof, error) {
	ctx, cancel := dbCtx()
	defer cancel()
	return d.l.ProveConsistency(ctx, from, size)
}

// Line is the stored line of record seq.
func (d *Decisions) Line(ctx context.Context, seq uint64) ([]byte, error) {
	return d.l.Record(ctx, seq)
}

// QueryEach implements state.DecisionLog: the file log's query over the
// database's records.
func (d *Decisions) QueryEach(q decisionlog.Query, emit func(line []byte) error) (uint64, error) {
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

// WriteLog implements state.DecisionLog.
func (d *Decisions) WriteLog(w io.Writer, head decisionlog.Head) error {
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

// Anchor implements state.DecisionLog: retention does not remove records
// from the database (yet), so there is none.
func (d *Decisions) Anchor() decisionlog.Anchor { return decisionlog.Anchor{} }

// Size implements state.DecisionLog: no segment files.
func (d *Decisions) Size() (int, int64, error) { return 0, 0, nil }

// Writable implements state.DecisionLog: the database answers.
func (d *Decisions) Writable() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return d.db.Ping(ctx)
}

// Close stops the checkpoint signer (the pool is the DB's).
func (d *Decisions) Close() error {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
	return nil
}
