//go:build !wasip1

package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCallerLimits(t *testing.T) {
	files, err := ReadPaths("testdata/callerlimits")
	require.NoError(t, err)
	s, err := Load(files)
	require.NoError(t, err)
	e, err := Compile(s)
	require.NoError(t, err)
	img, _ := roundTrip(t, e)
	const historian = "spiffe://grid.example/ns/scada/sa/historian"
	hist := CallerLimit{Rule: "scada/historian-reads", Per: PerWorkload, Key: historian, PerSecond: 10, Burst: 50}
	trial := CallerLimit{Rule: "scada/exports-trial", Per: PerWorkload, Key: historian, PerSecond: 1.0 / 3600, Burst: 1}
	cases := []struct {
		name      string
		req       Request
		limit     *CallerLimit
		dryRunLim *CallerLimit
	}{
		{"mTLS peer is the caller", Request{PeerID: historian, Method: "GET", Path: "/v1/points/p1"}, &hist, nil},
		{"JWT-SVID subject is the caller", Request{SPIFFEID: historian, PeerID: historian, Method: "GET", Path: "/v1/points/p1"}, &hist, nil},
		{"export: enforced and dry-run", Request{SPIFFEID: historian, Method: "GET", Path: "/v1/points/export/x"}, &hist, &trial},
		{"default deny flagged by a dry-run allow: no limit", Request{SPIFFEID: historian, Method: "POST", Path: "/v1/points/export/x"}, nil, nil},
		{"anonymous callers share the empty key", Request{Method: "GET", Path: "/v1/status"},
			&CallerLimit{Rule: "scada/public-status", Per: PerWorkload, PerSecond: 5, Burst: 5}, nil},
		{"a non-SPIFFE caller is anonymous", Request{SPIFFEID: "https://x", Method: "GET", Path: "/v1/status"},
			&CallerLimit{Rule: "scada/public-status", Per: PerWorkload, PerSecond: 5, Burst: 5}, nil},
		{"device key as the token spells it", Request{DeviceID: "MTR-1", DeviceClass: "meter", Method: "POST", Path: "/v1/readings"},
			&CallerLimit{Rule: "meters/push-readings", Per: PerDevice, Key: "MTR-1", PerSecond: 10, Burst: 10}, nil},
		{"denied: no limit", Request{SPIFFEID: historian, Method: "DELETE", Path: "/v1/points/p1"}, nil, nil},
	}
	for _, tc := range cases {
		for _, eng := range []*Engine{e, img} {
			var d Decision
			eng.Decide(&tc.req, &d)
			assert.Equal(t, tc.limit != nil, d.HasCallerLimit, tc.name)
			if tc.limit != nil {
				assert.Equal(t, *tc.limit, d.CallerLimit, tc.name)
			}
			assert.Equal(t, tc.dryRunLim != nil, d.HasDryRunCallerLimit, tc.name)
			if tc.dryRunLim != nil {
				assert.Equal(t, *tc.dryRunLim, d.DryRunCallerLimit, tc.name)
			}
			assert.Zero(t, testing.AllocsPerRun(50, func() { eng.Decide(&tc.req, &d) }), tc.name)
		}
	}
	for _, eng := range []*Engine{e, img} {
		for _, r := range RunTests(s, eng) {
			assert.True(t, r.Passed, "%s: %v", r.Test, r.Failures)
		}
	}
}

func TestCallerLimitWarnings(t *testing.T) {
	s, err := Load(map[string][]byte{"w.yaml": []byte(docHdr + `kind: WorkloadPolicy
metadata: {name: w}
spec:
  rules:
    - {name: a, effect: allow, paths: [/a], rateLimit: {per: device, requests: 1, period: 1s}}
    - {name: b, effect: allow, paths: [/b], rateLimit: {per: workload, requests: 1, period: 1s}}
`)})
	require.NoError(t, err)
	w := Warnings(s)
	require.Len(t, w, 1)
	assert.Equal(t, `w.yaml:6:56: warning: workload rule "w/a" limits per device: every request it allows without a device token (or whose token has no id) shares one bucket`, w[0].Error())
}
