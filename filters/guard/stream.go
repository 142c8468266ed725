package main

import (
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/abi"
	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
	"github.com/meshguard/meshguard/policies"
)

type stream struct {
	types.DefaultHttpContext
	p  *plugin
	id uint32

	// hdrs are the request headers, read with one hostcall (Envoy hands
	// names over lower-cased); one read instead of one per header halves the
	// hostcalls of a decision.
	hdrs     reqHeaders
	peerRead bool
	req      policies.Request
	dec      policies.Decision
	claims   *identity.Claims
	subject  string
	// decisionID is set when an allowed request was recorded, so the
	// response can name its audit record.
	decisionID string
}

// reqHeaders are request headers as get_header_map_pairs returns them.
type reqHeaders [][2]string

// Get returns the first value of name (lower-case), as Envoy's
// get_header_map_value does.
func (h *reqHeaders) Get(name string) (string, bool) {
	for _, kv := range *h {
		if kv[0] == name {
			return kv[1], true
		}
	}
	return "", false
}

// remove drops every value of name.
func (h *reqHeaders) remove(name string) bool {
	out := (*h)[:0]
	for _, kv := range *h {
		if kv[0] != name {
			out = append(out, kv)
		}
	}
	removed := len(out) != len(*h)
	*h = out
	return removed
}

// readHeaders loads the request headers once per stream.
func (s *stream) readHeaders() {
	if s.hdrs != nil {
		return
	}
	h, err := proxywasm.GetHttpRequestHeaders()
	if err != nil || h == nil {
		h = [][2]string{}
	}
	s.hdrs = h
}

// claimGetter exposes verified JWT-SVID claims to the policy.
type claimGetter struct{ c *identity.Claims }

func (g claimGetter) Get(name string) (string, bool) {
	v := g.c.String(name)
	return v, v != ""
}

// OnHttpRequestHeaders decides the request. Host data read while deciding
// lives in the adapter's scratch arena (see abi.Scratch), so an ordinary
// decision allocates nothing; whatever outlives the callback (audit records,
// cached tokens) is copied where it is kept.
func (s *stream) OnHttpRequestHeaders(int, bool) (action types.Action) {
	abi.Scratch(func() { action = s.decide() })
	// The request's views of host data die with the arena.
	s.hdrs, s.req, s.peerRead = nil, policies.Request{}, false
	return action
}

// decide resolves the identity, evaluates the policy and enforces the
// outcome. Any panic becomes a deny.
func (s *stream) decide() (action types.Action) {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error deciding request: %v", r)
			s.p.m.errors.Increment(1)
			s.fail(500, "error", "internal error", fmt.Sprint(r))
			action = types.ActionPause
		}
	}()
	p := s.p
	if p.cfgErr != nil {
		p.m.unavailable.Increment(1)
		return s.unavailable("meshguard configuration invalid: " + p.cfgErr.Error())
	}
	now := time.Now()
	if p.cfg.Policy.Distributor != nil {
		p.checkShared()
	}
	p.checkExpiry(now)
	s.readHeaders()
	if p.policy == nil {
		p.m.unavailable.Increment(1)
		return s.unavailable("no verified policy bundle: " + p.polErr.Error())
	}
	if err := s.resolveIdentity(now); err != nil {
		// A presented credential that does not verify is a deny, never a
		// fallback to a weaker identity.
		s.dec = policies.Decision{Reason: err.Error()}
		return s.enforce(now, "identity")
	}
	for _, h := range p.cfg.Identity.StripHeaders {
		// Only present headers cost a hostcall; policies never see them.
		if s.hdrs.remove(h) {
			_ = proxywasm.RemoveHttpRequestHeader(h)
		}
	}
	method, _ := s.hdrs.Get(":method")
	path, _ := s.hdrs.Get(":path")
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	s.req.Method, s.req.Path, s.req.Headers = method, path, &s.hdrs
	s.dec = policies.Decision{}
	p.policy.engine.Decide(&s.req, &s.dec)
	if s.dec.Allow && s.dec.HasRateLimit {
		ok, err := p.limit.Allow(s.dec.RateLimitKey, s.dec.RateLimit.PerSecond, s.dec.RateLimit.Burst, now)
		if err != nil {
			p.m.errors.Increment(1)
			return s.fail(503, "error", "rate limit store unavailable", err.Error())
		}
		if !ok {
			p.m.rateLimited.Increment(1)
			s.dec.Allow = false
			s.dec.Reason = "write rate limit exceeded for device " + s.dec.RateLimitKey
			return s.enforceStatus(now, "", 429)
		}
	}
	return s.enforce(now, "")
}

// OnHttpStreamDone recycles the stream: the SDK drops it after this call
// and the guard starts no callouts from streams, so nothing refers to it.
func (s *stream) OnHttpStreamDone() {
	p := s.p
	*s = stream{p: p}
	if len(p.freeStreams) < maxFreeStreams {
		p.freeStreams = append(p.freeStreams, s)
	}
}

// OnHttpResponseHeaders names the audit record of a recorded allow (or
// dry-run) in the response, as denies do, so callers and operators can find
// the decision in the audit trail.
func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	if s.decisionID != "" && s.p.cfg != nil {
		if err := proxywasm.ReplaceHttpResponseHeader(s.p.cfg.DecisionHeader, s.decisionID); err != nil {
			proxywasm.LogWarnf("meshguard: decision header: %v", err)
		}
	}
	return types.ActionContinue
}

// resolveIdentity fills s.req from the enabled identity sources.
func (s *stream) resolveIdentity(now time.Time) error {
	p := s.p
	idc := &p.cfg.Identity
	s.req = policies.Request{}
	if idc.PeerCertificate {
		if b, err := proxywasm.GetProperty([]string{"connection", "uri_san_peer_certificate"}); err == nil {
			if id := identity.PeerSPIFFEID(view(b)); id != "" {
				s.req.SPIFFEID = id
			}
		}
	}
	if p.svid != nil {
		tok := s.bearer(idc.JWTSVID.Headers)
		if tok != "" {
			h0, m0 := p.svid.Cache().Hits, p.svid.Cache().Misses
			svid, err := p.svid.Verify(tok, now)
			p.countTokenWork()
			if d := p.svid.Cache().Hits - h0; d != 0 {
				p.m.cacheHits.Increment(d)
			}
			if d := p.svid.Cache().Misses - m0; d != 0 {
				p.m.cacheMisses.Increment(d)
			}
			if err != nil {
				return fmt.Errorf("JWT-SVID rejected: %w", err)
			}
			s.req.SPIFFEID, s.req.TrustDomain = svid.ID, svid.TrustDomain
			s.req.JTI = svid.JTI
			s.req.Claims = claimGetter{svid.Claims}
		}
	}
	if p.device != nil {
		if tok, _ := s.hdrs.Get(idc.Device.Header); tok != "" {
			tok = strings.TrimPrefix(tok, "Bearer ")
			d, err := p.device.Verify(tok, now)
			p.countTokenWork()
			if err != nil {
				return fmt.Errorf("device token rejected: %w", err)
			}
			s.req.DeviceID, s.req.DeviceClass, s.req.DeviceVendor = d.ID, d.Class, d.Vendor
			s.req.DeviceModel, s.req.DeviceFirmware = d.Model, d.Firmware
		}
	}
	if idc.IstioPeerMetadata && p.policy.peerVersion {
		s.peerVersion()
	}
	return nil
}

// peerVersion reads the Istio peer metadata version label once per request:
// up front when a version rule uses it, else only for an audit record.
func (s *stream) peerVersion() {
	if s.peerRead {
		return
	}
	s.peerRead = true
	if b, err := proxywasm.GetProperty([]string{"filter_state", "downstream_peer", "version"}); err == nil {
		s.req.PeerVersion = view(b)
	}
}

// bearer returns the first token found in headers; "authorization" expects
// the Bearer scheme.
func (s *stream) bearer(headers []string) string {
	for _, h := range headers {
		v, _ := s.hdrs.Get(h)
		if v == "" {
			continue
		}
		if h == config.DefaultJWTHeader {
			if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
				return strings.TrimSpace(v[7:])
			}
			continue
		}
		return strings.TrimSpace(v)
	}
	return ""
}

func (s *stream) enforce(now time.Time, stage string) types.Action {
	return s.enforceStatus(now, stage, 403)
}

// enforceStatus applies s.dec: allow, deny with status, or (dry-run) allow
// and record the would-be deny.
func (s *stream) enforceStatus(now time.Time, stage string, status uint32) types.Action {
	p := s.p
	result := "allow"
	switch {
	case !s.dec.Allow && p.cfg.Mode == config.ModeDryRun:
		result = "dry-run-deny"
	case !s.dec.Allow:
		result = "deny"
	case s.dec.DryRun:
		result = "dry-run-deny"
	}
	rules := s.dec.Rules()
	if s.dec.DryRun && s.dec.DryRunRule != "" {
		rules = []string{s.dec.DryRunRule}
	}
	switch result {
	case "allow":
		p.m.allow.Increment(1)
	case "deny":
		p.m.deny.Increment(1)
	default:
		p.m.dryRunDeny.Increment(1)
	}
	for _, r := range rules {
		if c := p.ruleCounter(r, result); c != 0 {
			c.Increment(1)
		}
	}
	if result == "allow" && !p.cfg.Audit.LogAllows && !s.dec.Audit {
		return types.ActionContinue
	}
	id := p.nextDecisionID()
	s.record(now, id, result, rules, stage)
	if result != "deny" {
		s.decisionID = id
		return types.ActionContinue
	}
	body := make([]byte, 0, 192)
	body = append(body, `{"decision":"deny","decision_id":`...)
	body = appendJSONString(body, id)
	body = append(body, `,"rule":`...)
	body = appendJSONString(body, s.dec.Rule())
	body = append(body, `,"reason":`...)
	body = appendJSONString(body, s.dec.Reason)
	body = append(body, "}\n"...)
	if err := proxywasm.SendHttpResponse(status, [][2]string{{"content-type", "application/json"}, {p.cfg.DecisionHeader, id}}, body, -1); err != nil {
		proxywasm.LogErrorf("meshguard: sending deny: %v", err)
	}
	return types.ActionPause
}

// record writes the decision record to the proxy log and the upload buffer.
func (s *stream) record(now time.Time, id, result string, rules []string, stage string) {
	p := s.p
	if p.cfg.Identity.IstioPeerMetadata {
		s.peerVersion()
	}
	r := audit.Record{Time: now, DecisionID: id, Decision: result, RuleIDs: rules, Reason: s.dec.Reason,
		BundleRevision: p.revision(), Subject: s.req.SPIFFEID, DeviceID: s.req.DeviceID, DeviceClass: s.req.DeviceClass,
		Version: s.req.PeerVersion, Method: s.req.Method, Path: s.req.Path, Proxy: p.proxyName}
	s.readHeaders()
	if r.Method == "" {
		r.Method, _ = s.hdrs.Get(":method")
		r.Path, _ = s.hdrs.Get(":path")
	}
	r.Authority, _ = s.hdrs.Get(":authority")
	if b, err := proxywasm.GetProperty([]string{"source", "address"}); err == nil {
		r.Source = string(b)
	}
	if stage != "" && r.Reason == "" {
		r.Reason = stage
	}
	line := audit.AppendJSON(append(make([]byte, 0, 512), "meshguard decision "...), &r)
	if result == "allow" {
		proxywasm.LogInfo(string(line))
	} else {
		proxywasm.LogWarn(string(line))
	}
	if p.audit != nil && !p.audit.Add(&r) {
		p.m.auditDropped.Increment(1)
	}
}

// unavailable answers 503 (fail closed) with a JSON body saying why.
func (s *stream) unavailable(reason string) types.Action {
	return s.fail(503, "unavailable", "policy unavailable", reason)
}

func (s *stream) fail(status uint32, decision, title, reason string) types.Action {
	body := make([]byte, 0, 128+len(reason))
	body = append(body, `{"decision":`...)
	body = appendJSONString(body, decision)
	body = append(body, `,"error":`...)
	body = appendJSONString(body, title)
	body = append(body, `,"reason":`...)
	body = appendJSONString(body, reason)
	body = append(body, "}\n"...)
	hdrs := [][2]string{{"content-type", "application/json"}}
	if s.p.cfg != nil && decision == "error" {
		id := s.p.nextDecisionID()
		hdrs = append(hdrs, [2]string{s.p.cfg.DecisionHeader, id})
		s.dec = policies.Decision{Reason: title + ": " + reason}
		s.record(time.Now(), id, "error", nil, "")
	}
	if err := proxywasm.SendHttpResponse(status, hdrs, body, -1); err != nil {
		proxywasm.LogErrorf("meshguard: sending %d: %v", status, err)
	}
	return types.ActionPause
}

// view is b as a string without a copy: b is host data in the scratch
// arena, valid for the current callback only.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func appendJSONString(b []byte, s string) []byte {
	return audit.AppendString(b, s)
}
