// Package postgres is the shared state backend: bundle channels in one
// PostgreSQL database that any number of stateless distributor replicas
// use at once. Commits check the anti-rollback rule under a row lock in the
// same transaction that stores the revision, and announce themselves with
// NOTIFY so every replica's long polls wake at once; a periodic re-read
// covers notifications lost while a listener reconnects.
package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshguard/meshguard/distributor/state"
)

// notifyChannel is the LISTEN/NOTIFY channel commits announce on; the
// payload is the bundle channel's name.
const notifyChannel = "meshguard_bundles"

// Options configure the connection.
type Options struct {
	// URL is a libpq connection URL or key=value string.
	URL string
	// PasswordFile, when set, holds the password (trailing newline
	// ignored); it overrides any password in URL.
	PasswordFile string
	// SSLMode overrides the URL's sslmode (disable, require, verify-ca,
	// verify-full).
	SSLMode string
	// CAFile is the PEM bundle that verifies the server (verify-ca,
	// verify-full).
	CAFile string
	// MaxConns bounds the pool (default 10).
	MaxConns int32
	// Fallback is how often every channel's latest revision is re-read in
	// case a notification was lost (default 5s).
	Fallback time.Duration
	Logger   *slog.Logger
}

// DB is an open database with its schema migrated.
type DB struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	fallback time.Duration
}

// Config parses opts into a pool configuration.
func Config(opts Options) (*pgxpool.Config, error) {
	raw := opts.URL
	if opts.SSLMode != "" {
		raw = withParam(raw, "sslmode", opts.SSLMode)
	}
	if opts.CAFile != "" {
		raw = withParam(raw, "sslrootcert", opts.CAFile)
	}
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		// pgx quotes the URL, password included; say only what is wrong.
		return nil, errors.New("state.postgres.url: not a valid PostgreSQL connection string")
	}
	if opts.PasswordFile != "" {
		b, err := os.ReadFile(opts.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("state.postgres.password_file: %w", err)
		}
		cfg.ConnConfig.Password = strings.TrimRight(string(b), "\r\n")
	}
	if opts.CAFile != "" && cfg.ConnConfig.TLSConfig != nil {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("state.postgres.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("state.postgres.ca_file %s: no PEM certificates", opts.CAFile)
		}
		cfg.ConnConfig.TLSConfig.RootCAs = pool
		cfg.ConnConfig.TLSConfig.MinVersion = tls.VersionTLS12
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	} else {
		cfg.MaxConns = 10
	}
	cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	return cfg, nil
}

func withParam(raw, key, val string) string {
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			return raw
		}
		q := u.Query()
		q.Set(key, val)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return raw + " " + key + "='" + strings.ReplaceAll(val, "'", `\'`) + "'"
}

// Open connects, checks the credentials and migrates the schema. It fails
// with a clear message when the server is unreachable, refuses the
// credentials or holds a schema newer than this binary.
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Fallback <= 0 {
		opts.Fallback = 5 * time.Second
	}
	cfg, err := Config(opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("state.postgres: %w", err)
	}
	db := &DB{pool: pool, log: opts.Logger, fallback: opts.Fallback}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("state.postgres: cannot use the database at %s: %s", where(cfg), explain(err))
	}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := db.readFields(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// where names the server without credentials.
func where(cfg *pgxpool.Config) string {
	return fmt.Sprintf("%s:%d database %q user %q", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, cfg.ConnConfig.User)
}

// explain turns a connection error into what an operator fixes.
func explain(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000":
			return "the server refused the credentials (" + pe.Message + ")"
		case "3D000":
			return "the database does not exist (" + pe.Message + ")"
		}
		return pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	if strings.Contains(err.Error(), "password authentication failed") {
		return "the server refused the credentials: " + err.Error()
	}
	return "the server is unreachable: " + err.Error()
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Pool is the connection pool (for the other stores of this package).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping reports whether the database answers (for /readyz).
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return dbErr("%w", err)
	}
	return nil
}

// Channels returns the bundle channel store.
func (db *DB) Channels() *Channels { return &Channels{db: db} }

// Channels is the PostgreSQL implementation of state.Channels.
type Channels struct{ db *DB }

var _ state.Channels = (*Channels)(nil)

// List implements state.Channels.
func (c *Channels) List(ctx context.Context) ([]string, error) {
	rows, err := c.db.pool.Query(ctx, `SELECT name FROM bundle_channels ORDER BY name`)
	if err != nil {
		return nil, dbErr("list channels: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, dbErr("list channels: %w", err)
	}
	return names, nil
}

const revCols = `revision, digest, created, expires, published, size, key_id`

func scanRev(row pgx.Row) (state.Revision, error) {
	var r state.Revision
	var rev int64
	var expires *time.Time
	if err := row.Scan(&rev, &r.Digest, &r.Created, &expires, &r.Published, &r.Size, &r.KeyID); err != nil {
		return r, err
	}
	r.Revision = uint64(rev)
	r.Created = r.Created.UTC()
	r.Published = r.Published.UTC()
	if expires != nil {
		r.Expires = expires.UTC()
	}
	return r, nil
}

// Load implements state.Channels in one snapshot (a repeatable-read
// transaction), so the revision list and the bytes agree.
func (c *Channels) Load(ctx context.Context, channel string) ([]state.Revision, []byte, error) {
	tx, err := c.db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, dbErr("%w", err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `SELECT `+revCols+` FROM bundle_revisions WHERE channel = $1 ORDER BY revision`, channel)
	if err != nil {
		return nil, nil, dbErr("load %s: %w", channel, err)
	}
	revs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (state.Revision, error) { return scanRev(r) })
	if err != nil {
		return nil, nil, dbErr("load %s: %w", channel, err)
	}
	if len(revs) == 0 {
		return nil, nil, nil
	}
	var data []byte
	last := revs[len(revs)-1]
	if err := tx.QueryRow(ctx, `SELECT data FROM bundle_revisions WHERE channel = $1 AND revision = $2`, channel, int64(last.Revision)).Scan(&data); err != nil {
		return nil, nil, dbErr("load %s: %w", channel, err)
	}
	return revs, data, nil
}

// Latest implements state.Channels.
func (c *Channels) Latest(ctx context.Context, channel string) (state.Revision, bool, error) {
	r, err := scanRev(c.db.pool.QueryRow(ctx, `SELECT `+revCols+` FROM bundle_revisions WHERE channel = $1 ORDER BY revision DESC LIMIT 1`, channel))
	if errors.Is(err, pgx.ErrNoRows) {
		return state.Revision{}, false, nil
	}
	if err != nil {
		return state.Revision{}, false, dbErr("latest %s: %w", channel, err)
	}
	return r, true, nil
}

// Commit implements state.Channels: the channel row is locked (created on
// the first publish), its latest revision compared, the revision inserted,
// old ones pruned and a notification queued, all in one transaction.
func (c *Channels) Commit(ctx context.Context, channel string, ri state.Revision, data []byte, retain int) error {
	if ri.Revision > 1<<63-1 {
		return fmt.Errorf("state.postgres: revision %d does not fit a bigint", ri.Revision)
	}
	if retain < 1 {
		retain = 1
	}
	tx, err := c.db.pool.Begin(ctx)
	if err != nil {
		return dbErr("%w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO bundle_channels (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, channel); err != nil {
		return dbErr("commit %s: %w", channel, err)
	}
	var latest int64
	if err := tx.QueryRow(ctx, `SELECT latest FROM bundle_channels WHERE name = $1 FOR UPDATE`, channel).Scan(&latest); err != nil {
		return dbErr("commit %s: %w", channel, err)
	}
	if int64(ri.Revision) <= latest {
		return fmt.Errorf("%w: revision %d is not above the stored revision %d", state.ErrConflict, ri.Revision, latest)
	}
	var expires *time.Time
	if !ri.Expires.IsZero() {
		expires = &ri.Expires
	}
	if _, err := tx.Exec(ctx, `INSERT INTO bundle_revisions (channel, `+revCols+`, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		channel, int64(ri.Revision), ri.Digest, ri.Created, expires, ri.Published, ri.Size, ri.KeyID, data); err != nil {
		return dbErr("commit %s: %w", channel, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE bundle_channels SET latest = $2 WHERE name = $1`, channel, int64(ri.Revision)); err != nil {
		return dbErr("commit %s: %w", channel, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM bundle_revisions WHERE channel = $1 AND revision NOT IN
		(SELECT revision FROM bundle_revisions WHERE channel = $1 ORDER BY revision DESC LIMIT $2)`, channel, retain); err != nil {
		return dbErr("prune %s: %w", channel, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, channel); err != nil {
		return dbErr("notify %s: %w", channel, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr("commit %s: %w", channel, err)
	}
	return nil
}

// Bundle implements state.Channels.
func (c *Channels) Bundle(ctx context.Context, channel string, rev uint64) ([]byte, error) {
	var data []byte
	err := c.db.pool.QueryRow(ctx, `SELECT data FROM bundle_revisions WHERE channel = $1 AND revision = $2`, channel, int64(rev)).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("channel %q revision %d: %w", channel, rev, state.ErrNotFound)
	}
	if err != nil {
		return nil, dbErr("bundle %s/%d: %w", channel, rev, err)
	}
	return data, nil
}

// Shared implements state.Channels.
func (c *Channels) Shared() bool { return true }

// Check implements state.Channels.
func (c *Channels) Check(ctx context.Context) error { return c.db.Ping(ctx) }

// Watch implements state.Channels: one connection LISTENs and reports each
// notified channel; every Fallback, and after each reconnection, every
// channel is reported so a lost notification costs at most that long.
func (c *Channels) Watch(ctx context.Context, changed func(string)) {
	tick := time.NewTicker(c.db.fallback)
	defer tick.Stop()
	all := func() {
		names, err := c.List(ctx)
		if err != nil {
			return
		}
		for _, n := range names {
			changed(n)
		}
	}
	notes := make(chan string, 64)
	go c.listen(ctx, notes, all)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notes:
			changed(n)
		case <-tick.C:
			all()
		}
	}
}

func (c *Channels) listen(ctx context.Context, notes chan<- string, resync func()) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.listenOnce(ctx, notes, resync)
		if ctx.Err() != nil {
			return
		}
		c.db.log.Warn("state.postgres: bundle notifications interrupted; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (c *Channels) listenOnce(ctx context.Context, notes chan<- string, resync func()) error {
	conn, err := c.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A LISTENing connection is not returned to the pool.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, `LISTEN `+notifyChannel); err != nil {
		return err
	}
	// Commits made while no one listened are picked up now.
	go resync()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		select {
		case notes <- n.Payload:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dbErr formats a database error; one that is not the server answering a
// statement (no connection, a connection lost, a server shutting down)
// also wraps state.ErrUnavailable, which the HTTP layer answers with 503.
func dbErr(format string, args ...any) error {
	err := fmt.Errorf("state.postgres: "+format, args...)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 57 is operator intervention (admin shutdown, crash shutdown,
		// cannot connect now), 08 is connection exceptions.
		if strings.HasPrefix(pe.Code, "57") || strings.HasPrefix(pe.Code, "08") {
			return fmt.Errorf("%w: %w", state.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: %w", state.ErrUnavailable, err)
	}
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, state.ErrConflict) {
		return err
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.SafeToRetry(err) || isNetErr(err) {
		return fmt.Errorf("%w: %w", state.ErrUnavailable, err)
	}
	return err
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "connection reset")
}
