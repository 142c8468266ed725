package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
)

// TestCheckModule runs the verb on real built modules: a standard-Go SDK
// filter (whose Go runtime WASI imports are all in Envoy's Dec 2024 set), a
// module importing a WASI function Envoy only has since Apr 2026, a module
// calling a forbidden hostcall during start-up, and files that are not
// modules at all.
func TestCheckModule(t *testing.T) {
	hello := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello")
	newWASI := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/host/internal/testfilters/newwasi")
	initCall := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/host/internal/testfilters/initcall")
	dir := t.TempDir()
	notWasm := filepath.Join(dir, "x.wasm")
	require.NoError(t, os.WriteFile(notWasm, []byte("#!/bin/sh\n"), 0o644))

	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"go filter on envoy-1.33", []string{"--envoy", "envoy-1.33", hello}, exitOK,
			[]string{"envoy:        envoy-1.33", "abi:          0.2.1", "missing:      none", "start-up:     ok", "proxy_on_request_headers", "Envoy would load this module"}},
		{"go filter on envoy-latest", []string{hello}, exitOK,
			[]string{"envoy:        envoy-latest", "Envoy would load this module"}},
		{"newer WASI on envoy-1.33", []string{"--envoy", "envoy-1.33", newWASI}, exitFailed,
			[]string{"missing:      wasi_snapshot_preview1.fd_readdir", "REFUSED: Failed to load Wasm module due to a missing import: wasi_snapshot_preview1.fd_readdir", "Envoy would refuse this module"}},
		{"newer WASI on envoy-latest", []string{"--envoy", "envoy-latest", newWASI}, exitOK,
			[]string{"missing:      none", "Envoy would load this module"}},
		{"forbidden start-up hostcall", []string{initCall}, exitFailed,
			[]string{"start-up:     FAILED:", "not allowed during VM start-up", "Envoy would refuse this module"}},
		{"not a module", []string{notWasm}, exitFailed, []string{"abi:          none", "Envoy would refuse this module"}},
		{"unknown profile", []string{"--envoy", "envoy-1.20", hello}, exitUsage, nil},
		{"missing file", []string{filepath.Join(dir, "nope.wasm")}, exitUsage, nil},
		{"pinned file, wrong sha256", []string{"--sha256", "sha256:00000000000000000000000000000000000000000000000000000000000000ff", hello}, exitFailed, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"check-module"}, tc.args...)...)
			assert.Equal(t, tc.code, r.code, "%s", r.stderr)
			for _, w := range tc.want {
				assert.Contains(t, r.stdout, w)
			}
		})
	}

	// The module from stdin, the report as JSON.
	wasm, err := os.ReadFile(newWASI)
	require.NoError(t, err)
	r := runCLIStdin(t, string(wasm), "check-module", "--envoy", "envoy-1.33", "-o", "json", "-")
	assert.Equal(t, exitFailed, r.code)
	var rep struct {
		Module   string   `json:"module"`
		Envoy    string   `json:"envoy"`
		ABI      string   `json:"abi"`
		Missing  []string `json:"missing"`
		Loadable bool     `json:"loadable"`
		Load     string   `json:"loadError"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, "-", rep.Module)
	assert.Equal(t, "envoy-1.33", rep.Envoy)
	assert.Equal(t, "0.2.1", rep.ABI)
	assert.Equal(t, []string{"wasi_snapshot_preview1.fd_readdir"}, rep.Missing)
	assert.False(t, rep.Loadable)
	assert.Contains(t, rep.Load, "missing import")
}
