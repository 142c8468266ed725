// Command demo runs the grid scenario (make demo): it starts the distributor,
// the example services and the dev proxy with guard.wasm on loopback, plays
// the scripted callers, changes the policy at runtime, prints the decision
// table, verifies the audit chain, shows `meshguard status`, stops
// everything and exits 0 only when every decision is the expected one.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/meshguard/meshguard/examples/grid/scenario"
)

func main() {
	root, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := scenario.Options{
		Root:      root,
		Bin:       filepath.Join(root, "build", "meshguard"),
		GuardWasm: filepath.Join(root, "build", "filters", "guard.wasm"),
		Out:       os.Stdout,
	}
	for _, p := range []string{opts.Bin, opts.GuardWasm} {
		if _, err := os.Stat(p); err != nil {
			fail(fmt.Errorf("%s is missing: run `make demo` (it builds everything first): %w", p, err))
		}
	}
	fmt.Println("meshguard grid demo: trust domain grid.example, everything on 127.0.0.1")
	rep, err := scenario.Run(ctx, opts)
	if rep != nil {
		fmt.Println()
		rep.Table(os.Stdout)
		fmt.Printf("\naudit trail: %d decision records; chain %s\n", rep.Records, map[bool]string{true: "verified", false: "BROKEN"}[rep.AuditOK])
		fmt.Printf("\n$ meshguard status --server DISTRIBUTOR\n%s", rep.Status)
	}
	if err != nil {
		fail(err)
	}
	if err := rep.Check(); err != nil {
		fail(err)
	}
	fmt.Println("\nall decisions as expected; every process stopped.")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
