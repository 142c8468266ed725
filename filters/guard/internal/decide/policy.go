package decide

import (
	"bytes"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// Install verifies data (signature, the compiled image, validity window,
// scope, anti-rollback) and makes its engine the enforced policy. On any
// failure the last good policy stays and the failure is counted and logged.
// from names where data came from, for the log.
func (g *Guard) Install(data []byte, from string) error {
	var pol *verify.Policy
	// The compiled engine image is the only policy form the filter loads:
	// loading reads only compiled/, so the YAML sources are never inflated
	// and the guard carries no policy-language parser.
	changed, err := g.keeper.Offer(data, func(last uint64) (uint64, error) {
		var err error
		pol, err = verify.Load(data, verify.Options{Keys: g.keys, MinRevision: last, Scope: g.cfg.Policy.Scope,
			Now: g.ports.Clock(), Grace: g.cfg.Policy.ExpiryGrace.Duration})
		if err != nil {
			return 0, err
		}
		return pol.Revision(), nil
	}, func() error { return g.use(pol) })
	if err != nil {
		g.ports.Telemetry.BundleRejected()
		g.ports.Log.Log(LevelError, fmt.Sprintf("meshguard: rejected policy bundle from %s (keeping revision %d): %v", from, g.Revision(), err))
		return err
	}
	if !changed { // the bytes already enforced
		return nil
	}
	g.ports.Log.Log(LevelInfo, fmt.Sprintf("meshguard: installed policy bundle revision %d (%s) from %s", pol.Revision(), pol.Digest, from))
	return nil
}

// use makes pol the policy decisions use.
func (g *Guard) use(pol *verify.Policy) error {
	eng, rev := pol.Engine, pol.Revision()
	// Trust domains whose JWT bundle the configuration left empty take their
	// keys from the policy bundle; a domain without keys verifies nothing.
	if g.svid != nil {
		for td, set := range g.cfg.Identity.JWTSVID.TrustDomains {
			if len(bytes.TrimSpace(set)) != 0 {
				continue
			}
			if jwks, ok := eng.JWKS(td); ok && len(jwks) > 0 {
				if err := g.svid.SetBundle(td, jwks); err != nil {
					return fmt.Errorf("revision %d: %w", rev, err)
				}
			}
		}
	}
	if err := g.setupUsers(eng); err != nil {
		return fmt.Errorf("revision %d: %w", rev, err)
	}
	g.pol, g.polErr, g.peerVersion = pol, nil, eng.UsesPeerVersion()
	g.ports.Telemetry.BundleLoaded(rev, pol.Manifest.Expires)
	g.reportSunset(g.ports.Clock())
	return nil
}

// reportSunset reports the enforced policy's nearest version sunset after
// now (none without a policy).
func (g *Guard) reportSunset(now time.Time) {
	var next time.Time
	if g.pol != nil {
		next, _ = g.pol.Engine.NextSunset(now)
	}
	g.sunset = 0
	if !next.IsZero() {
		g.sunset = next.UnixNano()
	}
	g.ports.Telemetry.NextSunset(next)
}

// Revision returns the last accepted bundle revision: the one enforced, or
// the one that expired, or the configured minimum before any. A bundle
// must be above it.
func (g *Guard) Revision() uint64 {
	if g.keeper == nil {
		return 0
	}
	return g.keeper.Revision()
}

// Enforced is the revision of the enforced policy (0 without one).
func (g *Guard) Enforced() uint64 {
	if g.pol == nil {
		return 0
	}
	return g.pol.Revision()
}

// PickUp installs a newer bundle another worker fetched. It runs before
// every decision, so all workers enforce a new bundle (a revocation, say)
// from their next request on, for one small shared-data read.
func (g *Guard) PickUp() {
	g.pickUpRegistry()
	if g.channel == nil || g.channel.Announced() <= g.Revision() {
		return
	}
	if data, ok := g.channel.Shared(g.Revision()); ok {
		_ = g.Install(data, "shared data")
	}
}

// checkExpiry drops a policy whose bundle has expired (past the configured
// grace): fail closed rather than enforce stale revocations forever. Its
// revision stays the last accepted one, so no older bundle comes back.
func (g *Guard) checkExpiry(now time.Time) {
	if g.pol == nil || !g.pol.Expired(now) {
		return
	}
	exp := g.pol.Manifest.Expires
	grace := g.cfg.Policy.ExpiryGrace.Duration
	if grace > 0 && g.polErr == nil {
		// Entering the grace: say so once (polErr stays nil while a fresh
		// bundle is enforced; it now notes why this one is degraded).
		g.polErr = fmt.Errorf("policy bundle expired at %s", exp.UTC().Format(time.RFC3339))
		g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: policy bundle revision %d expired at %s; enforcing it within policy.expiryGrace until %s",
			g.pol.Revision(), exp.UTC().Format(time.RFC3339), exp.Add(grace).UTC().Format(time.RFC3339)))
	}
	if !now.Before(exp.Add(grace)) {
		g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: policy bundle revision %d expired at %s; failing closed until a new bundle arrives",
			g.pol.Revision(), exp.UTC().Format(time.RFC3339)))
		g.pol = nil
		g.polErr = fmt.Errorf("policy bundle expired at %s", exp.UTC().Format(time.RFC3339))
		g.reportSunset(now)
	}
}
