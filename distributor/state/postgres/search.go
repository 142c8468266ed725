package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// fieldColumns are decision_records' searched columns, in the order
// fieldValues gives them.
var fieldColumns = []string{"t", "decision", "rule_ids", "revision", "subject", "device", "path", "proxy", "uploader"}

// fieldValues are a stored line's searched column values.
func fieldValues(line []byte) []any {
	f := decisionlog.IndexFields(line)
	var t any
	if f.HasTime {
		t = f.Time
	}
	rules := make([][]byte, len(f.Rules))
	for i, r := range f.Rules {
		rules[i] = []byte(r)
	}
	// bundle_revision is a uint64; bigint holds its bits.
	return []any{t, f.Decision, rules, int64(f.Revision), []byte(f.Subject), []byte(f.Device), []byte(f.Path), []byte(f.Proxy), []byte(f.Uploader)}
}

// valueCounts counts the records holding each column value, for
// decision_values.
type valueCounts map[[2]string]int64

// add counts one record's values (fieldValues' order); empty values are
// not listed.
func (vc *valueCounts) add(fv []any) {
	if *vc == nil {
		*vc = valueCounts{}
	}
	put := func(col string, v []byte) {
		if len(v) > 0 {
			(*vc)[[2]string{col, string(v)}]++
		}
	}
	put("decision", []byte(fv[1].(string)))
	for _, r := range fv[2].([][]byte) {
		put("rule", r)
	}
	put("revision", strconv.AppendUint(nil, uint64(fv[3].(int64)), 10))
	for i, col := range []string{"subject", "device", "path", "proxy", "uploader"} {
		put(col, fv[4+i].([]byte))
	}
}

// store adds the counts to decision_values in tx (which holds the
// decision_head lock, so that stores never interleave).
func (vc valueCounts) store(ctx context.Context, tx pgx.Tx) error {
	if len(vc) == 0 {
		return nil
	}
	cols := make([]string, 0, len(vc))
	vals := make([][]byte, 0, len(vc))
	ns := make([]int64, 0, len(vc))
	for k, n := range vc {
		cols, vals, ns = append(cols, k[0]), append(vals, []byte(k[1])), append(ns, n)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO decision_values (col, value, count)
		SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[])
		ON CONFLICT (col, value) DO UPDATE SET count = decision_values.count + excluded.count`, cols, vals, ns); err != nil {
		return dbErr("decision log: value counts: %w", err)
	}
	return nil
}

// readFields fills the searched columns (and value counts) of rows stored
// before migration 3, under the sequencer's lock.
func (db *DB) readFields(ctx context.Context) error {
	for {
		done, err := db.readFieldsBatch(ctx)
		if err != nil {
			return fmt.Errorf("state.postgres: read record fields: %w", err)
		}
		if done {
			return nil
		}
	}
}

func (db *DB) readFieldsBatch(ctx context.Context) (bool, error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM decision_head WHERE id = 1 FOR UPDATE`); err != nil {
		return false, err
	}
	rows, err := tx.Query(ctx, `SELECT seq, line FROM decision_records WHERE decision IS NULL ORDER BY seq LIMIT 5000`)
	if err != nil {
		return false, err
	}
	type row struct {
		seq  int64
		line []byte
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.seq, &x.line)
	})
	if err != nil || len(got) == 0 {
		return err == nil, err
	}
	b := &pgx.Batch{}
	var counts valueCounts
	for _, x := range got {
		fv := fieldValues(x.line)
		counts.add(fv)
		b.Queue(`UPDATE decision_records SET t = $2, decision = $3, rule_ids = $4, revision = $5, subject = $6,
			device = $7, path = $8, proxy = $9, uploader = $10 WHERE seq = $1`, append([]any{x.seq}, fv...)...)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	if err := counts.store(ctx, tx); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	db.log.Info("state.postgres: searched fields read from stored records", "through_seq", got[len(got)-1].seq)
	return false, nil
}

// Search is the console's decisionlog.Searcher over the shared log: SQL
// over the searched columns, so every replica answers for the whole
// deployment. Integrity is this replica's own check of the stored tree,
// run in the background from seq 1 as the file log's index does.
type Search struct {
	db   *DB
	d    *Decisions
	log  *slog.Logger
	stop context.CancelFunc
	done chan struct{}

	verMu sync.Mutex // one verifier at a time
	mu    sync.Mutex
	integ decisionlog.Integrity
}

var _ decisionlog.Searcher = (*Search)(nil)

// Search returns the searcher over d's records; it verifies the log every
// poll (default 5s) until Close.
func (db *DB) Search(d *Decisions, poll time.Duration, log *slog.Logger) *Search {
	if poll <= 0 {
		poll = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Search{db: db, d: d, log: log, stop: cancel, done: make(chan struct{}),
		integ: decisionlog.Integrity{Method: "RFC 6962 Merkle tree (in PostgreSQL)", Head: decisionlog.Head{Hash: decisionlog.EmptyRoot}}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			if err := s.Verify(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("decision log: verify", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Close stops the verifier.
func (s *Search) Close() error {
	s.stop()
	<-s.done
	return nil
}

// Integrity implements decisionlog.Searcher.
func (s *Search) Integrity() decisionlog.Integrity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.integ
}

// Indexed is the number of records searchable: all that are committed.
func (s *Search) Indexed() uint64 { return s.d.Head().Seq }

const verifyChunk = 16384

// Verify checks the records past the verified part up to the head: each
// line canonical with its seq and its tree hashes the stored ones
// (decisionlog.VerifyTree), then the verified tree's root against the
// latest signed checkpoint once it covers it. Problems are kept in
// Integrity; an error is a database failure (retried next poll).
func (s *Search) Verify(ctx context.Context) error {
	s.verMu.Lock()
	defer s.verMu.Unlock()
	tree := func(uint64) tlog.HashReader { return s.d.l.TreeReader(ctx) }
	for ctx.Err() == nil {
		in := s.Integrity()
		head, err := s.d.l.Head(ctx)
		if err != nil {
			return err
		}
		if in.Problem != "" {
			return nil
		}
		if in.Verified >= head.Seq {
			return s.checkCheckpoint(ctx, in, tree)
		}
		to := min(head.Seq, in.Verified+verifyChunk)
		var lines [][]byte
		want := in.Verified + 1
		err = s.d.l.Records(ctx, want, func(seq uint64, line []byte) bool {
			if seq > to || seq != want {
				return false
			}
			lines = append(lines, line)
			want++
			return true
		})
		if err != nil {
			return err
		}
		good, bad, problem := in.Verified, uint64(0), ""
		if len(lines) > 0 {
			good, bad, problem = decisionlog.VerifyTree(tree, in.Verified+1, lines)
		}
		if problem == "" && good < to {
			bad, problem = good+1, fmt.Sprintf("record %d is missing from the database (the tree holds %d records)", good+1, head.Seq)
		} else if problem != "" {
			problem = fmt.Sprintf("seq %d: %s", bad, problem)
		}
		root := decisionlog.EmptyRoot
		if good > 0 {
			r, err := tlog.TreeHash(int64(good), tree(good))
			if err != nil {
				return fmt.Errorf("decision log: tree hash: %w", err)
			}
			root = r.String()
		}
		s.mu.Lock()
		s.integ.Verified, s.integ.Head = good, decisionlog.Head{Seq: good, Hash: root}
		s.integ.BadSeq, s.integ.Problem = bad, problem
		s.integ.Checked = time.Now().UTC()
		s.mu.Unlock()
	}
	return ctx.Err()
}

func (s *Search) checkCheckpoint(ctx context.Context, in decisionlog.Integrity, tree func(uint64) tlog.HashReader) error {
	cp, err := s.d.l.Latest(ctx)
	if err != nil {
		return err
	}
	if cp.Signed == nil || in.Verified < cp.Size || in.Checkpoint != nil && in.Checkpoint.Size == cp.Size {
		return nil
	}
	root, err := tlog.TreeHash(int64(cp.Size), tree(cp.Size))
	if err != nil {
		return fmt.Errorf("decision log: tree hash: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if root != cp.Root {
		s.integ.BadSeq = cp.Size
		s.integ.Problem = fmt.Sprintf("the verified tree of %d records hashes to %s but the signed checkpoint says %s", cp.Size, root, cp.Root)
		return nil
	}
	s.integ.Checkpoint = decisionlog.CheckpointReportOf(cp)
	return nil
}

// query builds a WHERE clause over the searched columns.
type query struct {
	conds []string
	args  []any
}

func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

func (q *query) add(cond string) { q.conds = append(q.conds, cond) }

func (q *query) where() string {
	if len(q.conds) == 0 {
		return "TRUE"
	}
	return strings.Join(q.conds, " AND ")
}

// afterPrefix is the least byte string greater than every string with
// prefix p (nil: none is, p is all 0xff bytes).
func afterPrefix(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			out := append([]byte(nil), p[:i+1]...)
			out[i]++
			return out
		}
	}
	return nil
}

// match is the condition that expr (bytea) equals v, or starts with it
// when v ends in '*', as a byte range an index serves.
func (q *query) match(expr, v string) string {
	pre, ok := strings.CutSuffix(v, "*")
	if !ok {
		return expr + " = " + q.arg([]byte(v))
	}
	cond := expr + " >= " + q.arg([]byte(pre))
	if next := afterPrefix([]byte(pre)); next != nil {
		cond += " AND " + expr + " < " + q.arg(next)
	}
	return cond
}

// filter compiles f (validated) to conditions.
func filter(f decisionlog.Filter) *query {
	q := &query{}
	q.add("decision IS NOT NULL")
	if f.Decision != "" {
		q.add("decision = " + q.arg(f.Decision))
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		since, until := f.TimeBounds()
		q.add("t >= " + q.arg(since) + " AND t <= " + q.arg(until))
	}
	if f.Revision != nil {
		q.add("revision = " + q.arg(int64(*f.Revision)))
	}
	if f.Rule != "" {
		if !strings.HasSuffix(f.Rule, "*") {
			q.add("rule_ids @> ARRAY[" + q.arg([]byte(f.Rule)) + "::bytea]")
		} else {
			q.add("EXISTS (SELECT 1 FROM unnest(rule_ids) r WHERE " + q.match("r", f.Rule) + ")")
		}
	}
	for col, v := range map[string]string{"subject": f.Subject, "device": f.Device, "path": f.Path, "proxy": f.Proxy, "uploader": f.Uploader} {
		if v != "" {
			q.add(q.match(col, v))
		}
	}
	return q
}

// Search implements decisionlog.Searcher: a keyset page, newest first.
func (s *Search) Search(ctx context.Context, f decisionlog.Filter, p decisionlog.PageRequest) (decisionlog.Page, error) {
	if err := f.Validate(); err != nil {
		return decisionlog.Page{}, err
	}
	p = decisionlog.BoundPage(p)
	head, err := s.d.l.Head(ctx)
	if err != nil {
		return decisionlog.Page{}, err
	}
	q := filter(f)
	all := len(q.conds) == 1
	var total int64
	if all {
		// Records are dense from the oldest kept to the head.
		err = s.db.pool.QueryRow(ctx, `SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM decision_records`).Scan(&total)
	} else {
		err = s.db.pool.QueryRow(ctx, `SELECT count(*) FROM decision_records WHERE `+q.where(), q.args...).Scan(&total)
	}
	if err != nil {
		return decisionlog.Page{}, dbErr("decision search: count: %w", err)
	}
	if p.Before > 0 {
		q.add("seq < " + q.arg(int64(min(p.Before, 1<<63-1))))
	}
	rows, err := s.db.pool.Query(ctx, `SELECT seq, line FROM decision_records WHERE `+q.where()+
		` ORDER BY seq DESC LIMIT `+q.arg(p.Limit+1), q.args...)
	if err != nil {
		return decisionlog.Page{}, dbErr("decision search: %w", err)
	}
	verified := s.Integrity().Verified
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (decisionlog.StoredRecord, error) {
		var seq int64
		var line []byte
		if err := r.Scan(&seq, &line); err != nil {
			return decisionlog.StoredRecord{}, err
		}
		return stored(uint64(seq), line, verified), nil
	})
	if err != nil {
		return decisionlog.Page{}, dbErr("decision search: %w", err)
	}
	page := decisionlog.Page{Records: recs, Total: uint64(total), Indexed: head.Seq, Head: head.Seq}
	if len(recs) > p.Limit {
		page.Records = recs[:p.Limit]
		page.Next = recs[p.Limit-1].Seq
	}
	return page, nil
}

// stored is a record as the console shows it: an unreadable line as a
// JSON string so that the answer stays valid JSON.
func stored(seq uint64, line []byte, verified uint64) decisionlog.StoredRecord {
	if !json.Valid(line) {
		line, _ = json.Marshal(string(line))
	}
	return decisionlog.StoredRecord{Seq: seq, Record: line, Verified: verified >= seq}
}

// Record implements decisionlog.Searcher.
func (s *Search) Record(ctx context.Context, seq uint64) (decisionlog.StoredRecord, error) {
	if seq == 0 || seq > 1<<63-1 {
		return decisionlog.StoredRecord{}, fmt.Errorf("seq %d: %w", seq, decisionlog.ErrNoRecord)
	}
	line, err := s.d.l.Record(ctx, seq)
	if err != nil {
		return decisionlog.StoredRecord{}, err
	}
	return stored(seq, line, s.Integrity().Verified), nil
}

// Stats implements decisionlog.Searcher: one grouped scan of the matching
// records by bucket, decision and rule list (after one for the time range
// when the filter leaves it open).
func (s *Search) Stats(ctx context.Context, f decisionlog.Filter, r decisionlog.StatsRequest) (decisionlog.Stats, error) {
	if err := f.Validate(); err != nil {
		return decisionlog.Stats{}, err
	}
	r = decisionlog.BoundStats(r)
	head, err := s.d.l.Head(ctx)
	if err != nil {
		return decisionlog.Stats{}, err
	}
	var lo, hi *int64
	if f.Since.IsZero() || f.Until.IsZero() {
		q := filter(f)
		q.add("t <= " + q.arg(decisionlog.StatsCeiling()))
		if err := s.db.pool.QueryRow(ctx, `SELECT min(t), max(t) FROM decision_records WHERE `+q.where(), q.args...).Scan(&lo, &hi); err != nil {
			return decisionlog.Stats{}, dbErr("decision stats: range: %w", err)
		}
	}
	var l, h int64
	if lo != nil && hi != nil {
		l, h = *lo, *hi
	}
	from, to, step, nb := decisionlog.StatsLayout(f, l, h, lo != nil && hi != nil, r.Buckets)
	st := decisionlog.Stats{From: time.Unix(0, from).UTC(), Bucket: decisionlog.Duration(step),
		Series: make([]decisionlog.BucketCounts, nb), Indexed: head.Seq, Head: head.Seq}
	for b := range st.Series {
		st.Series[b].Start = time.Unix(0, from+int64(b)*step).UTC()
	}
	q := filter(f)
	pf, pt, ps := q.arg(from), q.arg(to), q.arg(step)
	rows, err := s.db.pool.Query(ctx, `SELECT CASE WHEN t >= `+pf+` AND t <= `+pt+` THEN (t - `+pf+`) / `+ps+` END, decision, rule_ids, count(*)
		FROM decision_records WHERE `+q.where()+` GROUP BY 1, 2, 3`, q.args...)
	if err != nil {
		return decisionlog.Stats{}, dbErr("decision stats: %w", err)
	}
	defer rows.Close()
	byRule := map[string]*decisionlog.RuleCounts{}
	for rows.Next() {
		var b *int64
		var dec string
		var rules [][]byte
		var n int64
		if err := rows.Scan(&b, &dec, &rules, &n); err != nil {
			return decisionlog.Stats{}, dbErr("decision stats: %w", err)
		}
		c := uint64(n)
		st.Total += c
		if b == nil || *b < 0 || *b >= int64(nb) {
			st.OutOfRange += c
			continue
		}
		sc := &st.Series[*b]
		sc.Total += c
		switch dec {
		case decisionlog.DecisionAllow:
			sc.Allow += c
		case decisionlog.DecisionDeny:
			sc.Deny += c
		case decisionlog.DecisionDryRun:
			sc.DryRun += c
		case decisionlog.DecisionError:
			sc.Error += c
		case decisionlog.DecisionUnavailable:
			sc.Unavailable += c
		case decisionlog.DecisionGap:
			sc.Gap += c
		}
		for _, rb := range rules {
			rule := string(rb)
			rc := byRule[rule]
			if rc == nil {
				rc = &decisionlog.RuleCounts{Rule: rule, Counts: make([]uint64, nb)}
				byRule[rule] = rc
			}
			rc.Counts[*b] += c
			rc.Total += c
			switch dec {
			case decisionlog.DecisionDeny:
				rc.Deny += c
			case decisionlog.DecisionDryRun:
				rc.DryRun += c
			}
		}
	}
	if err := rows.Err(); err != nil {
		return decisionlog.Stats{}, dbErr("decision stats: %w", err)
	}
	all := make([]*decisionlog.RuleCounts, 0, len(byRule))
	for _, rc := range byRule {
		all = append(all, rc)
	}
	st.Rules, st.Other = decisionlog.RankRules(all, r.TopRules, nb)
	return st, nil
}

// Values implements decisionlog.Searcher from the value counts: the most
// frequent first, ties in byte order, as the file index lists them.
func (s *Search) Values(ctx context.Context, column string, limit int) ([]decisionlog.ValueCount, error) {
	limit = decisionlog.BoundValues(limit)
	if !slices.Contains(decisionlog.Columns, column) {
		return nil, fmt.Errorf("unknown column %q (want one of %s)", column, strings.Join(decisionlog.Columns, ", "))
	}
	rows, err := s.db.pool.Query(ctx, `SELECT value, count FROM decision_values WHERE col = $1 AND count > 0
		ORDER BY count DESC, value LIMIT $2`, column, limit)
	if err != nil {
		return nil, dbErr("decision values: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (decisionlog.ValueCount, error) {
		var v []byte
		var n int64
		err := r.Scan(&v, &n)
		return decisionlog.ValueCount{Value: string(v), Count: uint64(n)}, err
	})
	if err != nil {
		return nil, dbErr("decision values: %w", err)
	}
	return out, nil
}

// Vacuum analyses the decision tables so the planner knows their sizes
// after a bulk load (autovacuum does so in time; benchmarks do not wait).
func (s *Search) Vacuum(ctx context.Context) error {
	if _, err := s.db.pool.Exec(ctx, `VACUUM ANALYZE decision_records`); err != nil {
		return dbErr("decision log: vacuum: %w", err)
	}
	return nil
}
