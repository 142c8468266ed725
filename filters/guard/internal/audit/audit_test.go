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
		DeviceClass: "inverter", Version: "2.3.1", Method: "GET", Path: "/v1/x", Authority: "a", Proxy: "p", Source: "10.0.0.1:1",
		Peer: "spiffe://grid.example/fwd", TokenSubject: "spiffe://grid.example/a", Forwarder: "spiffe://grid.example/fwd",
		JTI: "j-1", TargetDevice: "inv-1", Firmware: "4.1.0", ProxyID: "spiffe://grid.example/ns/grid/sa/der"}
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
	// Aggregated and gap records: their numbers and times are what
	// json.Marshal writes, and the distributor accepts and keeps them.
	for _, a := range []*Record{
		{Time: r.Time, DecisionID: "a-1", Decision: contract.DecisionUnavailable, RuleIDs: []string{}, Reason: "policy unavailable: no bundle",
			Count: 12, FirstTime: r.Time, LastTime: r.Time.Add(1500 * time.Millisecond)},
		{Time: r.Time, DecisionID: "a-2", Decision: contract.DecisionGap, RuleIDs: []string{}, Reason: "audit buffer full",
			Dropped: 3, FirstTime: r.Time.Add(-time.Second), LastTime: r.Time},
	} {
		want, err := json.Marshal(a)
		require.NoError(t, err)
		got := AppendJSON(nil, a)
		assert.JSONEq(t, string(want), string(got))
		rec, err := decisionlog.DecodeRecord(got)
		require.NoError(t, err, "%s", got)
		for _, f := range []string{contract.FieldFirstTime, contract.FieldLastTime} {
			assert.Contains(t, rec, f)
		}
	}
}

// TestDistributorChecksTheNewFields: count, dropped and the time range
// are typed; a record with a wrong type is refused.
func TestDistributorChecksTheNewFields(t *testing.T) {
	for _, bad := range []string{
		`{"time":"2026-11-23T09:00:00Z","decision":"gap","dropped":-1}`,
		`{"time":"2026-11-23T09:00:00Z","decision":"gap","dropped":"3"}`,
		`{"time":"2026-11-23T09:00:00Z","decision":"unavailable","count":1.5}`,
		`{"time":"2026-11-23T09:00:00Z","decision":"gap","first_time":"yesterday"}`,
		`{"time":"2026-11-23T09:00:00Z","decision":"gap","last_time":17}`,
	} {
		_, err := decisionlog.DecodeRecord([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func decode(t *testing.T, r *Record) wire {
	var w wire
	require.NoError(t, json.Unmarshal(AppendJSON(nil, r), &w))
	return w
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("reason", "/p", "\xff\x00\"")
	f.Fuzz(func(t *testing.T, reason, path, subject string) {
		var w wire
		require.NoError(t, json.Unmarshal(AppendJSON(nil, &Record{Reason: reason, Path: path, Subject: subject}), &w))
	})
}
