package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/host"
)

func init() { rootCmd.AddCommand(newCheckModuleCmd()) }

// newCheckModuleCmd builds the check-module verb (fresh flags per call, so
// tests can run it repeatedly).
func newCheckModuleCmd() *cobra.Command {
	var profile string
	var workers int
	cmd := &cobra.Command{
		Use:   "check-module [--envoy envoy-1.33|envoy-latest] FILE.wasm",
		Short: "Load a module the way an Envoy release would and report whether it would refuse it",
		Long: `check-module loads FILE.wasm in meshguard's Envoy-like host under the given Envoy
profile: load checks (magic, ABI marker, imports the profile provides), start-up
(_initialize, main) with Envoy's start-up hostcall restrictions, root context,
proxy_on_vm_start and proxy_on_configure with an empty configuration. It prints
the ABI version, the imports the profile lacks, the exports, the size and the
start-up result, and exits non-zero exactly when that Envoy would refuse the module.

Profiles (the WASI functions each Envoy registers):
  envoy-1.33    the set since December 2024: Envoy 1.33.0 (January 2025) and every
                later release, so the Envoy of Istio 1.25+ and Kuma 2.10+
  envoy-latest  all of WASI preview1, as Envoy has offered since April 2026
A module that passes envoy-1.33 loads on every Envoy from 1.33 on. The modules
meshguard ships (guard.wasm, hello.wasm) pass both profiles; make test checks it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := host.ParseProfile(profile)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			bin, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			rep := host.CheckModule(cmd.Context(), bin, host.CheckOptions{Profile: p, Workers: workers})
			printCheckReport(cmd.OutOrStdout(), args[0], rep)
			if !rep.Loadable() {
				return &exitError{code: 1, err: errors.New(rep.Failure())}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "envoy", string(host.ProfileEnvoyLatest), "Envoy profile: envoy-1.33 or envoy-latest")
	cmd.Flags().IntVar(&workers, "workers", 1, "worker VMs to start")
	return cmd
}

func printCheckReport(w io.Writer, file string, r *host.CheckReport) {
	fmt.Fprintf(w, "module:       %s (%d bytes)\n", file, r.Size)
	fmt.Fprintf(w, "envoy:        %s\n", r.Profile)
	abi := r.ABIVersion
	if abi == "" {
		abi = "none"
	}
	fmt.Fprintf(w, "abi:          %s\n", strings.ReplaceAll(abi, "_", "."))
	fmt.Fprintf(w, "allocator:    %s\n", orNone(r.Allocator))
	fmt.Fprintf(w, "imports:      %d\n", len(r.Imports))
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "missing:      %s\n", strings.Join(r.Missing, ", "))
	} else {
		fmt.Fprintf(w, "missing:      none\n")
	}
	fmt.Fprintf(w, "exports:      %s\n", strings.Join(r.Exports, " "))
	if r.StartError != "" {
		fmt.Fprintf(w, "start-up:     FAILED: %s\n", r.StartError)
	} else if r.LoadError == "" {
		fmt.Fprintf(w, "start-up:     ok (%d worker VM(s), %d memory pages each, %s)\n", r.Workers, r.MemoryPages, r.StartDuration.Round(1e5))
	}
	if r.LoadError != "" {
		fmt.Fprintf(w, "load:         REFUSED: %s\n", r.LoadError)
	}
	verdict := "Envoy would load this module"
	if !r.Loadable() {
		verdict = "Envoy would refuse this module"
	}
	fmt.Fprintln(w, verdict)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
