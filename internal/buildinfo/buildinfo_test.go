package buildinfo

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, at, modified string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: at}, {Key: "vcs.modified", Value: modified}}}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name          string
		v, c, d       string
		read          func() (*debug.BuildInfo, bool)
		want          Info
		wantGoVersion bool
	}{
		{"stamped by the Makefile wins", "v1.4.0", "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "2026-12-01T10:00:00Z",
			vcs("ffff", "2020-01-01T00:00:00Z", "true"),
			Info{Version: "v1.4.0", Commit: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"}, false},
		{"plain go build: the toolchain's VCS record", "", "", "", vcs("abcdef", "2026-11-30T08:00:00Z", "false"),
			Info{Version: "dev", Commit: "abcdef", Date: "2026-11-30T08:00:00Z", GoVersion: "go1.26.0"}, false},
		{"modified tree", "", "", "", vcs("abcdef", "2026-11-30T08:00:00Z", "true"),
			Info{Version: "dev", Commit: "abcdef-dirty", Date: "2026-11-30T08:00:00Z", GoVersion: "go1.26.0"}, false},
		{"nothing recorded", "", "", "", none, Info{Version: "dev", Commit: "unknown", Date: "unknown"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := resolve(tc.v, tc.c, tc.d, tc.read)
			if tc.wantGoVersion {
				assert.NotEmpty(t, got.GoVersion)
				got.GoVersion = ""
			}
			assert.Equal(t, tc.want, got)
		})
	}
	assert.Equal(t, "v1.4.0 (commit 1a2b3c4d5e6f, built 2026-12-01T10:00:00Z, go1.26.0)",
		Info{Version: "v1.4.0", Commit: "1a2b3c4d5e6f7a8b9c0d", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.0"}.String())
}
