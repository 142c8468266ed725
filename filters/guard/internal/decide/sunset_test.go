//go:build !wasip1

package decide

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/policies"
)

// TestSunsetTelemetry: the nearest sunset ahead is reported on install and
// again once it passes; decisions compare with the guard's clock.
func TestSunsetTelemetry(t *testing.T) {
	f := guardtest.New(t, epoch)
	day := 24 * time.Hour
	pol := []byte(`apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: rv}
spec:
  rules:
    - name: r
      subjects: [` + reader + `]
      source: {header: x-sw-version}
      allowed:
        - {range: "1.x", until: "` + policies.FormatInstant(epoch.Add(day)) + `"}
        - {range: "1.x", until: "` + policies.FormatInstant(epoch.Add(3*day)) + `"}
`)
	p := newProxy()
	w := p.worker(t, f.Config(t, guardtest.Inline(f.Bundle(t, 2, f.WithPolicy("rv.yaml", pol)))))
	require.NoError(t, w.Err())
	require.Equal(t, []time.Time{epoch.Add(day)}, utc(w.tel.sunsets))
	var x Exchange
	ask := func() Outcome {
		return w.Decide(&x, get("/v1/meters/42/readings", [2]string{"x-sw-version", "1.0.0"}).from(reader))
	}
	assert.True(t, ask().Forward())
	p.now = epoch.Add(day)
	// The first entry's window closed, the second still approves 1.x.
	assert.True(t, ask().Forward())
	assert.Equal(t, []time.Time{epoch.Add(day), epoch.Add(3 * day)}, utc(w.tel.sunsets))
	assert.True(t, ask().Forward())
	assert.Len(t, w.tel.sunsets, 2, "reported again only when the reported one passes")
	p.now = epoch.Add(3 * day)
	out := ask()
	assert.Equal(t, uint32(403), out.Status)
	assert.Contains(t, reply(t, out).Reason, "sunset passed")
	assert.Equal(t, []time.Time{epoch.Add(day), epoch.Add(3 * day), {}}, utc(w.tel.sunsets))
}

func utc(l []time.Time) []time.Time {
	out := make([]time.Time, len(l))
	for i, t := range l {
		if !t.IsZero() {
			out[i] = t.UTC()
		}
	}
	return out
}
