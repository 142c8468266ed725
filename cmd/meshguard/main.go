// Command meshguard is the meshguard CLI: policy tooling, the distributor, the dev
// proxy, module checks and the Istio/Kuma/Envoy renderers. newRootCmd builds the
// whole command tree; each verb file has the constructor of its verbs, which
// translate flags and call one library function.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshguard/meshguard/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line on a fresh command tree and returns the
// process exit code (the table in exit.go).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	code := exitCode(err)
	if err != nil && err.Error() != "" {
		fmt.Fprintln(stderr, "meshguard:", err)
		if code == exitUsage && cmd != nil {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	return code
}

// newRootCmd builds the command tree: every verb, then the conventions they
// share (conventions).
func newRootCmd() *cobra.Command {
	root := newGroup("meshguard", "Policy plane for Envoy-based meshes, enforced by a Proxy-Wasm filter",
		newPolicyCmd(),
		newKeysCmd(),
		newPushCmd(),
		newPullCmd(),
		newRenderCmd(),
		newAuditCmd(),
		newStatusCmd(),
		newRegistryCmd(),
		newServeCmd(),
		newRunCmd(),
		newCheckModuleCmd(),
		newVersionCmd(),
	)
	root.Long = `meshguard is a policy plane for Envoy-based meshes (Istio, Kuma): a Proxy-Wasm
filter enforces workload, version and device policy from signed bundles that a
distributor serves, and keeps a hash-chained audit trail of its decisions.

Conventions (every verb): -o/--output json|yaml|table|csv chooses the format of
what a verb prints (the formats each verb takes are in its help); files go to
--output-file, where - is stdout; an input file named - is stdin.

` + exitCodeHelp()
	root.Version = buildinfo.Get().String()
	root.SetVersionTemplate("meshguard {{.Version}}\n")
	root.SilenceUsage, root.SilenceErrors = true, true
	conventions(root)
	return root
}

// newGroup is a verb group (policy, push, render, ...): run bare it prints
// its help, and an unknown sub-verb is a usage error, never a silent help
// page with exit 0.
func newGroup(use, short string, verbs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs, // checked below, so cobra's Find does not judge them
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usage(errors.New(msg))
		},
	}
	g.SuggestionsMinimumDistance = 2
	g.AddCommand(verbs...)
	return g
}

// conventions applies what every verb shares: flag and argument errors and
// missing required flags are usage errors, and every flag with a fixed set
// of values (enumflag) completes them in the shell.
func conventions(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := cmd.ValidateRequiredFlags(); err != nil {
			return usage(err)
		}
		return usage(cmd.ValidateFlagGroups())
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error { return usage(args(cmd, a)) }
		}
		registerEnumCompletions(c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// enumValue is a flag value with a fixed set of words (enumflag.Value).
type enumValue interface{ Values() []string }

func registerEnumCompletions(c *cobra.Command) {
	register := func(f *pflag.Flag) {
		ev, ok := f.Value.(enumValue)
		if !ok {
			return
		}
		words := ev.Values()
		_ = c.RegisterFlagCompletionFunc(f.Name, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return words, cobra.ShellCompDirectiveNoFileComp
		})
	}
	c.LocalNonPersistentFlags().VisitAll(register)
	c.PersistentFlags().VisitAll(register)
}
