package identity

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/jose"
)

// SVID is a verified JWT-SVID.
type SVID struct {
	ID          string
	TrustDomain string
	Expiry      time.Time
	// JTI is the token's jti claim ("" when absent), read once at verification.
	JTI    string
	Claims *Claims
}

// SVIDVerifier verifies JWT-SVIDs: the subject's trust domain must be one of
// TrustDomains and its JWT bundle must hold the signing key (a key of another
// trust domain never verifies a subject), aud must match one of Audiences
// (or the local audience), exp is required. Verified tokens are cached
// until exp.
type SVIDVerifier struct {
	trustDomains map[string]*jose.KeySet
	// audiences are the configured ones (the first static) and then the
	// local audience, when one is set.
	audiences []string
	static    int
	local     string
	cache     *Cache[*SVID]
	sig       signatureChecker
}

// NewSVIDVerifier builds a verifier. bundles maps a trust domain to its JWK
// Set JSON; cacheSize bounds the verified-token cache (0 disables it).
// audiences may be empty only with local: then only the local audience
// (SetLocalAudience) verifies tokens.
func NewSVIDVerifier(bundles map[string][]byte, audiences []string, local bool, cacheSize int) (*SVIDVerifier, error) {
	auds, err := requireAudiences("jwt-svid", audiences)
	if err != nil && !(local && len(auds) == 0) {
		return nil, err
	}
	v := &SVIDVerifier{trustDomains: map[string]*jose.KeySet{}, audiences: auds, static: len(auds), cache: NewCache[*SVID](cacheSize)}
	for td, b := range bundles {
		if _, err := TrustDomain("spiffe://" + td); err != nil {
			return nil, fmt.Errorf("jwt-svid: trust domain %q: %w", td, err)
		}
		if len(b) == 0 {
			v.trustDomains[td] = nil // keys come later (policy bundle)
			continue
		}
		set, err := jose.ParseKeySet(b)
		if err != nil {
			return nil, fmt.Errorf("jwt-svid: JWT bundle of %q: %w", td, err)
		}
		v.trustDomains[td] = set
	}
	return v, nil
}

// requireAudiences drops empty audiences and requires one to remain: an
// empty list would make the aud check reject everything, silently.
func requireAudiences(kind string, audiences []string) ([]string, error) {
	var out []string
	for _, a := range audiences {
		if a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: at least one non-empty audience is required", kind)
	}
	return out, nil
}

// SetBundle installs (or replaces) a trust domain's JWT bundle, e.g. from the
// policy bundle's data, and clears the cache so removed keys stop verifying.
func (v *SVIDVerifier) SetBundle(td string, jwks []byte) error {
	set, err := jose.ParseKeySet(jwks)
	if err != nil {
		return fmt.Errorf("jwt-svid: JWT bundle of %q: %w", td, err)
	}
	v.trustDomains[td] = set
	v.cache.Clear()
	return nil
}

// SetLocalAudience makes id (the proxy's own SPIFFE ID, "" when the
// connection shows none) an accepted audience besides the configured ones.
// A change clears the cache: a token verified for another audience set is
// verified again. id may be a view of host data: it is copied when kept.
func (v *SVIDVerifier) SetLocalAudience(id string) {
	if id == v.local {
		return
	}
	v.local = strings.Clone(id)
	v.audiences = v.audiences[:v.static:v.static]
	if id != "" {
		v.audiences = append(v.audiences, v.local)
	}
	v.cache.Clear()
}

// HasAudience reports whether any audience (configured or local) is set.
func (v *SVIDVerifier) HasAudience() bool { return len(v.audiences) > 0 }

// Cache exposes the verified-token cache (for hit/miss metrics).
func (v *SVIDVerifier) Cache() *Cache[*SVID] { return v.cache }

// Share makes the verifier consult and fill c, a cache of verified tokens
// shared by the proxy's worker VMs, on a local cache miss.
func (v *SVIDVerifier) Share(c *SharedCache) { v.sig.shared = c }

// Signatures returns how many signature verifications the verifier ran.
func (v *SVIDVerifier) Signatures() uint64 { return v.sig.Signatures }

// SharedHits returns how many tokens another worker had verified.
func (v *SVIDVerifier) SharedHits() uint64 { return v.sig.sharedHits() }

// Verify checks token at time now. A cached token costs one hash, a map
// lookup and a comparison; its expiry is still checked against now.
func (v *SVIDVerifier) Verify(token string, now time.Time) (*SVID, error) {
	if s, ok := v.cache.Get(token); ok {
		if err := s.Claims.checkTimes(now); err != nil {
			v.cache.Remove(token)
			return nil, err
		}
		return s, nil
	}
	h, c, err := split(token)
	if err != nil {
		return nil, err
	}
	td, err := TrustDomain(c.Subject)
	if err != nil {
		return nil, fmt.Errorf("%w: sub: %v", ErrSubject, err)
	}
	set, ok := v.trustDomains[td]
	if !ok {
		return nil, fmt.Errorf("%w: trust domain %q is not trusted", ErrSubject, td)
	}
	if err := c.checkAudience(v.audiences); err != nil {
		return nil, err
	}
	if err := c.checkTimes(now); err != nil {
		return nil, err
	}
	if err := v.sig.check(token, h, set, c.Expiry, now); err != nil {
		return nil, err
	}
	s := &SVID{ID: c.Subject, TrustDomain: td, Expiry: c.Expiry, JTI: c.String("jti"), Claims: c}
	v.cache.Put(token, s, c.Expiry)
	return s, nil
}

// Device is a verified device identity.
type Device struct {
	ID, Class, Vendor, Model, Firmware string
	Issuer                             string
	Expiry                             time.Time
}

// ClaimNames names the device claims to read.
type ClaimNames struct{ ID, Class, Vendor, Model, Firmware string }

// DeviceVerifier verifies device tokens: iss selects the JWK Set, aud and exp
// are required, algorithms and headers as for JWT-SVIDs.
type DeviceVerifier struct {
	issuers   map[string]*jose.KeySet
	audiences []string
	names     ClaimNames
	cache     *Cache[*Device]
	sig       signatureChecker
}

// NewDeviceVerifier builds a device-token verifier.
func NewDeviceVerifier(issuers map[string][]byte, audiences []string, names ClaimNames, cacheSize int) (*DeviceVerifier, error) {
	auds, err := requireAudiences("device", audiences)
	if err != nil {
		return nil, err
	}
	v := &DeviceVerifier{issuers: map[string]*jose.KeySet{}, audiences: auds, names: names, cache: NewCache[*Device](cacheSize)}
	for iss, b := range issuers {
		set, err := jose.ParseKeySet(b)
		if err != nil {
			return nil, fmt.Errorf("device: JWK Set of issuer %q: %w", iss, err)
		}
		v.issuers[iss] = set
	}
	return v, nil
}

// Cache exposes the verified-token cache.
func (v *DeviceVerifier) Cache() *Cache[*Device] { return v.cache }

// Share makes the verifier consult and fill c (see SVIDVerifier.Share).
func (v *DeviceVerifier) Share(c *SharedCache) { v.sig.shared = c }

// Signatures returns how many signature verifications the verifier ran.
func (v *DeviceVerifier) Signatures() uint64 { return v.sig.Signatures }

// SharedHits returns how many tokens another worker had verified.
func (v *DeviceVerifier) SharedHits() uint64 { return v.sig.sharedHits() }

// Verify checks a device token at time now.
func (v *DeviceVerifier) Verify(token string, now time.Time) (*Device, error) {
	if d, ok := v.cache.Get(token); ok {
		if !now.Before(d.Expiry.Add(Leeway)) {
			v.cache.Remove(token)
			return nil, ErrExpired
		}
		return d, nil
	}
	h, c, err := split(token)
	if err != nil {
		return nil, err
	}
	set, ok := v.issuers[c.Issuer]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	}
	if err := c.checkAudience(v.audiences); err != nil {
		return nil, err
	}
	if err := c.checkTimes(now); err != nil {
		return nil, err
	}
	if err := v.sig.check(token, h, set, c.Expiry, now); err != nil {
		return nil, err
	}
	d := &Device{
		ID: c.String(v.names.ID), Class: c.String(v.names.Class), Vendor: c.String(v.names.Vendor),
		Model: c.String(v.names.Model), Firmware: c.String(v.names.Firmware),
		Issuer: c.Issuer, Expiry: c.Expiry,
	}
	if d.ID == "" {
		d.ID = c.Subject
	}
	if d.ID == "" {
		return nil, fmt.Errorf("%w: device token has no %s or sub claim", ErrMalformed, v.names.ID)
	}
	v.cache.Put(token, d, c.Expiry)
	return d, nil
}

// RawJSON is a helper for configs holding JWK Sets as json.RawMessage.
func RawJSON(m map[string]json.RawMessage) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
