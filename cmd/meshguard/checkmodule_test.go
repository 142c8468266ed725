package main

import (
	"errors"
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
		code int // 0 = success
		want []string
	}{
		{"go filter on envoy-1.33", []string{"--envoy", "envoy-1.33", hello}, 0,
			[]string{"envoy:        envoy-1.33", "abi:          0.2.1", "missing:      none", "start-up:     ok", "proxy_on_request_headers", "Envoy would load this module"}},
		{"go filter on envoy-latest", []string{hello}, 0,
			[]string{"envoy:        envoy-latest", "Envoy would load this module"}},
		{"newer WASI on envoy-1.33", []string{"--envoy", "envoy-1.33", newWASI}, 1,
			[]string{"missing:      wasi_snapshot_preview1.fd_readdir", "REFUSED: Failed to load Wasm module due to a missing import: wasi_snapshot_preview1.fd_readdir", "Envoy would refuse this module"}},
		{"newer WASI on envoy-latest", []string{"--envoy", "envoy-latest", newWASI}, 0,
			[]string{"missing:      none", "Envoy would load this module"}},
		{"forbidden start-up hostcall", []string{initCall}, 1,
			[]string{"start-up:     FAILED:", "not allowed during VM start-up", "Envoy would refuse this module"}},
		{"not a module", []string{notWasm}, 1, []string{"abi:          none", "Envoy would refuse this module"}},
		{"unknown profile", []string{"--envoy", "envoy-1.20", hello}, 2, nil},
		{"missing file", []string{filepath.Join(dir, "nope.wasm")}, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runFresh(t, newCheckModuleCmd(), tc.args...)
			if tc.code == 0 {
				require.NoError(t, err, out)
			} else {
				var ee *exitError
				require.True(t, errors.As(err, &ee), "%v", err)
				assert.Equal(t, tc.code, ee.code, "%v", err)
			}
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
		})
	}
}
