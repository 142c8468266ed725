package main

import (
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/abi"
	"github.com/meshguard/meshguard/filters/guard/internal/decide"
)

// Property paths the guard reads.
var (
	propNodeID      = []string{"xds", "node", "id"}
	propPeerURISAN  = []string{"connection", "uri_san_peer_certificate"}
	propLocalURISAN = []string{"connection", "uri_san_local_certificate"}
	propPeerVersion = []string{"filter_state", "downstream_peer", "version"}
	propSource      = []string{"source", "address"}
	// The upstream, on the caller's side (direction outbound).
	propUpstreamAddress = []string{"upstream", "address"}
	propUpstreamURISAN  = []string{"upstream", "uri_san_peer_certificate"}
	propUpstreamVersion = []string{"filter_state", "upstream_peer", "version"}
)

// stream is the SDK's HTTP context; it is the core's decide.Request over
// the host for the request being decided.
type stream struct {
	types.DefaultHttpContext
	p *plugin
	x decide.Exchange
}

// OnHttpRequestHeaders decides the request. Host data read while deciding
// lives in the adapter's scratch arena (see abi.Scratch), so an ordinary
// decision allocates nothing; the core copies whatever outlives the
// callback (audit records, cached tokens).
func (s *stream) OnHttpRequestHeaders(int, bool) (action types.Action) {
	abi.Scratch(func() { action = s.decide() })
	return action
}

func (s *stream) decide() types.Action {
	var out decide.Outcome
	if s.p.g.Outbound() {
		out = s.p.g.DecideOutbound(&s.x, s, s)
	} else {
		out = s.p.g.Decide(&s.x, s)
	}
	if out.Forward() {
		return types.ActionContinue
	}
	if err := proxywasm.SendHttpResponse(out.Status, out.Headers, out.Body, -1); err != nil {
		proxywasm.LogErrorf("meshguard: sending %d: %v", out.Status, err)
	}
	return types.ActionPause
}

// OnHttpResponseHeaders names the audit record of a recorded allow (or
// dry-run) in the response, as denies do, so callers and operators can
// find the decision in the audit trail.
func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	if s.x.OutboundPending() {
		// The upstream is known now: an unapproved version is refused
		// before its response reaches the caller.
		var out decide.Outcome
		abi.Scratch(func() { out = s.p.g.DecideResponse(&s.x, s, s) })
		if !out.Forward() {
			if err := proxywasm.SendHttpResponse(out.Status, out.Headers, out.Body, -1); err != nil {
				proxywasm.LogErrorf("meshguard: sending %d: %v", out.Status, err)
			}
			return types.ActionPause
		}
	}
	if id := s.x.DecisionID(); id != "" {
		if err := proxywasm.ReplaceHttpResponseHeader(s.p.g.DecisionHeader(), id); err != nil {
			proxywasm.LogWarnf("meshguard: decision header: %v", err)
		}
	}
	return types.ActionContinue
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

// Headers implements decide.Request with one hostcall for all headers
// (Envoy hands names over lower-cased): one read instead of one per header
// halves the hostcalls of a decision.
func (s *stream) Headers() decide.Headers {
	h, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		return nil
	}
	return h
}

// RemoveHeader implements decide.Request.
func (s *stream) RemoveHeader(name string) { _ = proxywasm.RemoveHttpRequestHeader(name) }

// ReplaceHeader implements decide.Request.
func (s *stream) ReplaceHeader(name, v string) {
	if err := proxywasm.ReplaceHttpRequestHeader(name, v); err != nil {
		proxywasm.LogErrorf("meshguard: replacing %s: %v", name, err)
	}
}

// LocalURISAN implements decide.Request.
func (s *stream) LocalURISAN() string { return property(propLocalURISAN) }

// PeerURISAN implements decide.Request.
func (s *stream) PeerURISAN() string { return property(propPeerURISAN) }

// PeerVersion implements decide.Request.
func (s *stream) PeerVersion() string { return property(propPeerVersion) }

// Metadata implements decide.MetadataReader: the property
// metadata.filter_metadata[filter][key][claim], a view of host data valid
// for the current callback.
func (s *stream) Metadata(filter, key, claim string) (string, bool) {
	b, err := proxywasm.GetProperty([]string{"metadata", "filter_metadata", filter, key, claim})
	if err != nil {
		return "", false
	}
	if len(b) == 0 {
		return "", true
	}
	return unsafe.String(&b[0], len(b)), true
}

// Source implements decide.Request.
func (s *stream) Source() string { return property(propSource) }

// property reads a property as a string view of host data in the scratch
// arena, valid for the current callback only ("" when absent).
func property(path []string) string {
	b, err := proxywasm.GetProperty(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// UpstreamAddress implements decide.Upstream.
func (s *stream) UpstreamAddress() string { return property(propUpstreamAddress) }

// UpstreamURISAN implements decide.Upstream.
func (s *stream) UpstreamURISAN() string { return property(propUpstreamURISAN) }

// UpstreamPeerVersion implements decide.Upstream.
func (s *stream) UpstreamPeerVersion() string { return property(propUpstreamVersion) }

// HostMetadata implements decide.Upstream: one Struct field of the picked
// endpoint's metadata (the filter name is one path segment).
func (s *stream) HostMetadata(filter, key string) (string, bool) {
	b, err := proxywasm.GetProperty([]string{"xds", "upstream_host_metadata", "filter_metadata", filter, key})
	if err != nil {
		return "", false
	}
	if len(b) == 0 {
		return "", true
	}
	return unsafe.String(&b[0], len(b)), true
}
