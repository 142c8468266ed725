package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/policies/bundle"
)

// expiryWarnWindow: bundles that expire sooner than this get a warning.
// Proxies fail closed once their bundle expires, so a bundle about to
// expire is one publish away from a mesh-wide outage.
const expiryWarnWindow = 7 * 24 * time.Hour

// warnExpiry writes a warning to w when a bundle revision has expired or
// expires within expiryWarnWindow of now, and reports whether it did.
func warnExpiry(w io.Writer, what string, rev uint64, expires, now time.Time) bool {
	if expires.IsZero() {
		return false
	}
	left := expires.Sub(now)
	switch {
	case left <= 0:
		fmt.Fprintf(w, "warning: %s revision %d expired at %s (%s ago): proxies refuse it and fail closed\n",
			what, rev, expires.UTC().Format(time.RFC3339), (-left).Round(time.Minute))
	case left <= expiryWarnWindow:
		fmt.Fprintf(w, "warning: %s revision %d expires at %s (in %s): proxies fail closed then unless a newer revision is published\n",
			what, rev, expires.UTC().Format(time.RFC3339), left.Round(time.Minute))
	default:
		return false
	}
	return true
}

// guardPolicy is the part of a guard configuration the renderers check
// before writing anything.
type guardPolicy struct {
	keys    []byte
	inline  []byte
	scope   string
	channel string
	// jwks are the other verification sets (JWT-SVID trust domains, device
	// issuers), by configuration field.
	jwks map[string][]byte
}

// policyOf extracts the verification keys, inline bundle, scope and channel
// from the render flags or the --config file.
func policyOf(in envoy.GuardInput) (guardPolicy, error) {
	if len(bytes.TrimSpace(in.File)) == 0 {
		gp := guardPolicy{keys: in.VerifyKeys, inline: in.InlineBundle, scope: in.Scope, channel: in.Channel, jwks: map[string][]byte{}}
		for td, set := range in.JWTTrustDomains {
			gp.jwks["--jwt-trust-domain "+td] = set
		}
		return gp, nil
	}
	j, err := yaml.YAMLToJSON(in.File)
	if err != nil {
		return guardPolicy{}, fmt.Errorf("guard config: %w", err)
	}
	var cfg config.Config
	if err := json.Unmarshal(j, &cfg); err != nil {
		return guardPolicy{}, fmt.Errorf("guard config: %w", err)
	}
	gp := guardPolicy{keys: cfg.Policy.VerifyKeys, scope: cfg.Policy.Scope, jwks: map[string][]byte{}}
	if j := cfg.Identity.JWTSVID; j != nil {
		for td, set := range j.TrustDomains {
			gp.jwks["identity.jwtSvid.trustDomains."+td] = set
		}
	}
	if d := cfg.Identity.Device; d != nil {
		for iss, set := range d.Issuers {
			gp.jwks["identity.device.issuers."+iss] = set
		}
	}
	if cfg.Policy.Distributor != nil {
		gp.channel = cfg.Policy.Distributor.Channel
	}
	if cfg.Policy.Inline != "" {
		if gp.inline, err = base64.StdEncoding.DecodeString(cfg.Policy.Inline); err != nil {
			return guardPolicy{}, fmt.Errorf("guard config: policy.inline: %w", err)
		}
	}
	return gp, nil
}

// checkGuardPolicy is what the renderers verify before writing: the
// verification set holds public keys only (a signing key must never reach a
// proxy's configuration), an inline bundle verifies against those keys, the
// scope and now (it would otherwise fail closed in the proxy), and it warns
// when the inline bundle nears expiry or the channel and scope differ.
func checkGuardPolicy(in envoy.GuardInput, warn io.Writer, now time.Time) error {
	gp, err := policyOf(in)
	if err != nil {
		return err
	}
	haveKeys := false
	if t := bytes.TrimSpace(gp.keys); len(t) > 0 && string(t) != "null" {
		set, err := bundle.ParseKeySet(t)
		if err != nil {
			return fmt.Errorf("verification keys: %w (pass verify.jwk, never signing.jwk)", err)
		}
		haveKeys = true
		if len(gp.inline) > 0 {
			b, err := bundle.Load(gp.inline, bundle.VerifyOptions{Keys: set, Scope: gp.scope, Now: now})
			if err != nil {
				return fmt.Errorf("inline bundle does not load as the proxy would (keys, scope, validity, engine image), nothing written: %w", err)
			}
			warnExpiry(warn, "inline bundle", b.Manifest.Revision, b.Manifest.Expires, now)
		}
	}
	if !haveKeys && len(gp.inline) > 0 {
		return errors.New("an inline bundle needs verification keys (--verify-keys verify.jwk)")
	}
	for _, name := range slices.Sorted(maps.Keys(gp.jwks)) {
		if err := refusePrivateJWKs(gp.jwks[name]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if gp.channel != "" && gp.scope != "" && gp.channel != gp.scope {
		fmt.Fprintf(warn, "warning: channel %q and scope %q differ: the proxy refuses bundles on that channel unless their manifest lists scope %q\n",
			gp.channel, gp.scope, gp.scope)
	}
	return nil
}

// refusePrivateJWKs fails when a JWK or JWK Set carries private key
// material: "d" (EC, OKP and RSA private keys) or "k" (symmetric keys), RFC
// 7518 section 6. Verification sets travel in proxy configuration that many
// can read; a signing key there is a leaked signing key.
func refusePrivateJWKs(raw []byte) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return nil
	}
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	var single map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Keys == nil {
		if err := json.Unmarshal(raw, &single); err != nil {
			return fmt.Errorf("not a JWK or JWK Set: %w", err)
		}
		doc.Keys = []map[string]json.RawMessage{single}
	}
	for i, k := range doc.Keys {
		for _, member := range []string{"d", "k"} {
			if _, ok := k[member]; ok {
				return fmt.Errorf("key %d holds private key material (%q); verification sets take public keys only", i, member)
			}
		}
	}
	return nil
}
