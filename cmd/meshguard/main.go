// Command meshguard is the meshguard CLI: policy tooling, the distributor, the dev
// proxy, module checks and the Istio/Kuma/Envoy renderers. Each verb group lives
// in its own file and registers itself on the root command.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

var rootCmd = &cobra.Command{
	Use:           "meshguard",
	Short:         "Policy plane for Envoy-based meshes, enforced by a Proxy-Wasm filter",
	SilenceUsage:  true,
	SilenceErrors: true,
	Version:       version,
}

// exitError carries a process exit code through cobra without printing usage.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if err := rootCmd.Execute(); err != nil {
		code := 1
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "meshguard:", err)
		}
		os.Exit(code)
	}
}
