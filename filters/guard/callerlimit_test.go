//go:build !wasip1

package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/host/hosttest"
)

// callerLimitPolicy: each grid workload may read /v1/limited 3 times a
// minute (burst 3); a tighter limit on /v1/limited/trial is tried in dry
// run.
var callerLimitPolicy = []byte(`apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: limited}
spec:
  rules:
    - name: reads
      effect: allow
      trustDomains: [grid.example]
      paths: ["/v1/limited/**"]
      methods: [GET]
      rateLimit: {per: workload, requests: 3, period: 1m}
    - name: trial
      effect: allow
      dryRun: true
      trustDomains: [grid.example]
      paths: ["/v1/limited/trial/**"]
      rateLimit: {per: workload, requests: 1, period: 1h}
`)

// TestCallerLimitInTheModule: through guard.wasm with three worker VMs, a
// workload's budget is shared by every worker, other workloads have their
// own, the refusal is a 429 with Retry-After, the bucket refills, and a
// dry-run limit records without refusing.
func TestCallerLimitInTheModule(t *testing.T) {
	f := newFixture(t)
	bundle := f.Bundle(t, 2, f.WithPolicy("limited.yaml", callerLimitPolicy))
	cfg := f.Config(t, guardtest.Inline(bundle))
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg), hosttest.Workers(3))

	read := func(i int, who, path string) *hostReply {
		s := h.NewStreamOn(i%3, peer(who))
		s.Request("GET", path)
		return newHostReply(t, s)
	}
	allowed := 0
	var last *hostReply
	for i := range 6 {
		if r := read(i, reader, "/v1/limited/a"); r.status == 0 {
			allowed++
		} else {
			last = r
		}
	}
	assert.Equal(t, 3, allowed, "burst 3 shared by all workers")
	require.NotNil(t, last)
	assert.Equal(t, uint32(429), last.status)
	assert.Equal(t, "20", last.retryAfter, "3 a minute: a token every 20 s")
	assert.Equal(t, "limited/reads", last.body["rule"])
	assert.Equal(t, "caller rate limit of rule limited/reads exceeded for workload "+reader, last.body["reason"])
	assert.Equal(t, int64(3), h.Counter("wasmcustom.meshguard_caller_rate_limited_total.mode=enforced"))
	h.ExpectLog(`"reason":"caller rate limit of rule limited/reads exceeded for workload ` + reader + `"`)

	// Another workload has its own budget.
	assert.Zero(t, read(0, guardtest.Invoicer, "/v1/limited/a").status)
	// The bucket refills: one token after 20 s, not before.
	h.Advance(19 * time.Second)
	r := read(1, reader, "/v1/limited/a")
	assert.Equal(t, uint32(429), r.status)
	assert.Equal(t, "1", r.retryAfter)
	h.Advance(time.Second)
	assert.Zero(t, read(2, reader, "/v1/limited/a").status)

	// Dry run: the trial's one-an-hour limit lets both requests through
	// (the enforced limit of the invoicer still has tokens) and records the
	// second as a dry-run deny naming the trial rule.
	assert.Zero(t, read(0, guardtest.Invoicer, "/v1/limited/trial/x").status)
	assert.Zero(t, read(1, guardtest.Invoicer, "/v1/limited/trial/x").status)
	h.ExpectLog(`"decision":"dry-run-deny"`)
	h.ExpectLog(`caller rate limit of rule limited/trial exceeded for workload ` + guardtest.Invoicer + ` (dry run)`)
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_caller_rate_limited_total.mode=dry_run"))
	// The enforced limit still counts: its bucket refilled to 3 within the
	// 20 s, the trial reads took 2, one is left, then 429.
	assert.Zero(t, read(2, guardtest.Invoicer, "/v1/limited/trial/x").status)
	assert.Equal(t, uint32(429), read(0, guardtest.Invoicer, "/v1/limited/trial/x").status)
}

// TestCallerLimitPerDeviceInTheModule: per: device keys the bucket by the
// device token's id under the device-id case rule.
func TestCallerLimitPerDeviceInTheModule(t *testing.T) {
	f := newFixture(t)
	bundle := f.Bundle(t, 2, f.WithPolicy("meters.yaml", []byte(`apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: meters}
spec:
  devices: {classes: [meter]}
  rules:
    - {name: status, effect: allow, access: read, paths: ["/v1/meterdev/**"], rateLimit: {per: device, requests: 1, period: 1h}}
`)))
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, guardtest.Inline(bundle))), hosttest.Workers(2))
	read := func(i int, id string) *hostReply {
		s := h.NewStreamOn(i, peer(reader))
		s.Request("GET", "/v1/meterdev/x", [2]string{"x-device-token", f.DeviceToken(t, id, "meter", "voltwerk")})
		return newHostReply(t, s)
	}
	assert.Zero(t, read(0, "MTR-1").status)
	r := read(1, "mtr-1")
	assert.Equal(t, uint32(429), r.status, "one device, one budget however its id is written")
	assert.Equal(t, "3600", r.retryAfter)
	assert.Equal(t, "caller rate limit of rule meters/status exceeded for device mtr-1", r.body["reason"])
	assert.Zero(t, read(0, "mtr-2").status, "another device")
}

// TestCallerLimitModeDryRunInTheModule: with the guard in dry-run mode an
// enforced caller limit records the would-be 429 and lets the request on.
func TestCallerLimitModeDryRunInTheModule(t *testing.T) {
	f := newFixture(t)
	bundle := f.Bundle(t, 2, f.WithPolicy("limited.yaml", callerLimitPolicy))
	cfg := f.Config(t, func(m map[string]any) {
		guardtest.Inline(bundle)(m)
		m["mode"] = "dry-run"
	})
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg))
	for range 4 {
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/limited/a")
		s.ExpectNoLocalReply()
	}
	h.ExpectLog(`"decision":"dry-run-deny"`)
	h.ExpectLog(`caller rate limit of rule limited/reads exceeded`)
}

// hostReply is what a request got: status 0 when forwarded.
type hostReply struct {
	status     uint32
	retryAfter string
	body       map[string]string
}

func newHostReply(t *testing.T, s *hosttest.Stream) *hostReply {
	lr := s.LocalReply()
	if lr == nil {
		return &hostReply{}
	}
	r := &hostReply{status: lr.Status, body: decisionBody(t, lr)}
	r.retryAfter, _ = lr.Headers.Get("retry-after")
	return r
}
