package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// DecisionLog is the deployment's one decision log in PostgreSQL: every
// replica appends to it, and sequence numbers are assigned in one place,
// the transaction holding the decision_head row lock. That transaction
// stores the records, their tree hashes (tlog.StoredHashes over the stored
// ones) and the new head together, so an acknowledged batch is committed
// and the tree always matches the records. Within a replica, concurrent
// appends are group-committed: one transaction carries every queued batch.
type DecisionLog struct {
	db  *DB
	key *decisionlog.Key

	mu sync.Mutex // one sequencer transaction per replica at a time
	// cache holds committed tree hashes (immutable once committed) so the
	// next commit reads few from the database; guarded by mu.
	cache map[int64]tlog.Hash
	qmu   sync.Mutex
	queue []*pendingBatch
}

type pendingBatch struct {
	recs []decisionlog.Record
	res  decisionlog.Appended
	err  error
	done chan struct{}
}

// DecisionLog returns the shared decision log; key signs its checkpoints
// (nil: none).
func (db *DB) DecisionLog(key *decisionlog.Key) *DecisionLog {
	return &DecisionLog{db: db, key: key}
}

// Append stores a batch durably: it returns once the records are
// committed. Records whose (received_by, decision_id) is already in the
// log are dropped as duplicates (a client retrying a batch).
func (l *DecisionLog) Append(ctx context.Context, recs []decisionlog.Record) (decisionlog.Appended, error) {
	if len(recs) == 0 {
		return decisionlog.Appended{}, errors.New("decision log: empty batch")
	}
	p := &pendingBatch{recs: recs, done: make(chan struct{})}
	l.qmu.Lock()
	l.queue = append(l.queue, p)
	l.qmu.Unlock()
	l.mu.Lock()
	select {
	case <-p.done:
	default:
		l.qmu.Lock()
		group := l.queue
		l.queue = nil
		l.qmu.Unlock()
		// The group is not one caller's: its commit outlives any one
		// request's cancellation.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		err := l.commit(cctx, group)
		cancel()
		for _, q := range group {
			if err != nil {
				q.res, q.err = decisionlog.Appended{}, err
			}
			close(q.done)
		}
	}
	l.mu.Unlock()
	return p.res, p.err
}

// hashReader reads stored hashes from the transaction, with the hashes of
// this commit (not yet written) and those already read kept in memory.
type hashReader struct {
	ctx   context.Context
	tx    pgx.Tx
	cache map[int64]tlog.Hash // committed before this transaction (read only)
	known map[int64]tlog.Hash // this transaction's, and those it read
}

func (h *hashReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	var missing []int64
	for _, i := range idx {
		if _, ok := h.known[i]; ok {
			continue
		}
		if v, ok := h.cache[i]; ok {
			h.known[i] = v
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) > 0 {
		rows, err := h.tx.Query(h.ctx, `SELECT idx, hash FROM decision_hashes WHERE idx = ANY($1)`, missing)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var i int64
			var b []byte
			if err := rows.Scan(&i, &b); err != nil {
				rows.Close()
				return nil, err
			}
			if len(b) != tlog.HashSize {
				rows.Close()
				return nil, fmt.Errorf("stored hash %d has %d bytes", i, len(b))
			}
			h.known[i] = tlog.Hash(b)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]tlog.Hash, len(idx))
	for k, i := range idx {
		v, ok := h.known[i]
		if !ok {
			return nil, fmt.Errorf("stored hash %d is missing", i)
		}
		out[k] = v
	}
	return out, nil
}

// commit is the sequencer transaction for a group of batches.
func (l *DecisionLog) commit(ctx context.Context, group []*pendingBatch) error {
	tx, err := l.db.pool.Begin(ctx)
	if err != nil {
		return dbErr("decision log: %w", err)
	}
	defer tx.Rollback(ctx)
	var size int64
	var root []byte
	if err := tx.QueryRow(ctx, `SELECT size, root FROM decision_head WHERE id = 1 FOR UPDATE`).Scan(&size, &root); err != nil {
		return dbErr("decision log: lock head: %w", err)
	}
	// Which keys of the group are already stored.
	var keys [][]byte
	for _, p := range group {
		for _, r := range p.recs {
			if k, ok := decisionlog.DedupeKey(r); ok {
				keys = append(keys, k)
			}
		}
	}
	seen := map[string]bool{}
	if len(keys) > 0 {
		rows, err := tx.Query(ctx, `SELECT dedupe_key FROM decision_records WHERE dedupe_key = ANY($1)`, keys)
		if err != nil {
			return dbErr("decision log: dedupe: %w", err)
		}
		ks, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return dbErr("decision log: dedupe: %w", err)
		}
		for _, k := range ks {
			seen[string(k)] = true
		}
	}
	if l.cache == nil || len(l.cache) > 1<<16 {
		l.cache = map[int64]tlog.Hash{}
	}
	hr := &hashReader{ctx: ctx, tx: tx, cache: l.cache, known: map[int64]tlog.Hash{}}
	var recRows, hashRows [][]any
	var counts valueCounts
	seq := size
	for _, p := range group {
		s, nr, nh := seq, len(recRows), len(hashRows)
		var added []string
		for _, r := range p.recs {
			k, has := decisionlog.DedupeKey(r)
			if has && seen[string(k)] {
				p.res.Duplicates++
				continue
			}
			line, err := decisionlog.Seal(r, uint64(s+1))
			if err != nil {
				p.err = fmt.Errorf("decision log: encode record: %w", err)
				break
			}
			hashes, err := tlog.StoredHashes(s, line, hr)
			if err != nil {
				return fmt.Errorf("decision log: tree: %w", err)
			}
			base := tlog.StoredHashIndex(0, s)
			for i, h := range hashes {
				hr.known[base+int64(i)] = h
				hashRows = append(hashRows, []any{base + int64(i), h[:]})
			}
			var kv any
			if has {
				kv = k
				seen[string(k)] = true
				added = append(added, string(k))
			}
			recRows = append(recRows, append([]any{s + 1, kv, line}, fieldValues(line)...))
			s++
		}
		if p.err != nil {
			// This batch is refused whole; forget what it added.
			recRows, hashRows = recRows[:nr], hashRows[:nh]
			for _, k := range added {
				delete(seen, k)
			}
			p.res = decisionlog.Appended{}
			// Hashes computed for it stay in hr.known at indexes the next
			// records overwrite, so they are recomputed, not reused.
			for i := tlog.StoredHashIndex(0, seq); i < tlog.StoredHashIndex(0, s); i++ {
				delete(hr.known, i)
			}
			continue
		}
		p.res.Accepted = int(s - seq)
		if p.res.Accepted > 0 {
			p.res.First, p.res.Last = uint64(seq+1), uint64(s)
		}
		seq = s
	}
	if seq == size {
		return tx.Commit(ctx)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"decision_records"}, append([]string{"seq", "dedupe_key", "line"}, fieldColumns...), pgx.CopyFromRows(recRows)); err != nil {
		return dbErr("decision log: store records: %w", err)
	}
	for _, r := range recRows {
		counts.add(r[3:])
	}
	if err := counts.store(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"decision_hashes"}, []string{"idx", "hash"}, pgx.CopyFromRows(hashRows)); err != nil {
		return dbErr("decision log: store hashes: %w", err)
	}
	newRoot, err := tlog.TreeHash(seq, hr)
	if err != nil {
		return fmt.Errorf("decision log: tree: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE decision_head SET size = $1, root = $2 WHERE id = 1`, seq, newRoot[:]); err != nil {
		return dbErr("decision log: head: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr("decision log: commit: %w", err)
	}
	for i, h := range hr.known {
		l.cache[i] = h
	}
	return nil
}

// Head is the log's size and root as committed now.
func (l *DecisionLog) Head(ctx context.Context) (decisionlog.Head, error) {
	var size int64
	var root []byte
	if err := l.db.pool.QueryRow(ctx, `SELECT size, root FROM decision_head WHERE id = 1`).Scan(&size, &root); err != nil {
		return decisionlog.Head{}, dbErr("decision log: head: %w", err)
	}
	return decisionlog.Head{Seq: uint64(size), Hash: tlog.Hash(root).String()}, nil
}

// Record returns the stored line of record seq.
func (l *DecisionLog) Record(ctx context.Context, seq uint64) ([]byte, error) {
	var line []byte
	err := l.db.pool.QueryRow(ctx, `SELECT line FROM decision_records WHERE seq = $1`, int64(seq)).Scan(&line)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("seq %d: %w", seq, decisionlog.ErrNoRecord)
	}
	if err != nil {
		return nil, dbErr("decision log: record %d: %w", seq, err)
	}
	return line, nil
}

// Records calls fn with each stored line from seq from on, in order,
// until fn returns false.
func (l *DecisionLog) Records(ctx context.Context, from uint64, fn func(seq uint64, line []byte) bool) error {
	rows, err := l.db.pool.Query(ctx, `SELECT seq, line FROM decision_records WHERE seq >= $1 ORDER BY seq`, int64(from))
	if err != nil {
		return dbErr("decision log: scan: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var line []byte
		if err := rows.Scan(&seq, &line); err != nil {
			return dbErr("decision log: scan: %w", err)
		}
		if !fn(uint64(seq), line) {
			return nil
		}
	}
	if err := rows.Err(); err != nil {
		return dbErr("decision log: scan: %w", err)
	}
	return nil
}

// TreeReader reads the stored tree hashes (for proofs and verifiers).
func (l *DecisionLog) TreeReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		rows, err := l.db.pool.Query(ctx, `SELECT idx, hash FROM decision_hashes WHERE idx = ANY($1)`, idx)
		if err != nil {
			return nil, dbErr("decision log: hashes: %w", err)
		}
		got := map[int64]tlog.Hash{}
		for rows.Next() {
			var i int64
			var b []byte
			if err := rows.Scan(&i, &b); err != nil {
				rows.Close()
				return nil, err
			}
			got[i] = tlog.Hash(b)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		out := make([]tlog.Hash, len(idx))
		for k, i := range idx {
			h, ok := got[i]
			if !ok {
				return nil, fmt.Errorf("decision log: stored hash %d is missing", i)
			}
			out[k] = h
		}
		return out, nil
	})
}

// Checkpoint signs a checkpoint of the head as committed now and stores
// it; any replica may sign, all with the deployment's one key.
func (l *DecisionLog) Checkpoint(ctx context.Context) (decisionlog.Checkpoint, error) {
	if l.key == nil {
		return decisionlog.Checkpoint{}, decisionlog.ErrNoKey
	}
	h, err := l.Head(ctx)
	if err != nil {
		return decisionlog.Checkpoint{}, err
	}
	root, err := tlog.ParseHash(h.Hash)
	if err != nil {
		return decisionlog.Checkpoint{}, err
	}
	c := decisionlog.Checkpoint{Origin: l.key.Signer.Name(), Size: h.Seq, Root: root}
	signed, err := note.Sign(&note.Note{Text: c.Body()}, l.key.Signer)
	if err != nil {
		return decisionlog.Checkpoint{}, fmt.Errorf("decision log: sign checkpoint: %w", err)
	}
	c.Signed = signed
	if _, err := l.db.pool.Exec(ctx, `INSERT INTO decision_checkpoints (size, signed) VALUES ($1, $2) ON CONFLICT (size) DO NOTHING`, int64(c.Size), signed); err != nil {
		return decisionlog.Checkpoint{}, dbErr("decision log: store checkpoint: %w", err)
	}
	return c, nil
}

// Latest is the latest stored checkpoint (zero before the first).
func (l *DecisionLog) Latest(ctx context.Context) (decisionlog.Checkpoint, error) {
	var signed []byte
	err := l.db.pool.QueryRow(ctx, `SELECT signed FROM decision_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&signed)
	if errors.Is(err, pgx.ErrNoRows) {
		return decisionlog.Checkpoint{}, nil
	}
	if err != nil {
		return decisionlog.Checkpoint{}, dbErr("decision log: checkpoint: %w", err)
	}
	if l.key == nil {
		return decisionlog.Checkpoint{}, decisionlog.ErrNoKey
	}
	return decisionlog.OpenCheckpoint(signed, l.key.Verifier)
}

// ProveInclusion proves record seq in the tree of size records (0: the
// head).
func (l *DecisionLog) ProveInclusion(ctx context.Context, seq, size uint64) (decisionlog.InclusionProof, error) {
	head, err := l.Head(ctx)
	if err != nil {
		return decisionlog.InclusionProof{}, err
	}
	if size == 0 {
		size = head.Seq
	}
	if seq == 0 || seq > size || size > head.Seq {
		return decisionlog.InclusionProof{}, fmt.Errorf("seq %d in a tree of %d records: %w (the log holds %d)", seq, size, decisionlog.ErrNoRecord, head.Seq)
	}
	line, err := l.Record(ctx, seq)
	if err != nil {
		return decisionlog.InclusionProof{}, err
	}
	p, err := tlog.ProveRecord(int64(size), int64(seq-1), l.TreeReader(ctx))
	if err != nil {
		return decisionlog.InclusionProof{}, fmt.Errorf("decision log: inclusion proof: %w", err)
	}
	return decisionlog.InclusionProof{Seq: seq, Size: size, LeafHash: decisionlog.LeafHash(line), Proof: p, Record: string(line)}, nil
}

// ProveConsistency proves the tree of from records a prefix of the tree
// of size records (0: the head).
func (l *DecisionLog) ProveConsistency(ctx context.Context, from, size uint64) (decisionlog.ConsistencyProof, error) {
	head, err := l.Head(ctx)
	if err != nil {
		return decisionlog.ConsistencyProof{}, err
	}
	if size == 0 {
		size = head.Seq
	}
	if size > head.Seq || from > size {
		return decisionlog.ConsistencyProof{}, fmt.Errorf("consistency of %d with %d records: the log holds %d: %w", from, size, head.Seq, decisionlog.ErrNoRecord)
	}
	out := decisionlog.ConsistencyProof{From: from, Size: size, Proof: []tlog.Hash{}}
	if from == 0 || from == size {
		return out, nil
	}
	p, err := tlog.ProveTree(int64(size), int64(from), l.TreeReader(ctx))
	if err != nil {
		return decisionlog.ConsistencyProof{}, fmt.Errorf("decision log: consistency proof: %w", err)
	}
	out.Proof = p
	return out, nil
}
