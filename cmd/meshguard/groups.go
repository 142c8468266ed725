package main

import "github.com/spf13/cobra"

// Parent commands shared by several verb files; each file adds its own
// subcommands to these in its init function.
var (
	policyCmd = &cobra.Command{Use: "policy", Short: "Check, evaluate, test, bundle and verify policies"}
	keysCmd   = &cobra.Command{Use: "keys", Short: "Manage bundle signing keys"}
	pushCmd   = &cobra.Command{Use: "push", Short: "Publish filter modules and policy bundles"}
	pullCmd   = &cobra.Command{Use: "pull", Short: "Fetch filter modules"}
	renderCmd = &cobra.Command{Use: "render", Short: "Render Istio, Kuma and Envoy resources that load meshguard"}
	auditCmd  = &cobra.Command{Use: "audit", Short: "Inspect and verify the decision audit trail"}
)

func init() {
	rootCmd.AddCommand(policyCmd, keysCmd, pushCmd, pullCmd, renderCmd, auditCmd)
}
