package decide

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/policies"
)

// Caller is every identity one request carries, each kept apart: the rule
// that makes one subject of them for the policy lives in Subject alone,
// and the audit record can name each.
type Caller struct {
	// Peer is the mTLS peer's SPIFFE ID ("" without a valid one).
	Peer string
	// Token is the verified JWT-SVID (nil without one).
	Token *identity.SVID
	// Device holds the verified device token's claims (nil without one).
	Device *identity.Device
	// PeerVersion is the Istio peer version label, read when a version
	// rule or the audit record needs it.
	PeerVersion string
}

// Subject is the identity the policy decides on: the JWT-SVID's when one
// verified, else the mTLS peer's.
func (c *Caller) Subject() (id, trustDomain string) {
	if c.Token != nil {
		return c.Token.ID, c.Token.TrustDomain
	}
	return c.Peer, ""
}

// fill sets the identity fields of the policy request from c.
func (c *Caller) fill(r *policies.Request) {
	r.SPIFFEID, r.TrustDomain = c.Subject()
	if t := c.Token; t != nil {
		r.JTI, r.Claims = t.JTI, claims{t.Claims}
	}
	if d := c.Device; d != nil {
		r.DeviceID, r.DeviceClass, r.DeviceVendor = d.ID, d.Class, d.Vendor
		r.DeviceModel, r.DeviceFirmware = d.Model, d.Firmware
	}
	r.PeerVersion = c.PeerVersion
}

// claims exposes verified JWT-SVID claims to the policy.
type claims struct{ c *identity.Claims }

func (g claims) Get(name string) (string, bool) {
	v := g.c.String(name)
	return v, v != ""
}

// resolve fills x.caller from the enabled identity sources. A presented
// credential that does not verify is an error (a deny), never a fallback
// to a weaker identity.
func (g *Guard) resolve(x *Exchange, r Request, now time.Time) error {
	idc := &g.cfg.Identity
	x.caller = Caller{}
	if idc.PeerCertificate {
		x.caller.Peer = identity.PeerSPIFFEID(r.PeerURISAN())
	}
	if g.svid != nil {
		if tok := bearer(&x.hdrs, idc.JWTSVID.Headers); tok != "" {
			c := g.svid.Cache()
			h0, m0 := c.Hits, c.Misses
			svid, err := g.svid.Verify(tok, now)
			g.countTokens(c.Hits-h0, c.Misses-m0)
			if err != nil {
				return fmt.Errorf("JWT-SVID rejected: %w", err)
			}
			x.caller.Token = svid
		}
	}
	if g.device != nil {
		if tok, _ := x.hdrs.Get(idc.Device.Header); tok != "" {
			d, err := g.device.Verify(strings.TrimPrefix(tok, "Bearer "), now)
			g.countTokens(0, 0)
			if err != nil {
				return fmt.Errorf("device token rejected: %w", err)
			}
			x.caller.Device = d
		}
	}
	if idc.IstioPeerMetadata && g.peerVersion {
		x.readPeerVersion(r)
	}
	return nil
}

// readPeerVersion reads the Istio peer version label once per request: up
// front when a version rule uses it, else only for an audit record.
func (x *Exchange) readPeerVersion(r Request) {
	if !x.peerRead {
		x.peerRead = true
		x.caller.PeerVersion = r.PeerVersion()
	}
}

// bearer returns the first token found in headers; "authorization"
// expects the Bearer scheme.
func bearer(h *Headers, headers []string) string {
	for _, name := range headers {
		v, _ := h.Get(name)
		if v == "" {
			continue
		}
		if name == config.DefaultJWTHeader {
			if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
				return strings.TrimSpace(v[7:])
			}
			continue
		}
		return strings.TrimSpace(v)
	}
	return ""
}

// countTokens reports token work: the JWT-SVID cache's hits and misses of
// the last verification and the verifiers' new signature checks and
// shared-cache hits.
func (g *Guard) countTokens(hits, misses uint64) {
	var sigs, shared uint64
	if g.svid != nil {
		sigs += g.svid.Signatures()
		shared += g.svid.SharedHits()
	}
	if g.device != nil {
		sigs += g.device.Signatures()
		shared += g.device.SharedHits()
	}
	g.ports.Telemetry.Tokens(hits, misses, sigs-g.seenSigs, shared-g.seenShared)
	g.seenSigs, g.seenShared = sigs, shared
}
