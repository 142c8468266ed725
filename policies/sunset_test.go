//go:build !wasip1

package policies

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadSunsets(t testing.TB) (*Set, *Engine) {
	t.Helper()
	files, err := ReadPaths("testdata/sunsets")
	require.NoError(t, err)
	s, err := Load(files)
	require.NoError(t, err)
	e, err := Compile(s)
	require.NoError(t, err)
	return s, e
}

// TestSunsetPolicyTests runs the sunset cases (each with its own now)
// through the engine and through its image.
func TestSunsetPolicyTests(t *testing.T) {
	s, e := loadSunsets(t)
	img, _ := roundTrip(t, e)
	for _, eng := range []*Engine{e, img} {
		results := RunTests(s, eng)
		require.Len(t, results, 10)
		for _, r := range results {
			assert.True(t, r.Passed, "%s: %v (decision %+v)", r.Test, r.Failures, r.Decision)
		}
	}
}

func TestSunsetDecisions(t *testing.T) {
	_, e := loadSunsets(t)
	img, _ := roundTrip(t, e)
	const historian = "spiffe://grid.example/ns/scada/sa/historian"
	at := func(s string) int64 {
		t.Helper()
		tm, err := ParseInstant(s)
		require.NoError(t, err)
		return tm.UnixNano()
	}
	sunset14 := `software version approved by ">=1.4.0, <1.5.0" until 2027-01-31T00:00:00Z: sunset passed`
	cases := []struct {
		version string
		now     int64
		allow   bool
		reason  string
	}{
		{"1.4.0", at("2026-12-01T00:00:00Z"), true, ReasonAllowRule},
		{"1.4.9", at("2027-01-30T23:59:59.999999999Z"), true, ReasonAllowRule},
		{"1.4.9", at("2027-01-31T00:00:00Z"), false, sunset14},
		{"1.4.9", at("2028-01-01T00:00:00Z"), false, sunset14},
		{"1.4.9+build.7", at("2027-01-31T00:00:00Z"), false, sunset14},
		// Approved by a permanent entry as well: no sunset applies.
		{"1.5.0", at("2099-01-01T00:00:00Z"), true, ReasonAllowRule},
		// A pre-release outside every entry's pre-release admission.
		{"1.4.1-rc.1", at("2026-12-01T00:00:00Z"), false, ReasonVersionRange},
		{"2.0.0-rc.1", at("2027-01-08T10:59:59.999999999Z"), true, ReasonAllowRule},
		{"2.0.0-rc.1", at("2027-01-08T11:00:00Z"), false, `software version approved by ">=2.0.0-rc.1, <2.0.0" until 2027-01-08T11:00:00Z: sunset passed`},
		{"2.0.0", at("2026-12-01T00:00:00Z"), false, ReasonVersionRange},
		{"1.4", at("2026-12-01T00:00:00Z"), false, ReasonVersionMissing},
	}
	for _, tc := range cases {
		r := &Request{SPIFFEID: historian, Method: "GET", Path: "/v1/points/p1", Headers: Map{"x-sw-version": tc.version}, Now: tc.now}
		for _, eng := range []*Engine{e, img} {
			var d Decision
			eng.Decide(r, &d)
			assert.Equal(t, tc.allow, d.Allow, "%s at %s", tc.version, time.Unix(0, tc.now).UTC())
			assert.Equal(t, tc.reason, d.Reason, "%s at %s", tc.version, time.Unix(0, tc.now).UTC())
			assert.Zero(t, testing.AllocsPerRun(50, func() { eng.Decide(r, &d) }), "a sunset decision allocates nothing")
		}
	}
	// Without Now the engine reads the clock: 1.4 is approved today only
	// while the window is open.
	var d Decision
	e.Decide(&Request{SPIFFEID: historian, Method: "GET", Path: "/v1/points/p1", Headers: Map{"x-sw-version": "1.4.2"}}, &d)
	assert.Equal(t, time.Now().Before(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)), d.Allow, d.Reason)
}

func TestNextSunset(t *testing.T) {
	_, e := loadSunsets(t)
	img, _ := roundTrip(t, e)
	for _, eng := range []*Engine{e, img} {
		next := func(s string) string {
			now, err := ParseInstant(s)
			require.NoError(t, err)
			n, ok := eng.NextSunset(now)
			if !ok {
				return "none"
			}
			return FormatInstant(n)
		}
		assert.Equal(t, "2027-01-08T11:00:00Z", next("2026-12-01T00:00:00Z"))
		assert.Equal(t, "2027-01-31T00:00:00Z", next("2027-01-08T11:00:00Z"), "a sunset at now is no longer ahead")
		// The dry-run window (2027-02-15) never denies: it is not counted.
		assert.Equal(t, "none", next("2027-01-31T00:00:00Z"))
	}
}

func TestParseInstant(t *testing.T) {
	for s, want := range map[string]string{
		"2027-01-31T00:00:00Z":           "2027-01-31T00:00:00Z",
		"2027-01-31T01:30:00+01:30":      "2027-01-31T00:00:00Z",
		"2027-01-30T19:00:00-05:00":      "2027-01-31T00:00:00Z",
		"2027-01-31T00:00:00.5Z":         "2027-01-31T00:00:00.5Z",
		"2027-01-31T00:00:00.000000001Z": "2027-01-31T00:00:00.000000001Z",
		"2027-01-31T00:00:00.000Z":       "2027-01-31T00:00:00Z",
		"2027-01-31T00:00:00+00:00":      "2027-01-31T00:00:00Z",
		"1970-01-01T00:00:00.000000001Z": "1970-01-01T00:00:00.000000001Z",
	} {
		tm, err := ParseInstant(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, FormatInstant(tm), s)
	}
	for _, s := range []string{"", "2027-01-31", "2027-01-31T00:00:00", "2027-01-31 00:00:00Z", "2027-01-31t00:00:00Z",
		"2027-01-31T00:00:00z", "2027-01-31T00:00:00-00:00", "2027-01-31T00:00:00+0100", "2027-01-31T00:00Z",
		"2027-01-31T24:00:00Z", "2027-01-31T00:00:60Z", "2027-13-01T00:00:00Z", "2027-02-29T00:00:00Z",
		"2027-01-31T00:00:00.Z", "2027-01-31T00:00:00.1234567890Z", "1970-01-01T00:00:00Z", "2262-01-01T00:00:00Z",
		"+2027-01-31T00:00:00Z", "2027-01-31T00:00:00Z ", "2027-01-31T00:00:00+01:60", "2027-01-31T00:00:00+1:00",
		"２027-01-31T00:00:00Z"} {
		_, err := ParseInstant(s)
		assert.Error(t, err, "%q", s)
	}
}

func TestInputNow(t *testing.T) {
	in, err := ParseInput([]byte(`{"method":"GET","path":"/","now":"2027-01-31T00:00:00Z"}`))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC).UnixNano(), in.Request().Now)
	for _, bad := range []string{`{"method":"GET","path":"/","now":"2027-01-31"}`, `{"method":"GET","path":"/","now":1}`,
		`{"method":"GET","path":"/","now":"2027-01-31T00:00:00Z","now":"2027-01-31T00:00:00Z"}`} {
		_, err := ParseInput([]byte(bad))
		assert.Error(t, err, bad)
	}
	// An Input built in Go with an invalid now is refused, never decided
	// at some other time.
	_, e := loadSunsets(t)
	var d Decision
	DecideInput(e, &Input{Method: "GET", Path: "/", Now: "tomorrow"}, PathOptions{}, &d)
	assert.False(t, d.Allow)
	assert.Contains(t, d.Reason, `invalid now "tomorrow"`)
}
