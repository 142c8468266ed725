package host

import (
	"fmt"
	"slices"
)

// Profile names the Envoy release whose Proxy-Wasm host is emulated. Envoy's
// WASI support grew over time and a module importing a function the running
// Envoy lacks fails to load, so the profile matters.
type Profile string

// Supported profiles.
const (
	// ProfileEnvoy133 is the Envoy 1.33 era host (proxy-wasm-cpp-host, Dec 2024):
	// fd_fdstat_set_flags, sched_yield and poll_oneoff were added; poll_oneoff
	// answers ENOSYS. Envoy 1.33.0 (January 2025) and every later release offer
	// at least this set, so a module it accepts loads in the Envoy of Istio
	// 1.25+ and Kuma 2.10+.
	ProfileEnvoy133 Profile = "envoy-1.33"
	// ProfileEnvoyLatest is the host since Apr 2026: the rest of WASI preview1
	// exists as stubs and poll_oneoff succeeds with zero events.
	ProfileEnvoyLatest Profile = "envoy-latest"
)

// Profiles lists the supported profiles.
func Profiles() []Profile { return []Profile{ProfileEnvoy133, ProfileEnvoyLatest} }

// ParseProfile validates a profile name.
func ParseProfile(s string) (Profile, error) {
	p := Profile(s)
	if slices.Contains(Profiles(), p) {
		return p, nil
	}
	return "", fmt.Errorf("unknown Envoy profile %q (want one of %v)", s, Profiles())
}

// wasiBefore2024 is what Envoy's host offered before December 2024.
var wasiBefore2024 = []string{
	"fd_write", "fd_read", "fd_seek", "fd_close", "fd_fdstat_get", "environ_get", "environ_sizes_get",
	"args_get", "args_sizes_get", "clock_time_get", "random_get", "proc_exit", "path_open",
	"fd_prestat_get", "fd_prestat_dir_name",
}

// wasiDec2024 was added in December 2024.
var wasiDec2024 = []string{"fd_fdstat_set_flags", "sched_yield", "poll_oneoff"}

// wasiApr2026 completes preview1 (April 2026).
var wasiApr2026 = []string{
	"clock_res_get", "fd_advise", "fd_allocate", "fd_datasync", "fd_fdstat_set_rights", "fd_filestat_get",
	"fd_filestat_set_size", "fd_filestat_set_times", "fd_pread", "fd_pwrite", "fd_readdir", "fd_renumber",
	"fd_sync", "fd_tell", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
	"path_link", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
	"path_unlink_file", "proc_raise", "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
}

// WASIFunctions are the WASI functions the profile registers (under both
// wasi_snapshot_preview1 and wasi_unstable).
func (p Profile) WASIFunctions() []string {
	out := append([]string{}, wasiBefore2024...)
	out = append(out, wasiDec2024...)
	if p == ProfileEnvoyLatest {
		out = append(out, wasiApr2026...)
	}
	slices.Sort(out)
	return out
}

// pollSucceeds reports whether poll_oneoff returns success (Apr 2026+).
func (p Profile) pollSucceeds() bool { return p == ProfileEnvoyLatest }

// startupAllowed reports whether a hostcall may run while the VM starts
// (_initialize, main, _start); Envoy traps on anything else.
func (p Profile) startupAllowed(name string) bool {
	switch name {
	case "proxy_log", "fd_write", "args_get", "args_sizes_get", "environ_get", "environ_sizes_get",
		"fd_prestat_get", "fd_prestat_dir_name", "clock_time_get", "random_get",
		"fd_fdstat_get", "fd_fdstat_set_flags":
		return true
	case "poll_oneoff":
		return p == ProfileEnvoyLatest
	}
	return false
}
