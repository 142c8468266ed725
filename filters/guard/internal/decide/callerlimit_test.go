//go:build !wasip1

package decide

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
)

const scada = "spiffe://grid.example/ns/scada/sa/historian"

var limitedPolicy = []byte(`apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: limited}
spec:
  rules:
    - name: reads
      effect: allow
      trustDomains: [grid.example]
      paths: ["/v1/limited/**"]
      rateLimit: {per: workload, requests: 2, period: 1s}
    - name: trial
      effect: allow
      dryRun: true
      trustDomains: [grid.example]
      paths: ["/v1/limited/trial/**"]
      rateLimit: {per: workload, requests: 1, period: 1m}
`)

// TestCallerLimits: workers of one proxy share a caller's bucket, a
// refusal is a 429 with Retry-After, a dry-run limit records only.
func TestCallerLimits(t *testing.T) {
	f := guardtest.New(t, epoch)
	cfg := f.Config(t, guardtest.Inline(f.Bundle(t, 2, f.WithPolicy("limited.yaml", limitedPolicy))))
	p := newProxy()
	a, b := p.worker(t, cfg), p.worker(t, cfg)
	var x Exchange
	require.True(t, a.Decide(&x, get("/v1/limited/1").from(reader)).Forward())
	require.True(t, b.Decide(&x, get("/v1/limited/1").from(reader)).Forward())
	out := a.Decide(&x, get("/v1/limited/1").from(reader))
	require.Equal(t, uint32(429), out.Status)
	assert.Contains(t, out.Headers, [2]string{"retry-after", "1"})
	assert.Equal(t, "caller rate limit of rule limited/reads exceeded for workload "+reader, reply(t, out).Reason)
	assert.Equal(t, 1, a.tel.callerLimited)
	rec := a.recs.last(t)
	assert.Equal(t, "deny", rec.Decision)
	assert.Equal(t, []string{"limited/reads"}, rec.RuleIDs)
	// Another caller has its own bucket; the refill gives one token in 0.5 s.
	assert.True(t, a.Decide(&x, get("/v1/limited/1").from(invoicer)).Forward())
	p.now = p.now.Add(500 * time.Millisecond)
	assert.True(t, b.Decide(&x, get("/v1/limited/1").from(reader)).Forward())

	// The dry-run limit: the second trial read goes on, recorded.
	p.now = p.now.Add(time.Second)
	require.True(t, a.Decide(&x, get("/v1/limited/trial/1").from(scada)).Forward())
	require.True(t, b.Decide(&x, get("/v1/limited/trial/1").from(scada)).Forward())
	rec = b.recs.last(t)
	assert.Equal(t, "dry-run-deny", rec.Decision)
	assert.Equal(t, []string{"limited/trial"}, rec.RuleIDs)
	assert.Equal(t, "caller rate limit of rule limited/trial exceeded for workload "+scada+" (dry run)", rec.Reason)
	assert.Equal(t, 1, b.tel.callerDry)
}
