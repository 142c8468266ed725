package decide

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/policies"
)

// Upstream is what a guard on the caller's side (direction outbound) reads
// of the upstream the proxy picked. Everything it returns is valid during
// the callback only.
type Upstream interface {
	// UpstreamAddress returns upstream.address: "" until the proxy's router
	// has picked the upstream host (Envoy answers NOT_FOUND before).
	UpstreamAddress() string
	// UpstreamURISAN returns upstream.uri_san_peer_certificate, the first
	// URI SAN of the upstream's certificate ("" without mTLS).
	UpstreamURISAN() string
	// UpstreamPeerVersion returns filter_state.upstream_peer.version, the
	// version Istio's metadata exchange learnt of the upstream.
	UpstreamPeerVersion() string
	// HostMetadata returns the string at
	// xds.upstream_host_metadata.filter_metadata.FILTER.KEY.
	HostMetadata(filter, key string) (string, bool)
}

// outbound is the Exchange's state of an outbound decision.
type outbound struct {
	req policies.UpstreamRequest
	dec policies.UpstreamDecision
	// pending: allowed at request headers with rules that need the
	// upstream; decided again at response headers.
	pending  bool
	upstream string // the upstream SPIFFE ID the decision read (for the record)
}

// OutboundPending reports whether the request's upstream decision waits
// for the response headers (DecideResponse).
func (x *Exchange) OutboundPending() bool { return x.out.pending }

// Outbound reports whether the guard runs on the caller's side.
func (g *Guard) Outbound() bool { return g.cfg != nil && g.cfg.Outbound() }

// DecideOutbound decides a request on the caller's side at request
// headers, before it leaves: the target device's registry firmware, and
// the upstream's version when the proxy already picked it (an upstream
// filter). A refusal is a 403; an allow that needs the upstream is
// pending, for DecideResponse. Fails closed as Decide does.
func (g *Guard) DecideOutbound(x *Exchange, r Request, u Upstream) (out Outcome) {
	defer x.release()
	defer g.recovered(x, r, &out)
	x.out.pending = false
	now, out, ok := g.ready(x, r)
	if !ok {
		return out
	}
	target, _ := x.hdrs.Get(":path")
	canon, err := policies.CanonicalPath(target, g.pathOpts)
	if err != nil {
		x.out.dec = policies.UpstreamDecision{Reason: err.Error(), Audit: true}
		return g.enforceOutbound(x, r, now, 400)
	}
	if canon != target {
		r.ReplaceHeader(":path", canon)
		x.hdrs.set(":path", canon)
	}
	for _, h := range g.cfg.Identity.StripHeaders {
		if x.hdrs.remove(h) {
			r.RemoveHeader(h)
		}
	}
	g.decideUpstream(x, canon, u, u.UpstreamAddress() != "", now)
	if !x.out.dec.Allow {
		return g.enforceOutbound(x, r, now, 403)
	}
	if x.out.dec.Pending {
		// Decided (counted, recorded) once, when the upstream is known.
		x.out.pending = true
		return Outcome{}
	}
	return g.enforceOutbound(x, r, now, 0)
}

// DecideResponse finishes a pending outbound decision at response headers,
// when the upstream is known: a refusal replaces the upstream's response
// with a 502 that says why, and is recorded with the upstream and the
// version read. Other requests are left alone.
func (g *Guard) DecideResponse(x *Exchange, r Request, u Upstream) (out Outcome) {
	if !x.out.pending {
		return Outcome{}
	}
	x.out.pending = false
	defer x.release()
	defer func() {
		if p := recover(); p != nil {
			g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: internal error deciding response: %v", p))
			g.ports.Telemetry.Failed(contract.DecisionError)
			out = g.fail(x, r, 500, contract.DecisionError, "internal error", fmt.Sprint(p))
		}
	}()
	if g.err != nil || g.pol == nil {
		// The policy went away since the request was allowed: fail closed.
		g.ports.Telemetry.Failed(contract.DecisionUnavailable)
		return g.unavailable(x, r, "no verified policy bundle to decide the upstream")
	}
	now := g.ports.Clock()
	x.headers(r) // the request headers, as the guard forwarded them
	path, _ := x.hdrs.Get(":path")
	g.decideUpstream(x, path, u, true, now)
	if !x.out.dec.Allow {
		return g.enforceOutbound(x, r, now, 502)
	}
	return g.enforceOutbound(x, r, now, 0)
}

// decideUpstream runs the engine's upstream decision.
func (g *Guard) decideUpstream(x *Exchange, path string, u Upstream, known bool, now time.Time) {
	method, _ := x.hdrs.Get(":method")
	x.out.req = policies.UpstreamRequest{Method: method, Path: path, Headers: &x.hdrs, Now: now.UnixNano(), UpstreamKnown: known}
	x.out.upstream = ""
	if known {
		x.out.req.Upstream = u.UpstreamURISAN()
		x.out.req.PeerVersion = u.UpstreamPeerVersion()
		x.out.req.HostMetadata = u.HostMetadata
		x.out.upstream = x.out.req.Upstream
	}
	g.pol.Engine.DecideUpstream(&x.out.req, &x.out.dec)
	x.out.req = policies.UpstreamRequest{}
}

// enforceOutbound applies x.out.dec (status: the refusal's; 0 when allowed)
// and records what needs a record: refusals, dry-run flags, audited
// allows (all allows with audit.logAllows).
func (g *Guard) enforceOutbound(x *Exchange, r Request, now time.Time, status uint32) Outcome {
	d := &x.out.dec
	result := contract.DecisionAllow
	switch {
	case !d.Allow && g.cfg.Mode == config.ModeDryRun:
		result = contract.DecisionDryRunDeny
	case !d.Allow:
		result = contract.DecisionDeny
	case d.DryRun:
		result = contract.DecisionDryRunDeny
	}
	rule := d.Rule
	if d.Allow && d.DryRun {
		rule = d.DryRunRule
	}
	var rules []string
	if rule != "" {
		rules = []string{rule}
	}
	g.ports.Telemetry.Decided(result, rules)
	if result == contract.DecisionAllow && !g.cfg.Audit.LogAllows && !d.Audit {
		return Outcome{}
	}
	id := g.nextDecisionID()
	reason := d.Reason
	if status == 502 {
		reason = "upstream refused at response headers: " + reason
	}
	method, _ := x.hdrs.Get(":method")
	path, _ := x.hdrs.Get(":path")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	rec := audit.Record{Time: now, DecisionID: id, Decision: result, RuleIDs: rules, Reason: reason,
		BundleRevision: g.Enforced(), Version: d.Version, Method: method, Path: path, Proxy: g.proxy,
		Source: r.Source(), Peer: x.out.upstream, TargetDevice: d.TargetDevice}
	rec.Authority, _ = x.hdrs.Get(":authority")
	g.ports.Audit.Record(&rec)
	if result != contract.DecisionDeny {
		x.decisionID = id
		return Outcome{}
	}
	body := make([]byte, 0, 192)
	body = appendField(append(body, '{'), contract.FieldDecision, contract.DecisionDeny)
	body = appendField(append(body, ','), contract.FieldDecisionID, id)
	body = appendField(append(body, ','), contract.FieldRule, d.Rule)
	body = appendField(append(body, ','), contract.FieldReason, reason)
	body = append(body, "}\n"...)
	return Outcome{Status: status, Headers: [][2]string{{"content-type", "application/json"}, {g.cfg.DecisionHeader, id}}, Body: body}
}
