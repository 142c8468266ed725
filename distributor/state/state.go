// Package state is the distributor's shared-state seam: where bundle
// channels (revisions, anti-rollback, retention) and the decision log live.
// Two backends implement it: the embedded default for one machine (state/fs
// for channels, decisionlog.Log's segment files for decisions, both under the
// data directory), and state/postgres, which lets several stateless replicas
// share one PostgreSQL database. The bundle registry keeps its hot copy
// (latest snapshot, revision list) in memory and asks the backend only to
// load, commit and tell it about other writers' commits.
//
// The workload/device registry (issue 18) is meant to become a third
// interface here next to Channels, implemented by the same two backends
// (a new migration for postgres); nothing of it exists yet.
package state

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// ErrConflict: the revision is not above the channel's stored latest; the
// commit changed nothing.
var ErrConflict = errors.New("revision conflict")

// ErrNotFound: no such channel or revision is stored.
var ErrNotFound = errors.New("not found")

// ErrUnavailable: the store cannot be reached now (a database restart);
// the request may be retried (503).
var ErrUnavailable = errors.New("state store unavailable")

// Revision describes one stored bundle revision.
type Revision struct {
	Revision  uint64    `json:"revision"`
	Digest    string    `json:"digest"` // "sha256:<hex>" of the bundle bytes
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"`
	Published time.Time `json:"published"`
	Size      int64     `json:"size"`
	// KeyID is the kid of the signing key (empty for revisions stored
	// before it was recorded).
	KeyID string `json:"key_id,omitempty"`
}

// ETag is the entity tag (quoted hex digest) of the revision.
func (r Revision) ETag() string { return `"` + strings.TrimPrefix(r.Digest, "sha256:") + `"` }

// Channels stores bundle channels. Implementations are safe for concurrent
// use; Commit is atomic against every other writer of the same store
// (other goroutines, and for a shared backend other replicas).
type Channels interface {
	// List names the stored channels.
	List(ctx context.Context) ([]string, error)
	// Load returns the channel's retained revisions, oldest first, and the
	// bytes of the last one (nil, nil, nil for a channel without revisions).
	Load(ctx context.Context, channel string) ([]Revision, []byte, error)
	// Latest returns the channel's latest revision without its bytes (ok
	// false when there is none); a cheap check before a reload.
	Latest(ctx context.Context, channel string) (rev Revision, ok bool, err error)
	// Commit stores data as the channel's new latest revision if rev is
	// above the stored latest, in one transaction with that check; it
	// returns an error wrapping ErrConflict otherwise. It then keeps only
	// the newest retain revisions.
	Commit(ctx context.Context, channel string, rev Revision, data []byte, retain int) error
	// Bundle returns one retained revision's bytes (ErrNotFound when gone).
	Bundle(ctx context.Context, channel string, rev uint64) ([]byte, error)
	// Watch calls changed with a channel's name whenever another writer
	// (another replica) may have committed to it, until ctx ends. A store
	// that has no other writers returns at once.
	Watch(ctx context.Context, changed func(channel string))
	// Shared reports whether other processes write the store, so a
	// publish must re-read the latest revision first.
	Shared() bool
	// Check reports whether the store accepts writes (for /readyz).
	Check(ctx context.Context) error
}

// DecisionLog is the decision log the HTTP handlers use: one sequenced,
// verifiable log (RFC 6962 tree, signed checkpoints). *decisionlog.Log is
// the filesystem implementation (one per distributor); postgres.Decisions
// is the deployment's one log shared by every replica. Methods that cannot
// fail in the file log (Head, Latest) answer the last known value when a
// shared store is unreachable; the others return errors wrapping
// ErrUnavailable then.
type DecisionLog interface {
	// Append stores a batch durably; it returns once the records are
	// committed, dropping retried duplicates.
	Append(recs []decisionlog.Record) (decisionlog.Appended, error)
	Head() decisionlog.Head
	// Latest is the latest signed checkpoint; Checkpoint signs one now.
	Latest() decisionlog.Checkpoint
	Checkpoint() (decisionlog.Checkpoint, error)
	Key() *decisionlog.Key
	// ProveInclusion proves record seq (stored as line, which a store
	// holding its records may ignore) in the tree of size records.
	ProveInclusion(seq, size uint64, line []byte) (decisionlog.InclusionProof, error)
	ProveConsistency(from, size uint64) (decisionlog.ConsistencyProof, error)
	QueryEach(q decisionlog.Query, emit func(line []byte) error) (uint64, error)
	// WriteLog streams records 1..head.Seq, one stored line each.
	WriteLog(w io.Writer, head decisionlog.Head) error
	Anchor() decisionlog.Anchor
	Size() (segs int, bytes int64, err error)
	Writable() error
	Close() error
}

var _ DecisionLog = (*decisionlog.Log)(nil)
