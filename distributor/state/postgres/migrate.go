package postgres

import (
	"context"
	"fmt"
)

// migrations are the schema versions in order; migration i+1 takes the
// schema from version i to i+1. Append only: a released migration is
// never edited.
var migrations = []string{
	// 1: bundle channels.
	`CREATE TABLE bundle_channels (
		name   text PRIMARY KEY,
		latest bigint NOT NULL DEFAULT 0
	);
	CREATE TABLE bundle_revisions (
		channel   text NOT NULL REFERENCES bundle_channels (name),
		revision  bigint NOT NULL,
		digest    text NOT NULL,
		created   timestamptz NOT NULL,
		expires   timestamptz,
		published timestamptz NOT NULL,
		size      bigint NOT NULL,
		key_id    text NOT NULL DEFAULT '',
		data      bytea NOT NULL,
		PRIMARY KEY (channel, revision)
	);`,
	// 2: the decision log: records by seq, the tlog stored hashes of the
	// RFC 6962 tree (index as tlog.StoredHashIndex numbers them), the
	// head row the sequencer locks, and signed checkpoints.
	`CREATE TABLE decision_records (
		seq        bigint PRIMARY KEY,
		dedupe_key bytea,
		line       bytea NOT NULL,
		stored     timestamptz NOT NULL DEFAULT now()
	);
	CREATE UNIQUE INDEX decision_records_dedupe ON decision_records (dedupe_key) WHERE dedupe_key IS NOT NULL;
	CREATE TABLE decision_hashes (
		idx  bigint PRIMARY KEY,
		hash bytea NOT NULL
	);
	CREATE TABLE decision_head (
		id   int PRIMARY KEY CHECK (id = 1),
		size bigint NOT NULL,
		root bytea NOT NULL
	);
	INSERT INTO decision_head (id, size, root) VALUES (1, 0, decode('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'hex'));
	CREATE TABLE decision_checkpoints (
		size   bigint PRIMARY KEY,
		signed bytea NOT NULL,
		made   timestamptz NOT NULL DEFAULT now()
	);`,
	// 3: the searched fields of each record, read from its line as the
	// file log's index reads them (decisionlog.IndexFields), with indexes
	// for the console's filters and newest-first pages. Strings are bytea:
	// records may hold NUL bytes and invalid UTF-8 that text refuses, and
	// prefixes match as byte ranges. Rows stored before this migration
	// have a NULL decision until the backfill reads them. decision_values
	// counts the records holding each value of a column (the console's
	// suggestion lists), kept by the transaction that stores the records.
	`ALTER TABLE decision_records
		ADD COLUMN t        bigint,
		ADD COLUMN decision text,
		ADD COLUMN rule_ids bytea[],
		ADD COLUMN revision bigint,
		ADD COLUMN subject  bytea,
		ADD COLUMN device   bytea,
		ADD COLUMN path     bytea,
		ADD COLUMN proxy    bytea,
		ADD COLUMN uploader bytea;
	CREATE INDEX decision_records_unread ON decision_records (seq) WHERE decision IS NULL;
	CREATE INDEX decision_records_t ON decision_records (t);
	CREATE INDEX decision_records_decision ON decision_records (decision, seq);
	CREATE INDEX decision_records_rules ON decision_records USING gin (rule_ids);
	CREATE INDEX decision_records_revision ON decision_records (revision, seq);
	CREATE INDEX decision_records_subject ON decision_records (subject, seq);
	CREATE INDEX decision_records_device ON decision_records (device, seq);
	CREATE INDEX decision_records_path ON decision_records (path, seq);
	CREATE INDEX decision_records_proxy ON decision_records (proxy, seq);
	CREATE INDEX decision_records_uploader ON decision_records (uploader, seq);
	CREATE TABLE decision_values (
		col   text NOT NULL,
		value bytea NOT NULL,
		count bigint NOT NULL,
		PRIMARY KEY (col, value)
	);
	CREATE INDEX decision_values_top ON decision_values (col, count DESC, value);`,
}

// SchemaVersion is the schema version this binary writes.
var SchemaVersion = len(migrations)

// migrationLock is the advisory lock key that serialises migrations of
// replicas starting at once ("meshguar" in ASCII).
const migrationLock = 0x6d657368677561

// migrate applies the missing migrations in one transaction under an
// advisory lock, and refuses a schema newer than this binary.
func (db *DB) migrate(ctx context.Context) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("state.postgres: migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("state.postgres: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS meshguard_schema (
		version int NOT NULL, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("state.postgres: migrate: %w", err)
	}
	var have int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM meshguard_schema`).Scan(&have); err != nil {
		return fmt.Errorf("state.postgres: migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("state.postgres: the database schema is version %d, newer than this distributor's %d: a newer meshguard has migrated it; run that version (downgrades are not supported)", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("state.postgres: migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO meshguard_schema (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("state.postgres: migration %d: %w", v, err)
		}
		db.log.Info("state.postgres: schema migrated", "version", v)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("state.postgres: migrate: %w", err)
	}
	return nil
}
