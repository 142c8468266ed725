package distribution

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

func channel(store shared.Store, owner uint64) *Channel {
	return New(store, &config.Distributor{Cluster: "d", Authority: "dist", Channel: "grid", BundlePath: "/v1/bundles/",
		PollInterval: config.Duration{Duration: 5 * time.Second}, Token: "t0k"}, owner)
}

func TestAnswer(t *testing.T) {
	c := channel(shared.NewMemory(), 1)
	for _, tc := range []struct {
		status string
		size   int
		want   string // "" ok
	}{
		{"200", 10, ""},
		{"304", 0, "not modified"},
		{"200", 0, "body of 0 bytes"},
		{"200", MaxBundleBytes + 1, "refused"},
		{"404", 10, "answered 404"},
		{"", 0, "answered "},
	} {
		err := c.Answer(tc.status, tc.size)
		if tc.want == "" {
			assert.NoError(t, err)
		} else {
			assert.ErrorContains(t, err, tc.want, tc.status)
		}
	}
}

// TestHandOver: one poller per proxy, on schedule, never two polls at
// once; what it installs reaches every other worker once.
func TestHandOver(t *testing.T) {
	store := shared.NewMemory()
	a, b := channel(store, 1), channel(store, 2)
	t0 := time.Unix(1000, 0)
	due, err := a.Due(t0)
	require.NoError(t, err)
	assert.True(t, due)
	due, _ = b.Due(t0)
	assert.False(t, due, "a holds the lease")
	a.Polling(true)
	due, _ = a.Due(t0.Add(time.Minute))
	assert.False(t, due, "a poll in flight")
	a.Polling(false)
	due, _ = a.Due(t0.Add(time.Minute + time.Second))
	assert.True(t, due)
	due, _ = a.Due(t0.Add(time.Minute + 2*time.Second))
	assert.False(t, due, "not before the poll interval")

	assert.Zero(t, b.Announced())
	hdrs := a.Request(false)
	assert.Equal(t, [][2]string{{":method", "GET"}, {":path", "/v1/bundles/grid"}, {":authority", "dist"},
		{"accept", "application/vnd.meshguard.bundle.v1+tar+gzip"}, {"authorization", "Bearer t0k"}}, hdrs)

	require.NoError(t, a.Installed(7, []byte("bundle-7"), `"e7"`))
	assert.Equal(t, uint64(7), b.Announced())
	data, ok := b.Shared(6)
	require.True(t, ok)
	assert.Equal(t, "bundle-7", string(data))
	_, ok = b.Shared(6)
	assert.False(t, ok, "an entry is picked up once")
	_, ok = a.Shared(6)
	assert.False(t, ok, "the fetcher does not pick up its own")
	c := channel(store, 3)
	_, ok = c.Shared(7)
	assert.False(t, ok, "not above what the worker has")
	assert.Contains(t, b.Request(true), [2]string{"if-none-match", `"e7"`}, "the shared ETag, once a bundle is installed")
	assert.NotContains(t, channel(store, 4).Request(false), [2]string{"if-none-match", `"e7"`})
}
