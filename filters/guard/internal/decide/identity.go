package decide

import (
	"fmt"
	"slices"
	"time"

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
	// Forwarder is the peer when it is a trusted forwarder relaying a
	// JWT-SVID of another subject ("" otherwise).
	Forwarder string
	// Device holds the verified device token's claims (nil without one).
	Device *identity.Device
	// PeerVersion is the Istio peer version label, read when a version
	// rule or the audit record needs it.
	PeerVersion string
	// User is the verified end-user access token (nil without one);
	// UserForward the headers its Issuer's forwardedClaims set.
	User        *policies.User
	UserForward [][2]string
}

// Subject is the identity the policy decides on: the JWT-SVID's when one
// verified (resolve has refused a peer that is another caller and not a
// trusted forwarder), else the mTLS peer's.
func (c *Caller) Subject() (id, trustDomain string) {
	if c.Token != nil {
		return c.Token.ID, c.Token.TrustDomain
	}
	return c.Peer, ""
}

// conflict reports a request carrying two callers: a peer and a token
// subject that differ, the peer not being a trusted forwarder.
func (c *Caller) conflict() bool {
	return c.Token != nil && c.Peer != "" && c.Token.ID != c.Peer && c.Forwarder == ""
}

// fill sets the identity fields of the policy request from c: the
// engine sees every identity (revocations and version rules check the
// caller and the peer).
func (c *Caller) fill(r *policies.Request) {
	r.SPIFFEID, r.TrustDomain = c.Subject()
	r.PeerID, r.Forwarded = c.Peer, c.Forwarder != ""
	if t := c.Token; t != nil {
		r.JTI, r.Claims = t.JTI, claims{t.Claims}
	}
	if d := c.Device; d != nil {
		r.DeviceID, r.DeviceClass, r.DeviceVendor = d.ID, d.Class, d.Vendor
		r.DeviceModel, r.DeviceFirmware = d.Model, d.Firmware
	}
	r.PeerVersion = c.PeerVersion
	r.User = c.User
}

// claims exposes verified JWT-SVID claims to the policy.
type claims struct{ c *identity.Claims }

func (g claims) Get(name string) (string, bool) {
	v := g.c.String(name)
	return v, v != ""
}

// resolve fills x.caller from the enabled identity sources and the
// credentials read by credentials. A presented credential that does not
// verify is an error (a deny), never a fallback to a weaker identity; so
// is a JWT-SVID whose subject is not the mTLS peer, unless the peer is a
// trusted forwarder.
func (g *Guard) resolve(x *Exchange, r Request, now time.Time) error {
	idc := &g.cfg.Identity
	if idc.PeerCertificate {
		x.caller.Peer = identity.PeerSPIFFEID(r.PeerURISAN())
	}
	if tok := x.creds.jwt; tok != "" {
		if idc.JWTSVID.LocalAudience {
			g.svid.SetLocalAudience(identity.PeerSPIFFEID(r.LocalURISAN()))
			if !g.svid.HasAudience() {
				return fmt.Errorf("JWT-SVID rejected: %w: the connection shows no local SPIFFE ID to be the audience (identity.jwtSvid.localAudience)", identity.ErrAudience)
			}
		}
		c := g.svid.Cache()
		h0, m0 := c.Hits, c.Misses
		svid, err := g.svid.Verify(tok, now)
		g.countTokens(c.Hits-h0, c.Misses-m0)
		if err != nil {
			return fmt.Errorf("JWT-SVID rejected: %w", err)
		}
		x.caller.Token = svid
		if p := x.caller.Peer; p != "" && p != svid.ID {
			if !slices.Contains(idc.TrustedForwarders, p) {
				return fmt.Errorf("two callers: the mTLS peer %s presents a JWT-SVID of %s and is not a trusted forwarder", p, svid.ID)
			}
			x.caller.Forwarder = p
		}
	}
	if tok := x.creds.device; tok != "" {
		d, err := g.device.Verify(tok, now)
		g.countTokens(0, 0)
		if err != nil {
			return fmt.Errorf("device token rejected: %w", err)
		}
		x.caller.Device = d
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
