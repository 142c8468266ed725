package audit

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/internal/contract"
)

type wire = contract.Record

func TestAppendJSONRoundTrip(t *testing.T) {
	r := &Record{Time: time.Date(2026, 11, 23, 9, 0, 0, 123456789, time.UTC), DecisionID: "d-1", Decision: "deny",
		RuleIDs: []string{"r1", "r\"2"}, Reason: "no rule <allows>\n\x00\xff\u2028", BundleRevision: 42,
		Subject: "spiffe://grid.example/x", DeviceID: "inv-1", DeviceClass: "inverter", Version: "1.2.3",
		Method: "POST", Path: "/v1/setpoint?x=1", Authority: "der", Proxy: "sidecar-1", Source: "10.0.0.1:5555"}
	b := AppendJSON(nil, r)
	var w wire
	require.NoError(t, json.Unmarshal(b, &w), "%s", b)
	assert.True(t, r.Time.Equal(w.Time))
	assert.Equal(t, "no rule <allows>\n\x00\ufffd\u2028", w.Reason)
	assert.Equal(t, []string{"r1", "r\"2"}, w.RuleIDs)
	assert.Equal(t, uint64(42), w.BundleRevision)
	assert.Equal(t, "10.0.0.1:5555", w.Source)
	assert.Equal(t, "dry-run-deny", decode(t, &Record{Decision: "dry-run-deny"}).Decision)
	assert.Equal(t, []string{}, decode(t, &Record{}).RuleIDs)
}

// TestAppendJSONIsTheContract: the hand encoder writes what json.Marshal
// writes for the contract's Record, and the distributor accepts it.
func TestAppendJSONIsTheContract(t *testing.T) {
	r := &Record{Time: time.Date(2026, 11, 23, 9, 0, 0, 5, time.UTC), DecisionID: "d-1", Decision: contract.DecisionDryRunDeny,
		RuleIDs: []string{"p/r"}, Reason: "why", BundleRevision: 7, Subject: "spiffe://grid.example/a", DeviceID: "inv-1",
		DeviceClass: "inverter", Version: "2.3.1", Method: "GET", Path: "/v1/x", Authority: "a", Proxy: "p", Source: "10.0.0.1:1"}
	want, err := json.Marshal(r)
	require.NoError(t, err)
	got := AppendJSON(nil, r)
	assert.JSONEq(t, string(want), string(got))
	rec, err := decisionlog.DecodeRecord(got)
	require.NoError(t, err)
	for _, f := range append([]string{contract.FieldTime, contract.FieldDecision, contract.FieldRuleIDs, contract.FieldBundleRevision}, contract.RecordStringFields...) {
		assert.Contains(t, rec, f)
	}
	for _, d := range contract.RecordDecisions {
		_, err := decisionlog.DecodeRecord(AppendJSON(nil, &Record{Time: r.Time, Decision: d}))
		assert.NoError(t, err, d)
	}
}

func decode(t *testing.T, r *Record) wire {
	var w wire
	require.NoError(t, json.Unmarshal(AppendJSON(nil, r), &w))
	return w
}

func TestBufferBoundedAndBatches(t *testing.T) {
	q := NewBuffer(3)
	for i := range 5 {
		q.Add(&Record{DecisionID: string(rune('a' + i))})
	}
	assert.Equal(t, 3, q.Len())
	assert.Equal(t, uint64(2), q.Dropped)
	b, n := q.Batch(nil, 2)
	assert.Equal(t, 2, n)
	var ws []wire
	require.NoError(t, json.Unmarshal(b, &ws))
	require.Len(t, ws, 2)
	assert.Equal(t, "a", ws[0].DecisionID)
	assert.Equal(t, "b", ws[1].DecisionID)
	q.Add(&Record{DecisionID: "z"})
	b, n = q.Batch(b[:0], 10)
	assert.Equal(t, 2, n)
	require.NoError(t, json.Unmarshal(b, &ws))
	assert.Equal(t, "c", ws[0].DecisionID)
	assert.Equal(t, "z", ws[1].DecisionID)
	b, n = q.Batch(b[:0], 10)
	assert.Equal(t, 0, n)
	assert.Equal(t, "[]", string(b))
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("reason", "/p", "\xff\x00\"")
	f.Fuzz(func(t *testing.T, reason, path, subject string) {
		var w wire
		require.NoError(t, json.Unmarshal(AppendJSON(nil, &Record{Reason: reason, Path: path, Subject: subject}), &w))
	})
}
