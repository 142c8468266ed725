//go:build !wasip1

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/meshguard/meshguard/filters/guard/internal/guardtest"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/policies"
)

// sunsetPolicy approves the meter reader's 1.x only until two days after
// the epoch and 0.9.x until five days (and half a second) after it; 2.x
// has no sunset.
func sunsetPolicy() []byte {
	return fmt.Appendf(nil, `apiVersion: meshguard.io/v1
kind: VersionPolicy
metadata: {name: reader-versions}
spec:
  rules:
    - name: reader-releases
      subjects: [%s]
      source: {header: x-sw-version}
      allowed:
        - ">=2.0.0"
        - {range: "1.x", until: "%s"}
        - {range: "~0.9.0", until: "%s"}
`, guardtest.Reader, policies.FormatInstant(epoch.Add(48*time.Hour)),
		epoch.Add(5*24*time.Hour+500*time.Millisecond).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano))
}

// TestVersionSunsetInTheModule: through guard.wasm, a version approved only
// by a sunset entry is denied from the until instant on with the sunset's
// reason, and the gauge names the nearest sunset ahead, moving on as each
// passes.
func TestVersionSunsetInTheModule(t *testing.T) {
	f := newFixture(t)
	bundle := f.Bundle(t, 2, f.WithPolicy("sunset.yaml", sunsetPolicy()))
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, guardtest.Inline(bundle))))
	const gauge = "wasmcustom.meshguard_version_sunset_next_timestamp_seconds"
	assert.Equal(t, epoch.Add(48*time.Hour).Unix(), h.Counter(gauge))

	read := func(version string) (uint32, string) {
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings", [2]string{"x-sw-version", version})
		if lr := s.LocalReply(); lr != nil {
			return lr.Status, decisionBody(t, lr)["reason"]
		}
		return 0, ""
	}
	for _, v := range []string{"1.4.2", "0.9.3", "2.1.0"} {
		st, reason := read(v)
		assert.Zero(t, st, "%s inside its window: %s", v, reason)
	}
	h.Advance(48*time.Hour - time.Millisecond)
	st, _ := read("1.4.2")
	assert.Zero(t, st, "a millisecond before the sunset")

	h.Advance(time.Millisecond)
	st, reason := read("1.4.2")
	assert.Equal(t, uint32(403), st)
	assert.Equal(t, `software version approved by "1.x" until `+policies.FormatInstant(epoch.Add(48*time.Hour))+`: sunset passed`, reason)
	h.ExpectLog(`sunset passed`)
	// The gauge moved on to the next window (its second rounded up).
	assert.Equal(t, epoch.Add(5*24*time.Hour).Unix()+1, h.Counter(gauge))
	st, _ = read("0.9.3")
	assert.Zero(t, st)

	h.Advance(3*24*time.Hour + 500*time.Millisecond)
	st, reason = read("0.9.3")
	assert.Equal(t, uint32(403), st)
	assert.Contains(t, reason, `"~0.9.0" until `+policies.FormatInstant(epoch.Add(5*24*time.Hour+500*time.Millisecond)))
	assert.Zero(t, h.Counter(gauge), "no sunset ahead")
	st, _ = read("2.1.0")
	assert.Zero(t, st, "a version without a sunset stays approved")
	st, reason = read("0.8.0")
	assert.Equal(t, policies.ReasonVersionRange, reason)
	assert.Equal(t, uint32(403), st)
}
