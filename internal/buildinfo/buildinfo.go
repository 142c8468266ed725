// Package buildinfo is what a meshguard binary knows about its own build:
// the version, commit and build date the Makefile stamps with
//
//	-ldflags "-X github.com/meshguard/meshguard/internal/buildinfo.version=... \
//	          -X github.com/meshguard/meshguard/internal/buildinfo.commit=... \
//	          -X github.com/meshguard/meshguard/internal/buildinfo.date=..."
//
// and the Go version it was built with. An unstamped build (go build, go
// run, go install) falls back to the VCS details the Go toolchain records,
// so even a plain build names its commit.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Stamped by the Makefile; empty when built without it.
var (
	version string
	commit  string
	date    string
)

// Info describes one build.
type Info struct {
	// Version is the release (git describe), or "dev" for an unstamped build.
	Version string `json:"version"`
	// Commit is the full git commit hash ("unknown" when nothing recorded it),
	// with a "-dirty" suffix for a build from a modified tree.
	Commit string `json:"commit"`
	// Date is the build's commit time or build time, RFC 3339 ("unknown"
	// when nothing recorded it).
	Date string `json:"date"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"goVersion"`
}

// Get returns the stamped build details, completed from the toolchain's
// record of the build.
func Get() Info {
	return resolve(version, commit, date, debug.ReadBuildInfo)
}

// resolve fills what the linker did not stamp from the toolchain's VCS
// settings (vcs.revision, vcs.time, vcs.modified).
func resolve(v, c, d string, read func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: v, Commit: c, Date: d, GoVersion: runtime.Version()}
	if bi, ok := read(); ok {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version // go install module@version
		}
		var rev, at string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if in.Commit == "" && rev != "" {
			in.Commit = rev
			if dirty {
				in.Commit += "-dirty"
			}
		}
		if in.Date == "" {
			in.Date = at
		}
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
	}
	if in.Version == "" {
		in.Version = "dev"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	if in.Date == "" {
		in.Date = "unknown"
	}
	return in
}

// String is the one-line form: "v1.4.0 (commit 1a2b3c4d5e6f, built
// 2026-12-01T10:00:00Z, go1.26.0)".
func (in Info) String() string {
	c, dirty := strings.CutSuffix(in.Commit, "-dirty")
	if len(c) > 12 {
		c = c[:12]
	}
	if dirty {
		c += "-dirty"
	}
	return in.Version + " (commit " + c + ", built " + in.Date + ", " + in.GoVersion + ")"
}
