package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/policies/bundle"
)

// defaultRegistryBundleLifetime is registry.bundles.lifetime's default.
const defaultRegistryBundleLifetime = 7 * 24 * time.Hour

// regPublisher compiles the registry into registry bundles and publishes
// them to <channel>.registry of every configured channel: on every change
// (before the API answers), at start, and again when half a bundle's
// lifetime has passed or a publish failed.
type regPublisher struct {
	s        *Server
	key      jwk.Key
	pubs     jwk.Set
	lifetime time.Duration
	// channels are the registry channels and the scope their bundles carry.
	channels map[string]string

	mu      sync.Mutex // serialises compiles and publishes
	revoked registry.Revoked
	dirty   bool
	last    time.Time // of the last successful publish
}

// registryVerifier verifies registry bundles: signed by the registry key
// and holding registry-derived content only (else 422 at publish).
type registryVerifier struct{ keys jwk.Set }

// Verify implements bundles.Verifier.
func (v registryVerifier) Verify(data []byte, scope string, last uint64) (bundles.Verified, error) {
	if err := singleStream(data, bundle.DefaultMaxUncompressed); err != nil {
		return bundles.Verified{}, err
	}
	b, err := bundle.OpenRegistry(data, bundle.VerifyOptions{Keys: v.keys, MinRevision: last, Scope: scope, Now: time.Now()})
	if err != nil {
		if errors.Is(err, bundle.ErrRollback) {
			return bundles.Verified{}, fmt.Errorf("%w: %w", bundles.ErrConflict, err)
		}
		return bundles.Verified{}, err
	}
	return bundles.Verified{Revision: b.Manifest.Revision, Created: b.Manifest.Created, Expires: b.Manifest.Expires, KeyID: b.Manifest.KeyID}, nil
}

// routedVerifier sends registry channels' bundles (scope ending
// bundle.RegistrySuffix, which authors' channels may not use) to the
// registry verifier and every other to the authors' one: neither key is
// accepted where the other's is.
type routedVerifier struct {
	authors  bundles.Verifier
	registry bundles.Verifier
}

// Verify implements bundles.Verifier.
func (v routedVerifier) Verify(data []byte, scope string, last uint64) (bundles.Verified, error) {
	if strings.HasSuffix(scope, bundle.RegistrySuffix) {
		return v.registry.Verify(data, scope, last)
	}
	return v.authors.Verify(data, scope, last)
}

// loadOrCreateRegistryKey reads the registry's signing key, generating it
// (and <path>.pub) at first start.
func loadOrCreateRegistryKey(path string) (jwk.Key, jwk.Set, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := bundle.ParseSigningKey(b)
		if err != nil {
			return nil, nil, fmt.Errorf("registry bundle key %s: %w", path, err)
		}
		pub, err := k.PublicKey()
		if err != nil {
			return nil, nil, err
		}
		set := jwk.NewSet()
		_ = set.AddKey(pub)
		return k, set, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("registry bundle key: %w", err)
	}
	k, set, err := bundle.GenerateKey(bundle.AlgEd25519)
	if err != nil {
		return nil, nil, err
	}
	kb, err := json.Marshal(k)
	if err != nil {
		return nil, nil, err
	}
	pb, err := json.Marshal(set)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("registry bundle key: %w", err)
	}
	if err := writeFileSync(path+".pub", pb, 0o644); err != nil {
		return nil, nil, err
	}
	if err := writeFileSync(path, kb, 0o600); err != nil {
		return nil, nil, err
	}
	return k, set, nil
}

// writeFileSync writes a file through a synced temporary file and a rename.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// newRegPublisher loads the registry key and names the registry channels
// (nil when registry bundles are disabled or no organisation is configured).
func (s *Server) newRegPublisher() (*regPublisher, error) {
	bc := s.cfg.Registry.Bundles
	if bc.Disabled || len(s.cfg.Registry.Organisations) == 0 {
		// Without organisations nobody can register anything.
		return nil, nil
	}
	path := bc.KeyFile
	if path == "" {
		path = filepath.Join(s.cfg.Data, "registry-bundle.key")
	}
	k, pubs, err := loadOrCreateRegistryKey(path)
	if err != nil {
		return nil, err
	}
	p := &regPublisher{s: s, key: k, pubs: pubs, lifetime: bc.Lifetime, channels: map[string]string{}}
	if p.lifetime == 0 {
		p.lifetime = defaultRegistryBundleLifetime
	}
	for name, ch := range s.cfg.Bundles.Channels {
		scope := ch.Scope
		if scope == "" {
			scope = name
		}
		p.channels[bundle.RegistryChannel(name)] = scope + bundle.RegistrySuffix
	}
	s.log.Info("registry bundles are signed by", "key_file", path, "kid", k.KeyID(), "channels", len(p.channels))
	return p, nil
}

// recover reads the deregistered ids from the registry channels' latest
// bundles (their data/ file), so they stay revoked across restarts.
func (p *regPublisher) recover() {
	for name := range p.channels {
		snap, err := p.s.reg.Latest(name)
		if err != nil || snap == nil {
			continue
		}
		b, err := bundle.Verify(snap.Data, bundle.VerifyOptions{Keys: p.pubs, Now: time.Now(), Grace: 100 * 365 * 24 * time.Hour})
		if err != nil {
			p.s.log.Warn("registry bundle not readable; its deregistered ids are not recovered", "channel", name, "err", err)
			continue
		}
		var rv registry.Revoked
		if err := json.Unmarshal(b.Files[bundle.DataDir+registry.DataRevoked], &rv); err == nil {
			p.revoked.Workloads = append(p.revoked.Workloads, rv.Workloads...)
			p.revoked.Devices = append(p.revoked.Devices, rv.Devices...)
		}
	}
}

// changed notes a registry change and publishes its effect.
func (p *regPublisher) changed(ctx context.Context, ch registry.Change) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case ch.Op == registry.OpDelete && ch.Kind == registry.KindWorkload:
		p.revoked.Workloads = append(p.revoked.Workloads, ch.ID)
	case ch.Op == registry.OpDelete && ch.Kind == registry.KindDevice:
		p.revoked.Devices = append(p.revoked.Devices, ch.ID)
	}
	return p.publishLocked(ctx)
}

// publish compiles and publishes the registry now.
func (p *regPublisher) publish(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.publishLocked(ctx)
}

func (p *regPublisher) publishLocked(ctx context.Context) error {
	p.dirty = true
	snap, err := registry.Load(ctx, p.s.registry.Store())
	if err != nil {
		return err
	}
	pols, data, err := registry.Sources(snap, p.revoked, p.s.cfg.Registry.DeviceClasses)
	if err != nil {
		return err
	}
	files := make(map[string][]byte, len(pols)+len(data)+1)
	for n, b := range pols {
		files[bundle.SourcesDir+n] = b
	}
	for n, b := range data {
		files[bundle.DataDir+n] = b
	}
	if len(pols) == 0 {
		files[bundle.SourcesDir+"registry/empty.yaml"] = []byte("# the registry holds no entries\n")
	}
	// The compiled form of the revoked list is the one kept.
	var rv registry.Revoked
	_ = json.Unmarshal(data[registry.DataRevoked], &rv)
	p.revoked = rv
	names := make([]string, 0, len(p.channels))
	for n := range p.channels {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	var errs []error
	for _, name := range names {
		rev := uint64(1)
		if snap, err := p.s.reg.Latest(name); err == nil && snap != nil {
			rev = snap.Info.Revision + 1
		}
		// Revisions also follow the clock, so a replica that missed a
		// publish still goes above it.
		if ms := uint64(now.UnixMilli()); ms > rev {
			rev = ms
		}
		b, err := bundle.PackRegistry(files, bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: rev, Created: now,
			Expires: now.Add(p.lifetime), Scope: []string{p.channels[name]}, Key: p.key}})
		if err != nil {
			errs = append(errs, fmt.Errorf("registry bundle for %s: %w", name, err))
			continue
		}
		ri, err := p.s.reg.Publish(name, b)
		if err != nil {
			errs = append(errs, fmt.Errorf("registry bundle for %s: %w", name, err))
			continue
		}
		p.s.m.publishes.WithLabelValues(name, "ok").Inc()
		p.s.m.revision.WithLabelValues(name).Set(float64(ri.Revision))
		p.s.setExpiry(name, ri)
	}
	if err := errors.Join(errs...); err != nil {
		p.s.log.Error("registry bundle publish failed (retried every second)", "err", err)
		return err
	}
	p.dirty, p.last = false, now
	return nil
}

// run republishes after a failure and when half a bundle's lifetime has
// passed, until ctx ends.
func (p *regPublisher) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		due := p.dirty || time.Since(p.last) > p.lifetime/2
		p.mu.Unlock()
		if due {
			_ = p.publish(ctx)
		}
	}
}
