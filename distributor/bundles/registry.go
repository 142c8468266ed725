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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
	Dir      string
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
type RevisionInfo struct {
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
func (ri RevisionInfo) ETag() string { return `"` + strings.TrimPrefix(ri.Digest, "sha256:") + `"` }

// Snapshot is a channel's latest revision with its bytes.
type Snapshot struct {
	Info RevisionInfo
	ETag string
	Data []byte
}

type channel struct {
	name    string
	opts    ChannelOptions
	keeper  *verify.Keeper // serialises publishes, refuses rollbacks
	latest  *Snapshot      // guarded by Registry.mu
	revs    []RevisionInfo
	changed chan struct{} // closed and replaced on every publish
}

// Registry holds the channels. It is safe for concurrent use.
type Registry struct {
	opts     Options
	mu       sync.RWMutex
	channels map[string]*channel
}

// Open loads the registry stored under opts.Dir.
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
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	r := &Registry{opts: opts, channels: map[string]*channel{}}
	for name, co := range opts.Channels {
		if !ValidChannel(name) {
			return nil, fmt.Errorf("bundles: channel %q: %w", name, ErrBadChannel)
		}
		r.channels[name] = newChannel(name, co)
	}
	ents, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !ValidChannel(e.Name()) {
			continue
		}
		ch := r.channels[e.Name()]
		if ch == nil {
			if !opts.AutoChannels {
				opts.Logger.Warn("bundles: stored channel is not configured; not served", "channel", e.Name())
				continue
			}
			ch = newChannel(e.Name(), ChannelOptions{})
			r.channels[e.Name()] = ch
		}
		if err := r.load(ch); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func newChannel(name string, co ChannelOptions) *channel {
	if co.Scope == "" {
		co.Scope = name
	}
	return &channel{name: name, opts: co, keeper: verify.NewKeeper(0), changed: make(chan struct{})}
}

func (r *Registry) chanDir(name string) string { return filepath.Join(r.opts.Dir, name) }

func revFile(rev uint64, ext string) string { return fmt.Sprintf("%020d%s", rev, ext) }

// load reads a channel's revision metadata and its latest bundle.
func (r *Registry) load(ch *channel) error {
	dir := r.chanDir(ch.name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("bundles: %w", err)
		}
		var ri RevisionInfo
		if err := json.Unmarshal(b, &ri); err != nil {
			return fmt.Errorf("bundles: %s/%s: %w", ch.name, n, err)
		}
		if _, err := os.Stat(filepath.Join(dir, revFile(ri.Revision, ".bundle"))); err != nil {
			r.opts.Logger.Warn("bundles: revision metadata without bundle; ignored", "channel", ch.name, "revision", ri.Revision)
			continue
		}
		ch.revs = append(ch.revs, ri)
	}
	sort.Slice(ch.revs, func(i, j int) bool { return ch.revs[i].Revision < ch.revs[j].Revision })
	if len(ch.revs) == 0 {
		return nil
	}
	latest := ch.revs[len(ch.revs)-1]
	data, err := os.ReadFile(filepath.Join(dir, revFile(latest.Revision, ".bundle")))
	if err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	if d := digest(data); d != latest.Digest {
		return fmt.Errorf("bundles: %s revision %d: stored bytes have digest %s, metadata says %s", ch.name, latest.Revision, d, latest.Digest)
	}
	ch.latest = &Snapshot{Info: latest, ETag: latest.ETag(), Data: data}
	ch.keeper = verify.NewKeeper(latest.Revision)
	return nil
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
func (r *Registry) Publish(name string, data []byte) (RevisionInfo, error) {
	ch, err := r.channel(name, true)
	if err != nil {
		return RevisionInfo{}, err
	}
	var ri RevisionInfo
	changed, err := ch.keeper.Offer(data, func(last uint64) (uint64, error) {
		v, err := r.opts.Verifier.Verify(data, ch.opts.Scope, last)
		if err != nil {
			return 0, err
		}
		ri = RevisionInfo{Revision: v.Revision, Digest: digest(data), Created: v.Created.UTC(),
			Expires: v.Expires.UTC(), Published: time.Now().UTC(), Size: int64(len(data)), KeyID: v.KeyID}
		return v.Revision, nil
	}, func() error { return r.commit(ch, ri, data) })
	switch {
	case errors.Is(err, ErrConflict):
		return RevisionInfo{}, err
	case errors.Is(err, verify.ErrRollback):
		return RevisionInfo{}, fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, errStore):
		return RevisionInfo{}, err
	case err != nil:
		return RevisionInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	case !changed:
		return RevisionInfo{}, fmt.Errorf("%w: these bytes are already the latest revision %d", ErrConflict, ch.keeper.Revision())
	}
	return ri, nil
}

// errStore marks a failure to store an accepted bundle (500, not 422).
var errStore = errors.New("bundle storage")

// commit stores an accepted revision and makes it the latest.
func (r *Registry) commit(ch *channel, ri RevisionInfo, data []byte) error {
	dir := r.chanDir(ch.name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: %w", errStore, err)
	}
	meta, _ := json.Marshal(ri)
	// The bundle first, then its metadata: metadata marks the revision committed.
	if err := writeFileSync(dir, revFile(ri.Revision, ".bundle"), data); err != nil {
		return fmt.Errorf("%w: %w", errStore, err)
	}
	if err := writeFileSync(dir, revFile(ri.Revision, ".json"), meta); err != nil {
		return fmt.Errorf("%w: %w", errStore, err)
	}
	r.mu.Lock()
	ch.latest = &Snapshot{Info: ri, ETag: ri.ETag(), Data: data}
	ch.revs = append(ch.revs, ri)
	retain := r.opts.Retain
	if ch.opts.Retain > 0 {
		retain = ch.opts.Retain
	}
	var drop []RevisionInfo
	if len(ch.revs) > retain {
		drop = append(drop, ch.revs[:len(ch.revs)-retain]...)
		ch.revs = append([]RevisionInfo(nil), ch.revs[len(ch.revs)-retain:]...)
	}
	close(ch.changed)
	ch.changed = make(chan struct{})
	r.mu.Unlock()
	for _, old := range drop {
		os.Remove(filepath.Join(dir, revFile(old.Revision, ".json")))
		os.Remove(filepath.Join(dir, revFile(old.Revision, ".bundle")))
	}
	return nil
}

// writeFileSync writes name in dir atomically and durably.
func writeFileSync(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("bundles: store %s: %w", name, werr)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	defer d.Close()
	return d.Sync()
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
	data, err := os.ReadFile(filepath.Join(r.chanDir(name), revFile(rev, ".bundle")))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
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

// Writable probes the storage directory (for /readyz).
func (r *Registry) Writable() error {
	f, err := os.CreateTemp(r.opts.Dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("bundle storage not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// ParseRevision parses a revision path element.
func ParseRevision(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revision %q: %w", s, ErrNotFound)
	}
	return n, nil
}
