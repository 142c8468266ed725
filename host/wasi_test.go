package host_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

// TestWASIErrnosPerProfile calls WASI directly from a raw ABI 0.2.0 module
// under each Envoy profile and compares every errno with Envoy's: fd_read
// ENOSYS, other fds BADF, clocks other than realtime/monotonic NOTSUP,
// random_get > 64 KiB INVAL, path_open NOENT, no args, and poll_oneoff
// ENOSYS in envoy-1.33 but success with nevents=0 in envoy-latest.
func TestWASIErrnosPerProfile(t *testing.T) {
	mod := wasmbuild.ForTest(t, testfilters+"wasiprobe")
	common := map[string]string{
		"fd_read/stdin":                     "52",
		"fd_write/fd5":                      "8",
		"fd_fdstat_get/1":                   "0",
		"fd_fdstat_get/2":                   "0",
		"fd_fdstat_get/0":                   "8",
		"fd_fdstat_get/3":                   "8",
		"clock_time_get/realtime":           "0",
		"clock_time_get/realtime_nonzero":   "1",
		"clock_time_get/monotonic":          "0",
		"clock_time_get/process_cputime":    "58",
		"clock_time_get/thread_cputime":     "58",
		"random_get/16":                     "0",
		"random_get/64KiB":                  "0",
		"random_get/64KiB+1":                "28",
		"path_open":                         "44",
		"args_sizes_get":                    "0",
		"args_sizes_get/argc":               "0",
		"args_sizes_get/size":               "0",
		"wasi_unstable/args_sizes_get":      "0",
		"wasi_unstable/args_sizes_get/argc": "0",
	}
	cases := []struct {
		profile          host.Profile
		poll, pollEvents string
	}{
		{host.ProfileEnvoy133, "52", "99"},
		{host.ProfileEnvoyLatest, "0", "0"},
	}
	for _, tc := range cases {
		t.Run(string(tc.profile), func(t *testing.T) {
			h := hosttest.New(t, mod, hosttest.Profile(tc.profile))
			s := h.NewStream(nil)
			s.Request("GET", "/")
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(s.ExpectLocalReply(200).Body)), "\n") {
				k, v, ok := strings.Cut(line, "=")
				require.True(t, ok, line)
				got[k] = v
			}
			want := map[string]string{"poll_oneoff": tc.poll, "poll_oneoff/nevents": tc.pollEvents}
			for k, v := range common {
				want[k] = v
			}
			assert.Equal(t, want, got)
		})
	}
}
