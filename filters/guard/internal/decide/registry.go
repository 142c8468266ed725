package decide

import (
	"errors"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/distribution"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// registrySuffix ends the registry channel's name and its bundles' scope
// (policies/bundle.RegistrySuffix; the guard links only bundle/verify).
const registrySuffix = ".registry"

// registryPart is the registry-derived bundle the guard decides with next
// to the authors' one (policy.registryKeys): its own keys, anti-rollback
// series and channel. Its engine holds only registry-derived content
// (verify.LoadRegistry), so it can deny and allow only devices no authors'
// DevicePolicy selects (policies.Engine.DecideWith).
type registryPart struct {
	keys    *verify.KeySet
	keeper  *verify.Keeper
	pol     *verify.Policy // nil: none yet (or expired): requests get 503
	err     error
	channel *distribution.Channel
	scope   string
}

// configureRegistry sets up the registry part when policy.registryKeys is set.
func (g *Guard) configureRegistry(cfg *config.Config, seed uint64) error {
	p := cfg.Policy
	if len(p.RegistryKeys) == 0 {
		return nil
	}
	keys, err := verify.ParseKeySet(p.RegistryKeys)
	if err != nil {
		return fmt.Errorf("policy.registryKeys: %w", err)
	}
	if kid := keys.SharedKID(g.keys); kid != "" {
		return fmt.Errorf("policy.registryKeys: key %q is also in policy.verifyKeys (the registry's key must be its own)", kid)
	}
	rc := *p.Distributor
	rc.Channel += registrySuffix
	r := &registryPart{keys: keys, keeper: verify.NewKeeper(0), err: errors.New("no registry bundle loaded yet"),
		channel: distribution.New(g.ports.Shared, &rc, seed)}
	if p.Scope != "" {
		r.scope = p.Scope + registrySuffix
	}
	g.reg = r
	return nil
}

// InstallRegistry verifies a registry bundle (signature by the registry
// key, registry-derived content only, validity, scope, anti-rollback) and
// decides with it from now on. On any failure the last good one stays.
func (g *Guard) InstallRegistry(data []byte, from string) error {
	r := g.reg
	if r == nil {
		return errors.New("no registry bundle configured (policy.registryKeys)")
	}
	var pol *verify.Policy
	changed, err := r.keeper.Offer(data, func(last uint64) (uint64, error) {
		var err error
		pol, err = verify.LoadRegistry(data, verify.Options{Keys: r.keys, MinRevision: last, Scope: r.scope,
			Now: g.ports.Clock(), Grace: g.cfg.Policy.ExpiryGrace.Duration})
		if err != nil {
			return 0, err
		}
		return pol.Revision(), nil
	}, func() error {
		r.pol, r.err = pol, nil
		return nil
	})
	if err != nil {
		g.ports.Telemetry.BundleRejected()
		g.ports.Log.Log(LevelError, fmt.Sprintf("meshguard: rejected registry bundle from %s (keeping revision %d): %v", from, r.keeper.Revision(), err))
		return err
	}
	if changed {
		g.ports.Log.Log(LevelInfo, fmt.Sprintf("meshguard: installed registry bundle revision %d (%s) from %s", pol.Revision(), pol.Digest, from))
	}
	return nil
}

// registryEngine is the engine of the registry bundle decisions use (nil
// without policy.registryKeys), or why requests get 503.
func (g *Guard) registryEngine(now time.Time) (*policies.Engine, error) {
	r := g.reg
	if r == nil {
		return nil, nil
	}
	if r.pol != nil && !now.Before(r.pol.Manifest.Expires.Add(g.cfg.Policy.ExpiryGrace.Duration)) {
		// Fail closed, as for the authors' bundle: its revocations must
		// not lapse silently.
		g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: registry bundle revision %d expired at %s; failing closed until a new one arrives",
			r.pol.Revision(), r.pol.Manifest.Expires.UTC().Format(time.RFC3339)))
		r.err = fmt.Errorf("registry bundle expired at %s", r.pol.Manifest.Expires.UTC().Format(time.RFC3339))
		r.pol = nil
	}
	if r.pol == nil {
		return nil, r.err
	}
	return r.pol.Engine, nil
}

// RegistryChannel returns the registry channel the guard polls (nil without).
func (g *Guard) RegistryChannel() *distribution.Channel {
	if g.reg == nil {
		return nil
	}
	return g.reg.channel
}

// RegistryRevision is the last accepted registry bundle revision (0: none).
func (g *Guard) RegistryRevision() uint64 {
	if g.reg == nil {
		return 0
	}
	return g.reg.keeper.Revision()
}

// pickUpRegistry installs a newer registry bundle another worker fetched.
func (g *Guard) pickUpRegistry() {
	r := g.reg
	if r == nil || r.channel.Announced() <= r.keeper.Revision() {
		return
	}
	if data, ok := r.channel.Shared(r.keeper.Revision()); ok {
		_ = g.InstallRegistry(data, "shared data")
	}
}

// RegistryInstalled reports whether a registry bundle is enforced.
func (g *Guard) RegistryInstalled() bool { return g.reg != nil && g.reg.pol != nil }
