// Package bundles is the distributor's policy bundle registry: named
// channels, each an append-only series of signed bundles with strictly
// increasing revisions. Publishing verifies the bundle (signature, scope,
// engine image against its sources) and applies the anti-rollback rule of
// policies/bundle (verify.Keeper) before anything is stored; the latest
// revision is kept in memory for cheap ETag polls, and waiters are woken
// when it changes.
package bundles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/distributor/state/fs"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// MediaType is the Content-Type of bundle bytes (the one declaration is
// policies/bundle's).
const MediaType = verify.MediaType

// Errors returned by the registry; the HTTP layer maps them to status codes.
var (
	// ErrConflict: the revision is not above the channel's latest (409).
	ErrConflict = errors.New("revision conflict")
	// ErrInvalid: the bundle failed verification (422).
	ErrInvalid = errors.New("invalid bundle")
	// ErrNotFound: unknown channel, revision or no bundle yet (404).
	ErrNotFound = errors.New("not found")
	// ErrBadChannel: the channel name is not allowed (400).
	ErrBadChannel = errors.New("bad channel name")
)

var channelRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidChannel reports whether name is a valid channel name.
func ValidChannel(name string) bool { return channelRE.MatchString(name) }

// Verified is what a Verifier learned from a good bundle.
type Verified struct {
	Revision uint64
	Created  time.Time
	// Expires is the end of the bundle's validity window (zero: unknown).
	Expires time.Time
	// KeyID is the kid of the key that signed the bundle.
	KeyID string
}

// Verifier checks a bundle's signature and contents. last is the channel's
// last accepted revision (0 for none): the bundle's revision must be above
// it, as verify.Options.MinRevision means, and one that is not must produce
// an error wrapping ErrConflict. scope is the channel's scope ("" for none).
type Verifier interface {
	Verify(data []byte, scope string, last uint64) (Verified, error)
}

// ChannelOptions configure one channel.
type ChannelOptions struct {
	// Scope is required of every bundle published to the channel (default:
	// the channel's name, also for channels a publish creates).
	Scope string
	// Retain overrides Options.Retain.
	Retain int
}

// Options configure a Registry.
type Options struct {
	// Dir is the filesystem store's directory (used when Store is nil).
	Dir string
	// Store is where channels live (default: the filesystem under Dir).
	Store    state.Channels
	Verifier Verifier
	// Retain is how many revisions to keep per channel (default 10, min 1).
	Retain int
	// Channels are the configured channels.
	Channels map[string]ChannelOptions
	// AutoChannels lets a publish create a channel that is not configured.
	AutoChannels bool
	Logger       *slog.Logger
}

// RevisionInfo describes one stored revision.
type RevisionInfo = state.Revision

// Snapshot is a channel's latest revision with its bytes.
type Snapshot struct {
	Info RevisionInfo
	ETag string
	Data []byte
}

type channel struct {
	name    string
	opts    ChannelOptions
	pubMu   sync.Mutex // serialises this process's publishes to the channel
	latest  *Snapshot  // guarded by Registry.mu
	revs    []RevisionInfo
	changed chan struct{} // closed and replaced on every publish
}

// Registry holds the channels. It is safe for concurrent use.
type Registry struct {
	opts     Options
	mu       sync.RWMutex
	channels map[string]*channel
}

// Open loads the registry from its store.
func Open(opts Options) (*Registry, error) {
	if opts.Verifier == nil {
		return nil, errors.New("bundles: a verifier is required")
	}
	if opts.Retain <= 0 {
		opts.Retain = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Store == nil {
		st, err := fs.Open(opts.Dir, opts.Logger)
		if err != nil {
			return nil, err
		}
		opts.Store = st
	}
	r := &Registry{opts: opts, channels: map[string]*channel{}}
	for name, co := range opts.Channels {
		if !ValidChannel(name) {
			return nil, fmt.Errorf("bundles: channel %q: %w", name, ErrBadChannel)
		}
		r.channels[name] = newChannel(name, co)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := opts.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	for _, name := range names {
		if !ValidChannel(name) {
			continue
		}
		ch := r.channels[name]
		if ch == nil {
			if !opts.AutoChannels {
				opts.Logger.Warn("bundles: stored channel is not configured; not served", "channel", name)
				continue
			}
			ch = newChannel(name, ChannelOptions{})
			r.channels[name] = ch
		}
	}
	for _, ch := range r.channels {
		if err := r.load(ctx, ch); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func newChannel(name string, co ChannelOptions) *channel {
	if co.Scope == "" {
		co.Scope = name
	}
	return &channel{name: name, opts: co, changed: make(chan struct{})}
}

// load reads a channel's revisions and latest bundle from the store and,
// when they differ from the cached ones, swaps them in and wakes waiters.
func (r *Registry) load(ctx context.Context, ch *channel) error {
	revs, data, err := r.opts.Store.Load(ctx, ch.name)
	if err != nil {
		return fmt.Errorf("bundles: channel %s: %w", ch.name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(revs) == 0 {
		return nil
	}
	latest := revs[len(revs)-1]
	if ch.latest != nil && ch.latest.Info.Revision >= latest.Revision {
		return nil
	}
	ch.revs = revs
	ch.latest = &Snapshot{Info: latest, ETag: latest.ETag(), Data: data}
	close(ch.changed)
	ch.changed = make(chan struct{})
	return nil
}

// Run follows other writers' commits (other replicas of a shared store)
// until ctx ends, so Latest and Wait answer with what any replica
// published. With the filesystem store it returns at once.
func (r *Registry) Run(ctx context.Context) {
	r.opts.Store.Watch(ctx, func(name string) {
		ch, err := r.channel(name, true)
		if err != nil {
			return
		}
		// refresh reads only the latest revision's metadata unless it moved,
		// so the periodic re-read of every channel stays cheap.
		if err := r.refresh(ctx, ch); err != nil && ctx.Err() == nil {
			r.opts.Logger.Warn("bundles: reloading a channel another replica changed", "channel", name, "err", err)
		}
	})
}

// refresh brings the cached channel up to the store's latest revision
// (a shared store's other writers), reloading only when it moved.
func (r *Registry) refresh(ctx context.Context, ch *channel) error {
	if !r.opts.Store.Shared() {
		return nil
	}
	latest, ok, err := r.opts.Store.Latest(ctx, ch.name)
	if err != nil || !ok {
		return err
	}
	r.mu.RLock()
	cur := ch.latest
	r.mu.RUnlock()
	if cur != nil && cur.Info.Revision >= latest.Revision {
		return nil
	}
	return r.load(ctx, ch)
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// channel returns the named channel, creating it when allowed.
func (r *Registry) channel(name string, create bool) (*channel, error) {
	if !ValidChannel(name) {
		return nil, fmt.Errorf("channel %q: %w", name, ErrBadChannel)
	}
	r.mu.RLock()
	ch := r.channels[name]
	r.mu.RUnlock()
	if ch != nil {
		return ch, nil
	}
	if !create || !r.opts.AutoChannels {
		return nil, fmt.Errorf("channel %q: %w", name, ErrNotFound)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch = r.channels[name]; ch == nil {
		ch = newChannel(name, ChannelOptions{})
		r.channels[name] = ch
	}
	return ch, nil
}

// Publish verifies data and stores it as the channel's new latest revision.
// The store's commit repeats the anti-rollback check in one transaction, so
// with a shared store two replicas publishing at once end with the higher
// revision latest and the lower one refused (ErrConflict).
func (r *Registry) Publish(name string, data []byte) (RevisionInfo, error) {
	ch, err := r.channel(name, true)
	if err != nil {
		return RevisionInfo{}, err
	}
	ch.pubMu.Lock()
	defer ch.pubMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.refresh(ctx, ch); err != nil {
		return RevisionInfo{}, fmt.Errorf("%w: %w", errStore, err)
	}
	r.mu.RLock()
	cur := ch.latest
	r.mu.RUnlock()
	var floor uint64
	if cur != nil {
		floor = cur.Info.Revision
		if digest(data) == cur.Info.Digest {
			return RevisionInfo{}, fmt.Errorf("%w: these bytes are already the latest revision %d", ErrConflict, floor)
		}
	}
	var ri RevisionInfo
	_, err = verify.NewKeeper(floor).Offer(data, func(last uint64) (uint64, error) {
		v, err := r.opts.Verifier.Verify(data, ch.opts.Scope, last)
		if err != nil {
			return 0, err
		}
		ri = RevisionInfo{Revision: v.Revision, Digest: digest(data), Created: v.Created.UTC(),
			Expires: v.Expires.UTC(), Published: time.Now().UTC(), Size: int64(len(data)), KeyID: v.KeyID}
		return v.Revision, nil
	}, func() error { return r.commit(ctx, ch, ri, data) })
	switch {
	case errors.Is(err, ErrConflict):
		return RevisionInfo{}, err
	case errors.Is(err, verify.ErrRollback):
		return RevisionInfo{}, fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, errStore):
		return RevisionInfo{}, err
	case err != nil:
		return RevisionInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ri, nil
}

// errStore marks a failure to store an accepted bundle (500, not 422).
var errStore = errors.New("bundle storage")

// commit stores an accepted revision and makes it the latest.
func (r *Registry) commit(ctx context.Context, ch *channel, ri RevisionInfo, data []byte) error {
	retain := r.opts.Retain
	if ch.opts.Retain > 0 {
		retain = ch.opts.Retain
	}
	if err := r.opts.Store.Commit(ctx, ch.name, ri, data, retain); err != nil {
		if errors.Is(err, state.ErrConflict) {
			// Another replica got there first: serve what it stored.
			_ = r.load(ctx, ch)
			return fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return fmt.Errorf("%w: %w", errStore, err)
	}
	r.mu.Lock()
	ch.latest = &Snapshot{Info: ri, ETag: ri.ETag(), Data: data}
	ch.revs = append(ch.revs, ri)
	if len(ch.revs) > retain {
		ch.revs = append([]RevisionInfo(nil), ch.revs[len(ch.revs)-retain:]...)
	}
	close(ch.changed)
	ch.changed = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// Latest returns the channel's latest revision.
func (r *Registry) Latest(name string) (*Snapshot, error) {
	ch, err := r.channel(name, false)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	s := ch.latest
	r.mu.RUnlock()
	if s == nil {
		return nil, fmt.Errorf("channel %q has no bundle yet: %w", name, ErrNotFound)
	}
	return s, nil
}

// Wait returns the latest snapshot as soon as its ETag differs from etag
// (at once if it already does), or nil when ctx ends first. A channel
// without a bundle counts as a differing ETag only once one is published.
// Waiting never creates a channel: an unknown one is ErrNotFound at once.
func (r *Registry) Wait(ctx context.Context, name, etag string) (*Snapshot, error) {
	ch, err := r.channel(name, false)
	if err != nil {
		return nil, err
	}
	for {
		r.mu.RLock()
		s, changed := ch.latest, ch.changed
		r.mu.RUnlock()
		if s != nil && s.ETag != etag {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// Revisions lists the retained revisions, oldest first.
func (r *Registry) Revisions(name string) ([]RevisionInfo, error) {
	ch, err := r.channel(name, false)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]RevisionInfo{}, ch.revs...), nil
}

// Revision returns one retained revision's bytes.
func (r *Registry) Revision(name string, rev uint64) (RevisionInfo, []byte, error) {
	revs, err := r.Revisions(name)
	if err != nil {
		return RevisionInfo{}, nil, err
	}
	i := sort.Search(len(revs), func(i int) bool { return revs[i].Revision >= rev })
	if i == len(revs) || revs[i].Revision != rev {
		return RevisionInfo{}, nil, fmt.Errorf("channel %q revision %d: %w", name, rev, ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, err := r.opts.Store.Bundle(ctx, name, rev)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return RevisionInfo{}, nil, fmt.Errorf("channel %q revision %d: %w", name, rev, ErrNotFound)
		}
		return RevisionInfo{}, nil, fmt.Errorf("bundles: %w", err)
	}
	return revs[i], data, nil
}

// Channels lists channel names with their latest revision (0 if none).
func (r *Registry) Channels() map[string]uint64 {
	latest := r.LatestInfos()
	out := make(map[string]uint64, len(latest))
	for n, ri := range latest {
		out[n] = ri.Revision
	}
	return out
}

// LatestInfos lists every channel with its latest revision's metadata (the
// zero RevisionInfo for a channel without a bundle; Expires is zero when the
// metadata predates expiry tracking).
func (r *Registry) LatestInfos() map[string]RevisionInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]RevisionInfo, len(r.channels))
	for n, ch := range r.channels {
		if ch.latest != nil {
			out[n] = ch.latest.Info
		} else {
			out[n] = RevisionInfo{}
		}
	}
	return out
}

// Writable probes the store (for /readyz).
func (r *Registry) Writable() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.opts.Store.Check(ctx)
}

// ParseRevision parses a revision path element.
func ParseRevision(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revision %q: %w", s, ErrNotFound)
	}
	return n, nil
}
