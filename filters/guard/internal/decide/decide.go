package decide

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/filters/guard/internal/ratelimit"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/policies"
)

// Exchange is the core's state for one request. The adapter keeps one per
// stream and recycles it, so an ordinary decision allocates nothing.
type Exchange struct {
	hdrs     Headers
	hdrsRead bool
	peerRead bool
	caller   Caller
	creds    presented
	// challenge is the error_description of a 401's WWW-Authenticate,
	// authError its error code ("" for a bare Bearer challenge).
	challenge, authError string
	req                  policies.Request
	dec                  policies.Decision
	// decisionID names the record of a recorded allow (or dry-run), for the
	// response.
	decisionID string
	// retryAfter is the Retry-After of a 429 (rate limited).
	retryAfter string
	// out is the caller's side (direction outbound, outbound.go).
	out outbound
}

// DecisionID returns the id of the request's audit record when it was
// allowed and recorded ("" otherwise): the response should name it, as a
// deny's reply does.
func (x *Exchange) DecisionID() string { return x.decisionID }

// headers reads the request headers once.
func (x *Exchange) headers(r Request) {
	if !x.hdrsRead {
		x.hdrs, x.hdrsRead = r.Headers(), true
	}
}

// release drops the request's views of host data, which die with the
// callback, and what would pin an old engine.
func (x *Exchange) release() {
	x.hdrs, x.hdrsRead, x.peerRead = nil, false, false
	x.caller, x.creds, x.challenge, x.authError, x.retryAfter = Caller{}, presented{}, "", "", ""
	x.req, x.dec = policies.Request{}, policies.Decision{}
	x.out.dec, x.out.upstream = policies.UpstreamDecision{}, "" // views of host data; pending stays
}

// Outcome is what the adapter does with a request: forward it (Status 0)
// or answer it with a local reply.
type Outcome struct {
	Status  uint32
	Headers [][2]string
	Body    []byte
}

// Forward reports whether the request goes upstream.
func (o Outcome) Forward() bool { return o.Status == 0 }

// recovered turns a panic while deciding into a 500 with an error record;
// Decide and DecideOutbound defer it.
func (g *Guard) recovered(x *Exchange, r Request, out *Outcome) {
	if p := recover(); p != nil {
		g.ports.Log.Log(LevelCritical, fmt.Sprintf("meshguard: internal error deciding request: %v", p))
		g.ports.Telemetry.Failed(contract.DecisionError)
		*out = g.fail(x, r, 500, contract.DecisionError, "internal error", fmt.Sprint(p))
	}
}

// ready starts a decision in either direction: it picks up a new bundle,
// checks expiry and reads the headers. ok is false, with the 503 to
// answer, while the guard has no usable configuration or policy.
func (g *Guard) ready(x *Exchange, r Request) (now time.Time, out Outcome, ok bool) {
	if g.err != nil {
		g.ports.Telemetry.Failed(contract.DecisionUnavailable)
		return now, g.unavailable(x, r, "meshguard configuration invalid: "+g.err.Error()), false
	}
	now = g.ports.Clock()
	g.PickUp()
	g.checkExpiry(now)
	x.headers(r)
	if g.pol == nil {
		g.ports.Telemetry.Failed(contract.DecisionUnavailable)
		return now, g.unavailable(x, r, "no verified policy bundle: "+g.polErr.Error()), false
	}
	return now, Outcome{}, true
}

// Decide resolves the caller, evaluates the policy and enforces the
// outcome. It fails closed: without a usable configuration or policy the
// answer is 503, and any panic becomes a 500 with an error record.
func (g *Guard) Decide(x *Exchange, r Request) (out Outcome) {
	defer x.release()
	defer g.recovered(x, r, &out)
	now, out, ok := g.ready(x, r)
	if !ok {
		return out
	}
	reg, err := g.registryEngine(now)
	if err != nil {
		g.ports.Telemetry.Failed(contract.DecisionUnavailable)
		return g.unavailable(x, r, "no verified registry bundle: "+err.Error())
	}
	// 1. The path must be canonical (or normalised, when configured): the
	// engine matches it segment by segment and the upstream must receive
	// what was decided.
	target, _ := x.hdrs.Get(":path")
	canon, err := policies.CanonicalPath(target, g.pathOpts)
	if err != nil {
		if g.cfg.Identity.PeerCertificate {
			x.caller.Peer = identity.PeerSPIFFEID(r.PeerURISAN())
		}
		x.dec = policies.Decision{Reason: err.Error()}
		return g.enforce(x, r, now, "path", 400)
	}
	if canon != target {
		r.ReplaceHeader(":path", canon)
		x.hdrs.set(":path", canon)
	}
	// 2. Credentials that could be read two ways are refused (401).
	if err := g.credentials(x, now); err != nil {
		if g.cfg.Identity.PeerCertificate {
			x.caller.Peer = identity.PeerSPIFFEID(r.PeerURISAN())
		}
		x.dec = policies.Decision{Reason: "ambiguous credentials: " + err.Error()}
		x.challenge, x.authError = err.Error(), "invalid_request"
		return g.enforce(x, r, now, "credentials", 401)
	}
	// 3. Who is calling: every credential verifies, one caller.
	if err := g.resolve(x, r, now); err != nil {
		x.dec = policies.Decision{Reason: err.Error()}
		return g.enforce(x, r, now, "identity", 403)
	}
	// The end-user token, verified after the workload identity: an
	// invalid one is a 401 whatever else the request carries.
	if err := g.resolveUser(x, r, now); err != nil {
		x.dec = policies.Decision{Reason: "end-user token rejected: " + err.Error()}
		x.challenge, x.authError = challengeText(err.Error()), "invalid_token"
		return g.enforce(x, r, now, "identity", 401)
	}
	x.req = policies.Request{}
	x.caller.fill(&x.req)
	for _, h := range g.cfg.Identity.StripHeaders {
		// Only present headers cost a hostcall; policies never see them.
		if x.hdrs.remove(h) {
			r.RemoveHeader(h)
		}
	}
	g.dropCredentials(x, r)
	g.forwardClaims(x, r)
	method, _ := x.hdrs.Get(":method")
	path := canon
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	x.req.Method, x.req.Path, x.req.Headers = method, path, &x.hdrs
	x.req.Now = now.UnixNano()
	if g.sunset != 0 && x.req.Now >= g.sunset {
		g.reportSunset(now) // a transition window closed: the next one
	}
	x.dec = policies.Decision{}
	g.pol.Engine.DecideWith(reg, &x.req, &x.dec)
	// The caller's own budget first: a caller over its limit must not
	// drain the device's write budget for others.
	if x.dec.Allow && x.dec.HasCallerLimit {
		ok, wait, err := g.chargeCaller(&x.dec.CallerLimit, now)
		if err != nil {
			g.ports.Telemetry.Failed(contract.DecisionError)
			return g.fail(x, r, 503, contract.DecisionError, "rate limit store unavailable", err.Error())
		}
		if !ok {
			g.ports.Telemetry.CallerLimited(false)
			x.dec.Allow, x.retryAfter = false, ratelimit.RetryAfter(wait)
			x.dec.Reason = g.callerLimitReason(&x.dec.CallerLimit, "")
			return g.enforce(x, r, now, "", 429)
		}
	}
	if x.dec.Allow && x.dec.HasRateLimit {
		// The write is charged to the device it targets (which the engine
		// bound to the token's device), else to the token's device.
		key := x.dec.TargetDevice
		if key == "" {
			key = x.dec.RateLimitKey
		}
		parts, fold := [1]string{key}, [1]bool{true}
		ok, wait, err := g.limit.Take(parts[:], fold[:], x.dec.RateLimit.PerSecond, x.dec.RateLimit.Burst, now)
		if err != nil {
			g.ports.Telemetry.Failed(contract.DecisionError)
			return g.fail(x, r, 503, contract.DecisionError, "rate limit store unavailable", err.Error())
		}
		if !ok {
			g.ports.Telemetry.RateLimited()
			x.dec.Allow, x.retryAfter = false, ratelimit.RetryAfter(wait)
			x.dec.Reason = "write rate limit exceeded for device " + key
			return g.enforce(x, r, now, "", 429)
		}
	}
	// A dry-run rule's limit is charged like any other but never refuses:
	// over it, the request goes on and is recorded as a dry-run deny. A
	// store failure does not refuse either.
	if x.dec.Allow && x.dec.HasDryRunCallerLimit {
		if ok, _, err := g.chargeCaller(&x.dec.DryRunCallerLimit, now); err == nil && !ok {
			g.ports.Telemetry.CallerLimited(true)
			l := &x.dec.DryRunCallerLimit
			if !x.dec.DryRun {
				x.dec.DryRun, x.dec.DryRunRule = true, l.Rule
				x.dec.Reason = g.callerLimitReason(l, " (dry run)")
			}
			x.dec.Audit = true
		}
	}
	status := uint32(403)
	switch {
	case x.dec.Allow:
	case x.dec.UserRequired:
		status = 401 // RFC 6750 §3.1: no token, a bare challenge
	case x.dec.Scope != "":
		x.authError = "insufficient_scope"
	}
	return g.enforce(x, r, now, "", status)
}

// chargeCaller takes a token from the bucket of a caller limit: one per
// rule, key kind and identity (an end user's with its issuer); device ids
// fold (the device-id case rule), SPIFFE IDs and end users do not.
func (g *Guard) chargeCaller(l *policies.CallerLimit, now time.Time) (bool, time.Duration, error) {
	parts, fold := [4]string{l.Rule, l.Per, l.Key, l.Issuer}, [4]bool{false, false, l.Per == policies.PerDevice, false}
	n := 3
	if l.Per == policies.PerUser {
		n = 4 // one bucket per issuer and subject
	}
	return g.callers.Take(parts[:n], fold[:n], l.PerSecond, l.Burst, now)
}

// callerLimitReason says which caller's budget of which rule ran out.
func (g *Guard) callerLimitReason(l *policies.CallerLimit, suffix string) string {
	who := "workload " + l.Key
	switch {
	case l.Per == policies.PerUser && l.Key == "":
		who = "requests without an end-user token"
	case l.Per == policies.PerUser:
		// The record names the user as configured (maybe a pseudonym).
		u, iss := g.users.userRecord(&policies.User{Issuer: l.Issuer, Subject: l.Key})
		who = "end user " + u + " of " + iss
	case l.Per == policies.PerDevice && l.Key == "":
		who = "requests without a device id"
	case l.Per == policies.PerDevice:
		who = "device " + l.Key
	case l.Key == "":
		who = "anonymous callers"
	}
	return "caller rate limit of rule " + l.Rule + " exceeded for " + who + suffix
}

// enforce applies x.dec: allow, deny with status, or (dry-run) allow and
// record the would-be deny. stage names what decided when the policy did
// not (identity).
func (g *Guard) enforce(x *Exchange, r Request, now time.Time, stage string, status uint32) Outcome {
	d := &x.dec
	result := contract.DecisionAllow
	switch {
	case !d.Allow && g.cfg.Mode == config.ModeDryRun:
		result = contract.DecisionDryRunDeny
	case !d.Allow:
		result = contract.DecisionDeny
	case d.DryRun:
		result = contract.DecisionDryRunDeny
	}
	rules := d.Rules()
	if d.DryRun && d.DryRunRule != "" {
		rules = []string{d.DryRunRule}
	}
	g.ports.Telemetry.Decided(result, rules)
	if result == contract.DecisionAllow && !g.cfg.Audit.LogAllows && !d.Audit {
		return Outcome{}
	}
	id := g.nextDecisionID()
	g.record(x, r, now, id, result, rules, stage)
	if result != contract.DecisionDeny {
		x.decisionID = id
		return Outcome{}
	}
	body := make([]byte, 0, 192)
	body = appendField(append(body, '{'), contract.FieldDecision, contract.DecisionDeny)
	body = appendField(append(body, ','), contract.FieldDecisionID, id)
	body = appendField(append(body, ','), contract.FieldRule, d.Rule())
	body = appendField(append(body, ','), contract.FieldReason, d.Reason)
	body = append(body, "}\n"...)
	hdrs := [][2]string{{"content-type", "application/json"}, {g.cfg.DecisionHeader, id}}
	if status == 429 && x.retryAfter != "" {
		hdrs = append(hdrs, [2]string{"retry-after", x.retryAfter})
	}
	switch {
	case status == 401 && x.authError == "":
		hdrs = append(hdrs, [2]string{"www-authenticate", "Bearer"})
	case status == 401:
		// RFC 6750 §3: the error_description holds no quote or backslash
		// (credError texts never do; token errors pass challengeText).
		hdrs = append(hdrs, [2]string{"www-authenticate", `Bearer error="` + x.authError + `", error_description="` + x.challenge + `"`})
	case x.authError == "insufficient_scope":
		hdrs = append(hdrs, [2]string{"www-authenticate", `Bearer error="insufficient_scope", scope="` + challengeText(d.Scope) + `"`})
	}
	return Outcome{Status: status, Headers: hdrs, Body: body}
}

// record hands the decision record to the recorder and returns the id of
// the record that holds it.
func (g *Guard) record(x *Exchange, r Request, now time.Time, id, result string, rules []string, stage string) string {
	if g.cfg != nil && g.cfg.Identity.IstioPeerMetadata {
		x.readPeerVersion(r)
	}
	x.headers(r)
	c := &x.caller
	subject, _ := c.Subject()
	if c.conflict() {
		subject = "" // two callers: the record names both, neither decided
	}
	rec := audit.Record{Time: now, DecisionID: id, Decision: result, RuleIDs: rules, Reason: x.dec.Reason,
		BundleRevision: g.Enforced(), Subject: subject, Version: c.PeerVersion, Method: x.req.Method, Path: x.req.Path,
		Proxy: g.proxy, Source: r.Source(), Peer: c.Peer, Forwarder: c.Forwarder, TargetDevice: x.dec.TargetDevice}
	if t := c.Token; t != nil {
		rec.TokenSubject, rec.JTI = t.ID, t.JTI
	}
	rec.User, rec.UserIssuer = g.users.userRecord(c.User)
	if dev := x.caller.Device; dev != nil {
		rec.DeviceID, rec.DeviceClass, rec.Firmware = dev.ID, dev.Class, dev.Firmware
	}
	if x.dec.Version != "" {
		rec.Version = x.dec.Version // what the version rule read, whichever its source
	}
	rec.ProxyID = identity.PeerSPIFFEID(r.LocalURISAN())
	if rec.Method == "" {
		rec.Method, _ = x.hdrs.Get(":method")
		rec.Path, _ = x.hdrs.Get(":path")
	}
	rec.Authority, _ = x.hdrs.Get(":authority")
	if stage != "" && rec.Reason == "" {
		rec.Reason = stage
	}
	g.ports.Audit.Record(&rec)
	return rec.DecisionID
}

// unavailable answers 503 (fail closed) saying why.
func (g *Guard) unavailable(x *Exchange, r Request, reason string) Outcome {
	return g.fail(x, r, 503, contract.DecisionUnavailable, "policy unavailable", reason)
}

// fail answers status without a decision; an error is also recorded.
func (g *Guard) fail(x *Exchange, r Request, status uint32, decision, title, reason string) Outcome {
	body := make([]byte, 0, 128+len(reason))
	body = appendField(append(body, '{'), contract.FieldDecision, decision)
	body = appendField(append(body, ','), contract.FieldError, title)
	body = appendField(append(body, ','), contract.FieldReason, reason)
	body = append(body, "}\n"...)
	hdrs := [][2]string{{"content-type", "application/json"}}
	if g.cfg != nil {
		// The recorder aggregates these refusals per interval and may name
		// the aggregated record instead (see Recorder).
		x.dec = policies.Decision{Reason: title + ": " + reason}
		id := g.record(x, r, g.ports.Clock(), g.nextDecisionID(), decision, nil, "")
		hdrs = append(hdrs, [2]string{g.cfg.DecisionHeader, id})
	}
	return Outcome{Status: status, Headers: hdrs, Body: body}
}

// appendField appends "name":"value" (name needs no escaping).
func appendField(b []byte, name, value string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return audit.AppendString(b, value)
}
