// Package state is the distributor's shared-state seam: where bundle
// channels (revisions, anti-rollback, retention) live. Two backends
// implement it: state/fs, the embedded default for one machine (files under
// the data directory), and state/postgres, which lets several stateless
// replicas share one PostgreSQL database. The bundle registry keeps its hot
// copy (latest snapshot, revision list) in memory and asks the backend only
// to load, commit and tell it about other writers' commits.
//
// The workload/device registry (issue 18) is meant to become a third
// interface here next to Channels, implemented by the same two backends
// (a new migration for postgres); nothing of it exists yet.
package state

import (
	"context"
	"errors"
	"strings"
	"time"
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
