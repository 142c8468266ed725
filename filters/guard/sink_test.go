//go:build !wasip1

package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
	"github.com/meshguard/meshguard/internal/contract"
)

// sinkHarness runs the guard recording every decision into a sink of
// batchSize 2 flushed every second, with extra sink settings.
func sinkHarness(t *testing.T, extra map[string]any) *hosttest.Harness {
	f := newFixture(t)
	cfg := f.Config(t, func(m map[string]any) {
		sink := map[string]any{"cluster": "distributor", "batchSize": 2, "flushInterval": "1s", "maxBackoff": "4s"}
		for k, v := range extra {
			sink[k] = v
		}
		m["audit"] = map[string]any{"logAllows": true, "sink": sink}
	})
	return hosttest.New(t, guardWasm(t), hosttest.PluginConfig(cfg), hosttest.Cluster("distributor"), hosttest.Workers(1),
		hosttest.Properties(host.NewProps().SetString("xds.node.id", "sidecar~10.0.0.7~meter-0")))
}

// allow sends an allowed request and returns the decision id it names.
func allow(t *testing.T, h *hosttest.Harness) string {
	s := h.NewStream(peer(reader).SetString("connection.uri_san_local_certificate", "spiffe://grid.example/ns/grid/sa/meter-api"))
	s.Request("GET", "/v1/meters/42/readings")
	s.ExpectNoLocalReply()
	s.ResponseHeaders(host.Headers{{":status", "200"}}, true)
	id, ok := s.ResponseHeader(contract.DecisionHeader)
	require.True(t, ok)
	s.Complete()
	return id
}

// uploads returns the pending uploads.
func uploads(h *hosttest.Harness) []*hosttest.Callout {
	var out []*hosttest.Callout
	for _, c := range h.Callouts() {
		if c.Header(":method") == "POST" {
			out = append(out, c)
		}
	}
	return out
}

func batchOf(t *testing.T, c *hosttest.Callout) []map[string]any {
	var b []map[string]any
	require.NoError(t, json.Unmarshal(c.Request.Body, &b), "%s", c.Request.Body)
	return b
}

func batchIDs(t *testing.T, c *hosttest.Callout) []any {
	var out []any
	for _, r := range batchOf(t, c) {
		out = append(out, r[contract.FieldDecisionID])
	}
	return out
}

// TestSinkRetriesKeepTheBatch: a failed upload keeps its batch, which goes
// again, byte for byte, after the backoff or the distributor's
// Retry-After; nothing is dropped.
func TestSinkRetriesKeepTheBatch(t *testing.T) {
	h := sinkHarness(t, nil)
	a, b, c := allow(t, h), allow(t, h), allow(t, h)
	h.Advance(time.Second)
	up := uploads(h)
	require.Len(t, up, 1)
	first := up[0].Request.Body
	assert.Equal(t, []any{a, b}, batchIDs(t, up[0]))
	rec := batchOf(t, up[0])[0]
	assert.Equal(t, "spiffe://grid.example/ns/grid/sa/meter-api", rec[contract.FieldProxyID], "the proxy's own SPIFFE ID")
	assert.Equal(t, "sidecar~10.0.0.7~meter-0", rec[contract.FieldProxy])
	assert.Equal(t, reader, rec[contract.FieldPeer])
	up[0].Fail()
	h.ExpectLog("decision upload of 2 records failed (no answer); kept")

	// The first backoff is under a second: the next tick retries.
	h.Advance(time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	assert.Equal(t, string(first), string(up[0].Request.Body), "a retry sends the same records")
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_audit_upload_retries_total"))
	assert.Equal(t, int64(3), h.Counter("wasmcustom.meshguard_audit_buffered_records"))
	assert.Positive(t, h.Counter("wasmcustom.meshguard_audit_buffered_bytes"))

	// The backoff doubles: a second failure waits 1-2 s, a third 2-4 s.
	up[0].Fail()
	h.Advance(2 * time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	up[0].Fail()
	h.Advance(time.Second)
	assert.Empty(t, uploads(h), "the third retry waits at least 2 s")
	h.Advance(3 * time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	assert.Equal(t, string(first), string(up[0].Request.Body))
	assert.Equal(t, int64(3), h.Counter("wasmcustom.meshguard_audit_upload_retries_total"))

	// 503 with Retry-After: 5 is honoured.
	up[0].Respond("503", host.Headers{{"retry-after", "5"}}, nil)
	for range 4 {
		h.Advance(time.Second)
		assert.Empty(t, uploads(h), "retry before the distributor's Retry-After")
	}
	h.Advance(time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	assert.Equal(t, string(first), string(up[0].Request.Body))
	up[0].Respond("202", nil, nil)
	h.ExpectLog("decision upload succeeded after 4 failed attempts")

	h.Advance(time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	assert.Equal(t, []any{c}, batchIDs(t, up[0]))
	up[0].Respond("202", nil, nil)
	assert.Equal(t, int64(3), h.Counter("wasmcustom.meshguard_audit_sent_total"))
	assert.Zero(t, h.Counter("wasmcustom.meshguard_audit_dropped_total"))
	assert.Equal(t, int64(4), h.Counter("wasmcustom.meshguard_audit_upload_failures_total"))
	assert.Equal(t, int64(4), h.Counter("wasmcustom.meshguard_audit_upload_retries_total"))
	h.Advance(time.Second)
	assert.Zero(t, h.Counter("wasmcustom.meshguard_audit_buffered_records"))
	assert.Zero(t, h.Counter("wasmcustom.meshguard_audit_buffered_bytes"))
}

// TestSinkRefusedBatchSplits: a batch the distributor refuses (400) is
// split; the record refused alone is dropped and the next upload carries
// a gap record for it, so the batch cannot loop forever.
func TestSinkRefusedBatchSplits(t *testing.T) {
	h := sinkHarness(t, nil)
	a, b := allow(t, h), allow(t, h)
	h.Advance(time.Second)
	up := uploads(h)
	require.Len(t, up, 1)
	up[0].Respond("400", nil, []byte(`{"error":"bad record"}`))
	h.ExpectLog("refused a decision upload of 2 records (400)")

	h.Advance(time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	assert.Equal(t, []any{a}, batchIDs(t, up[0]), "split in halves")
	up[0].Respond("400", nil, nil) // a refused alone: dropped

	h.Advance(time.Second)
	up = uploads(h)
	require.Len(t, up, 1)
	batch := batchOf(t, up[0])
	require.Len(t, batch, 2)
	gap := batch[0]
	assert.Equal(t, contract.DecisionGap, gap[contract.FieldDecision])
	assert.Equal(t, 1.0, gap[contract.FieldDropped])
	assert.Equal(t, gap[contract.FieldFirstTime], gap[contract.FieldLastTime])
	assert.Contains(t, gap[contract.FieldReason], "refused by the distributor")
	assert.Equal(t, "sidecar~10.0.0.7~meter-0", gap[contract.FieldProxy])
	assert.Equal(t, b, batch[1][contract.FieldDecisionID])
	up[0].Respond("202", nil, nil)
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_audit_gaps_sent_total"))
	assert.Equal(t, int64(1), h.Counter("wasmcustom.meshguard_audit_sent_total"))
}

// TestSinkFullBufferDropsOldest: past bufferBytes the oldest records not
// in flight go; the gap record that follows counts them.
func TestSinkFullBufferDropsOldest(t *testing.T) {
	h := sinkHarness(t, map[string]any{"bufferBytes": 16 << 10, "batchSize": 5})
	var ids []string
	for range 5 {
		ids = append(ids, allow(t, h))
	}
	h.Advance(time.Second)
	up := uploads(h)
	require.Len(t, up, 1)
	inflight := up[0]
	for range 100 {
		ids = append(ids, allow(t, h))
	}
	dropped := h.Counter("wasmcustom.meshguard_audit_dropped_total")
	require.Positive(t, dropped, "100 records do not fit 16 KiB")
	inflight.Respond("202", nil, nil) // the batch in flight was kept
	var got []any
	var gaps []map[string]any
	for range 50 {
		h.Advance(time.Second)
		up = uploads(h)
		if len(up) == 0 {
			break
		}
		for _, r := range batchOf(t, up[0]) {
			if r[contract.FieldDecision] == contract.DecisionGap {
				gaps = append(gaps, r)
			} else {
				got = append(got, r[contract.FieldDecisionID])
			}
		}
		up[0].Respond("202", nil, nil)
	}
	require.Len(t, gaps, 1)
	assert.Equal(t, float64(dropped), gaps[0][contract.FieldDropped])
	assert.Equal(t, 100-int(dropped), len(got))
	// The oldest were dropped: what arrived is the newest.
	want := make([]any, 0, len(got))
	for _, id := range ids[len(ids)-len(got):] {
		want = append(want, id)
	}
	assert.Equal(t, want, got)
}

// TestUnavailableAggregated: a flood of 503s for an unavailable policy is
// one record per interval and reason, its count the number of refusals,
// named by every reply.
func TestUnavailableAggregated(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, distributorConfig(false))),
		hosttest.Cluster("distributor"), hosttest.Workers(1))
	var named []string
	for range 50 {
		s := h.NewStream(peer(reader))
		s.Request("GET", "/v1/meters/42/readings")
		lr := s.ExpectLocalReply(503)
		id, _ := lr.Headers.Get(contract.DecisionHeader)
		named = append(named, id)
	}
	for _, id := range named {
		assert.Equal(t, named[0], id)
	}
	h.Advance(time.Second)
	var recs []map[string]any
	for _, c := range uploads(h) {
		recs = append(recs, batchOf(t, c)...)
		c.Respond("202", nil, nil)
	}
	require.Len(t, recs, 1)
	assert.Equal(t, contract.DecisionUnavailable, recs[0][contract.FieldDecision])
	assert.Equal(t, 50.0, recs[0][contract.FieldCount])
	assert.Equal(t, named[0], recs[0][contract.FieldDecisionID])
	assert.NotEmpty(t, recs[0][contract.FieldFirstTime])
}
