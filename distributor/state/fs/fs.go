// Package fs is the embedded state backend: bundle channels as files under
// one directory (DIR/<channel>/<revision>.bundle and .json), for a single
// distributor. A revision's metadata is written after its bytes and marks
// it committed; both are written atomically and fsynced.
package fs

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
	"sort"
	"strings"
	"sync"

	"github.com/meshguard/meshguard/distributor/state"
)

// Channels is the filesystem implementation of state.Channels.
type Channels struct {
	dir string
	log *slog.Logger
	mu  sync.Mutex // serialises commits (the latest check and the write)
}

// Open returns the channel store rooted at dir, creating it.
func Open(dir string, log *slog.Logger) (*Channels, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	return &Channels{dir: dir, log: log}, nil
}

var _ state.Channels = (*Channels)(nil)

func revFile(rev uint64, ext string) string { return fmt.Sprintf("%020d%s", rev, ext) }

// validName keeps a stored directory name from leaving dir; callers check
// the channel name rules.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`)
}

// List implements state.Channels.
func (c *Channels) List(context.Context) ([]string, error) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && validName(e.Name()) && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (c *Channels) revisions(channel string) ([]state.Revision, error) {
	dir := filepath.Join(c.dir, channel)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	var revs []state.Revision
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") || strings.HasPrefix(n, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("bundles: %w", err)
		}
		var ri state.Revision
		if err := json.Unmarshal(b, &ri); err != nil {
			return nil, fmt.Errorf("bundles: %s/%s: %w", channel, n, err)
		}
		if _, err := os.Stat(filepath.Join(dir, revFile(ri.Revision, ".bundle"))); err != nil {
			c.log.Warn("bundles: revision metadata without bundle; ignored", "channel", channel, "revision", ri.Revision)
			continue
		}
		revs = append(revs, ri)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i].Revision < revs[j].Revision })
	return revs, nil
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Load implements state.Channels; the latest bundle's bytes must match its
// recorded digest.
func (c *Channels) Load(_ context.Context, channel string) ([]state.Revision, []byte, error) {
	if !validName(channel) {
		return nil, nil, fmt.Errorf("channel %q: %w", channel, state.ErrNotFound)
	}
	revs, err := c.revisions(channel)
	if err != nil || len(revs) == 0 {
		return nil, nil, err
	}
	latest := revs[len(revs)-1]
	data, err := os.ReadFile(filepath.Join(c.dir, channel, revFile(latest.Revision, ".bundle")))
	if err != nil {
		return nil, nil, fmt.Errorf("bundles: %w", err)
	}
	if d := digest(data); d != latest.Digest {
		return nil, nil, fmt.Errorf("bundles: %s revision %d: stored bytes have digest %s, metadata says %s", channel, latest.Revision, d, latest.Digest)
	}
	return revs, data, nil
}

// Latest implements state.Channels.
func (c *Channels) Latest(_ context.Context, channel string) (state.Revision, bool, error) {
	if !validName(channel) {
		return state.Revision{}, false, nil
	}
	revs, err := c.revisions(channel)
	if err != nil || len(revs) == 0 {
		return state.Revision{}, false, err
	}
	return revs[len(revs)-1], true, nil
}

// Commit implements state.Channels.
func (c *Channels) Commit(_ context.Context, channel string, ri state.Revision, data []byte, retain int) error {
	if !validName(channel) {
		return fmt.Errorf("channel %q: %w", channel, state.ErrNotFound)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	revs, err := c.revisions(channel)
	if err != nil {
		return err
	}
	if n := len(revs); n > 0 && ri.Revision <= revs[n-1].Revision {
		return fmt.Errorf("%w: revision %d is not above the stored revision %d", state.ErrConflict, ri.Revision, revs[n-1].Revision)
	}
	dir := filepath.Join(c.dir, channel)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	meta, _ := json.Marshal(ri)
	// The bundle first, then its metadata: metadata marks the revision committed.
	if err := writeFileSync(dir, revFile(ri.Revision, ".bundle"), data); err != nil {
		return err
	}
	if err := writeFileSync(dir, revFile(ri.Revision, ".json"), meta); err != nil {
		return err
	}
	revs = append(revs, ri)
	if retain < 1 {
		retain = 1
	}
	if len(revs) > retain {
		for _, old := range revs[:len(revs)-retain] {
			os.Remove(filepath.Join(dir, revFile(old.Revision, ".json")))
			os.Remove(filepath.Join(dir, revFile(old.Revision, ".bundle")))
		}
	}
	return nil
}

// Bundle implements state.Channels.
func (c *Channels) Bundle(_ context.Context, channel string, rev uint64) ([]byte, error) {
	if !validName(channel) {
		return nil, fmt.Errorf("channel %q: %w", channel, state.ErrNotFound)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, channel, revFile(rev, ".bundle")))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("channel %q revision %d: %w", channel, rev, state.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("bundles: %w", err)
	}
	return data, nil
}

// Watch implements state.Channels: the directory has one writer, this
// process, so there is nothing to watch.
func (c *Channels) Watch(context.Context, func(string)) {}

// Shared implements state.Channels.
func (c *Channels) Shared() bool { return false }

// Check probes that the directory is writable.
func (c *Channels) Check(context.Context) error {
	f, err := os.CreateTemp(c.dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("bundle storage not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
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
