//go:build !wasip1

package main

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

const upstreamPolicy = `apiVersion: meshguard.io/v1
kind: TrustDomain
metadata: {name: kuma.example}
spec: {}
---
apiVersion: meshguard.io/v1
kind: DeviceRegistry
metadata: {name: feeder-7}
spec:
  devices:
    - {id: inv-0042, class: inverter, vendor: voltwerk, firmware: 3.2.0}
    - {id: inv-0007, class: inverter, vendor: sunbridge, firmware: 2.9.9}
---
apiVersion: meshguard.io/v1
kind: UpstreamVersionPolicy
metadata: {name: der-upstreams}
spec:
  rules:
    - name: inverter-firmware
      deviceClasses: [inverter]
      source: {deviceFirmware: true}
      allowed: ">=3.1.0"
    - name: inverterGW-releases
      upstreams: [spiffe://grid.example/ns/der/sa/inverter-gw]
      source: {upstreamPeer: version}
      allowed: ">=1.4.0, <2.0.0"
    - name: kuma-controllers
      trustDomains: [kuma.example]
      source: {hostMetadata: {filter: envoy.lb, key: version}}
      allowed: ">=5.0.0"
`

const (
	inverterGW = "spiffe://grid.example/ns/der/sa/inverter-gw"
	kumaID     = "spiffe://kuma.example/controller_der_svc_8080"
)

// outboundHarness runs guard.wasm as a caller-side guard (direction
// outbound) with the upstream policy in its bundle.
func outboundHarness(t *testing.T, mutate func(map[string]any)) *hosttest.Harness {
	f := newFixture(t)
	files := maps.Clone(f.Files)
	files["policies/upstream.yaml"] = []byte(upstreamPolicy)
	cfg := f.Config(t, func(m map[string]any) {
		guardtest.Inline(f.Bundle(t, 1, files))(m)
		m["direction"] = "outbound"
		m["identity"] = map[string]any{"stripHeaders": []string{"x-meshguard-subject"}}
		if mutate != nil {
			mutate(m)
		}
	})
	return hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
}

// istioUpstream is what Envoy presents once the router picked an Istio
// upstream: its address, its certificate's URI SAN, and the upstream peer
// metadata Istio's metadata exchange set from the response.
func istioUpstream(id, version string) *host.Props {
	return host.NewProps().SetString("upstream.address", "10.0.3.7:8443").SetString("upstream.uri_san_peer_certificate", id).
		SetPeer("upstream_peer", map[string]string{"workload": "inverter-gw", "namespace": "der", "version": version}, nil)
}

// kumaUpstream is a Kuma endpoint: the dataplane's tags as envoy.lb
// endpoint metadata, a Kuma SPIFFE ID.
func kumaUpstream(version string) *host.Props {
	tags := map[string]string{"kuma.io/service": "controller_der_svc_8080"}
	if version != "" {
		tags["version"] = version
	}
	return host.NewProps().SetString("upstream.address", "10.0.9.1:8080").
		SetString("upstream.uri_san_peer_certificate", kumaID).
		SetUpstreamHostMetadata(map[string]map[string]string{"envoy.lb": tags})
}

// TestOutboundBeforeTheRequestLeaves: a control signal to a registered
// inverter running unapproved firmware is refused at request headers
// (403), before the router picks a host; approved firmware goes on.
func TestOutboundBeforeTheRequestLeaves(t *testing.T) {
	h := outboundHarness(t, nil)
	s := h.NewStream(nil)
	s.Request("PUT", "/v1/inverters/inv-0007/setpoint")
	lr := s.ExpectLocalReply(403)
	body := decisionBody(t, lr)
	assert.Equal(t, "der-upstreams/inverter-firmware", body["rule"])
	assert.Equal(t, "software version is outside the allowed range", body["reason"])
	h.ExpectLog(`"version":"2.9.9"`)
	h.ExpectLog(`"target_device":"inv-0007"`)

	s = h.NewStream(nil)
	s.Request("PUT", "/v1/inverters/INV-0042/setpoint")
	s.ExpectNoLocalReply()
	s = h.NewStream(nil)
	s.Request("PUT", "/v1/inverters/inv-0999/setpoint")
	assert.Equal(t, "target device is not in the device registry", decisionBody(t, s.ExpectLocalReply(403))["reason"])
	s = h.NewStream(nil)
	s.Request("PUT", "/v1/inverters/inv-0007/../inv-0042/setpoint")
	s.ExpectLocalReply(400)
}

// TestOutboundAtResponseHeaders: where the upstream is known only once the
// router picked it, the guard decides at response headers: an unapproved
// version gets 502 with the reason instead of the upstream's response, and
// the record names the upstream and its version.
func TestOutboundAtResponseHeaders(t *testing.T) {
	h := outboundHarness(t, nil)
	cases := []struct {
		name    string
		up      *host.Props
		status  uint32
		rule    string
		reason  string
		version string
		peer    string // the upstream's SPIFFE ID in the record
	}{
		{name: "Istio upstream at an approved version", up: istioUpstream(inverterGW, "1.4.2")},
		{name: "Istio upstream at an unapproved version", up: istioUpstream(inverterGW, "2.0.1"), status: 502,
			rule: "der-upstreams/inverterGW-releases", reason: "software version is outside the allowed range", version: "2.0.1", peer: inverterGW},
		{name: "Istio upstream without peer metadata", up: istioUpstream(inverterGW, ""), status: 502,
			rule: "der-upstreams/inverterGW-releases", reason: "software version is unknown", peer: inverterGW},
		{name: "an upstream no rule names", up: istioUpstream("spiffe://grid.example/ns/metering/sa/meter-api", "0.0.1")},
		{name: "Kuma endpoint version tag approved", up: kumaUpstream("5.2.0")},
		{name: "Kuma endpoint version tag too old", up: kumaUpstream("4.9.9"), status: 502,
			rule: "der-upstreams/kuma-controllers", reason: "outside the allowed range", version: "4.9.9", peer: kumaID},
		{name: "Kuma endpoint without a version tag", up: kumaUpstream(""), status: 502,
			rule: "der-upstreams/kuma-controllers", reason: "software version is unknown", peer: kumaID},
		{name: "no upstream picked (a local reply upstream of the guard)", up: host.NewProps()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := h.NewStream(nil)
			s.Request("POST", "/v1/dispatch")
			s.ExpectNoLocalReply()
			s.SelectUpstream(c.up)
			v := s.ResponseHeaders(host.Headers{{":status", "200"}, {"content-type", "text/plain"}}, false)
			if c.status == 0 {
				assert.Nil(t, v.Reply, "approved: the upstream's response goes on")
				return
			}
			lr := s.ExpectLocalReply(c.status)
			body := decisionBody(t, lr)
			assert.Equal(t, c.rule, body["rule"])
			assert.Contains(t, body["reason"], "upstream refused at response headers: ")
			assert.Contains(t, body["reason"], c.reason)
			id, ok := host.Headers(lr.Headers).Get("x-meshguard-decision")
			require.True(t, ok)
			rec := findRecord(t, h, id)
			assert.Equal(t, "deny", rec["decision"])
			assert.Equal(t, c.version, rec["version"])
			assert.Equal(t, c.peer, rec["peer"], "the record names the upstream")
		})
	}
}

// TestOutboundUpstreamFilter: placed where the host is already picked (an
// upstream HTTP filter), the upstream is decided at request headers, so an
// unapproved version never receives the request.
func TestOutboundUpstreamFilter(t *testing.T) {
	h := outboundHarness(t, nil)
	s := h.NewStream(nil)
	s.SelectUpstream(istioUpstream(inverterGW, "2.0.0"))
	s.Request("POST", "/v1/dispatch")
	assert.Equal(t, "der-upstreams/inverterGW-releases", decisionBody(t, s.ExpectLocalReply(403))["rule"])
	s = h.NewStream(nil)
	s.SelectUpstream(istioUpstream(inverterGW, "1.9.0"))
	s.Request("POST", "/v1/dispatch")
	s.ExpectNoLocalReply()
	v := s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	assert.Nil(t, v.Reply, "decided once, before the request left")
}

// TestOutboundDryRun: with mode dry-run a refusal at either point is
// recorded as dry-run-deny and the traffic goes on.
func TestOutboundDryRun(t *testing.T) {
	h := outboundHarness(t, func(m map[string]any) { m["mode"] = "dry-run" })
	s := h.NewStream(nil)
	s.Request("PUT", "/v1/inverters/inv-0007/setpoint")
	s.ExpectNoLocalReply()
	s = h.NewStream(nil)
	s.Request("POST", "/v1/dispatch")
	s.SelectUpstream(istioUpstream(inverterGW, "2.0.1"))
	v := s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	assert.Nil(t, v.Reply)
	assert.Equal(t, int64(2), h.Counter("wasmcustom.meshguard_decisions_total.result=dry-run-deny"))
}

// findRecord returns the logged audit record with decision id id.
func findRecord(t *testing.T, h *hosttest.Harness, id string) map[string]any {
	t.Helper()
	for _, m := range h.LogMessages(host.LogInfo) {
		i := strings.IndexByte(m, '{')
		if i < 0 || !strings.Contains(m, `"decision_id":"`+id+`"`) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(m[i:]), &rec) == nil {
			return rec
		}
	}
	t.Fatalf("no audit record %s in the log", id)
	return nil
}

// TestOutboundRecordsOnce: with every allow logged, a request decided at
// response headers has one record, and the response names it.
func TestOutboundRecordsOnce(t *testing.T) {
	h := outboundHarness(t, func(m map[string]any) { m["audit"] = map[string]any{"logAllows": true} })
	s := h.NewStream(nil)
	s.Request("POST", "/v1/dispatch")
	s.ExpectNoLocalReply()
	s.SelectUpstream(istioUpstream(inverterGW, "1.4.0"))
	s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	id, ok := s.ResponseHeader("x-meshguard-decision")
	require.True(t, ok)
	rec := findRecord(t, h, id)
	assert.Equal(t, "allow", rec["decision"])
	assert.Equal(t, inverterGW, rec["peer"])
	n := 0
	for _, m := range h.LogMessages(host.LogInfo) {
		if strings.Contains(m, `"decision_id":`) {
			n++
		}
	}
	assert.Equal(t, 1, n, "one record per request")
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_decisions_total.result=allow"))
}

// BenchmarkOutbound measures a caller-side request through guard.wasm:
// the request-headers decision (the target's registry firmware) and, for a
// pending one, the response-headers decision with the Istio upstream:
// go test ./filters/guard -run '^$' -bench Outbound -benchtime 2000x
func BenchmarkOutbound(b *testing.B) {
	f := newFixture(b)
	files := maps.Clone(f.Files)
	files["policies/upstream.yaml"] = []byte(upstreamPolicy)
	cfg := f.Config(b, func(m map[string]any) {
		guardtest.Inline(f.Bundle(b, 1, files))(m)
		m["direction"] = "outbound"
		m["identity"] = map[string]any{}
	})
	h := hosttest.New(b, guardWasm(b), hosttest.PluginConfig(cfg), hosttest.LogLevel(host.LogWarn))
	up := istioUpstream(inverterGW, "1.4.2")
	for _, tc := range []struct {
		name, path string
		response   bool
	}{{"request-device-firmware", "/v1/inverters/inv-0042/setpoint", false}, {"response-upstream-peer", "/v1/dispatch", true}} {
		b.Run(tc.name, func(b *testing.B) {
			hdrs := host.Headers{{":method", "POST"}, {":path", tc.path}, {":authority", "der"}, {":scheme", "http"}}
			resp := host.Headers{{":status", "200"}}
			d := make([]time.Duration, 0, b.N)
			for b.Loop() {
				s := h.Plugin.NewStream(nil)
				t0 := time.Now()
				v := s.RequestHeaders(hdrs, true)
				if tc.response {
					s.SelectUpstream(up)
					v = s.ResponseHeaders(resp, true)
				}
				d = append(d, time.Since(t0))
				if v.Reply != nil {
					b.Fatalf("refused: %s", v.Reply.Body)
				}
				s.Complete()
			}
			percentiles(b, d)
		})
	}
}
