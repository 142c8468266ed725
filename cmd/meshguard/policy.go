package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

func init() {
	policyCmd.AddCommand(newPolicyCheckCmd(), newPolicyEvalCmd(), newPolicyTestCmd())
}

func newPolicyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE|DIR...",
		Short: "Parse and check policy files; print file:line:col errors",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, eng, err := loadPolicies(cmd, args)
			if err != nil {
				return err
			}
			c := eng.Counts()
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d workload rules, %d device rules (%d device policies), %d version rules, %d revocations, %d trust domains, %d test files\n",
				c.WorkloadRules, c.DeviceRules, len(set.Devices), c.VersionRules, c.Revocations, c.TrustDomains, len(set.Tests))
			return nil
		},
	}
}

func newPolicyEvalCmd() *cobra.Command {
	var input, bundlePath, keysPath, scope string
	eval := &cobra.Command{
		Use:   "eval (--bundle B | FILE|DIR...) --input REQUEST.json",
		Short: "Evaluate one request against policies and print the decision as JSON",
		RunE: func(cmd *cobra.Command, args []string) error {
			if (bundlePath == "") == (len(args) == 0) {
				return &exitError{code: 2, err: errors.New("policy eval needs either --bundle or policy files/directories")}
			}
			if input == "" {
				return &exitError{code: 2, err: errors.New("--input is required")}
			}
			var eng *policies.Engine
			var err error
			if bundlePath != "" {
				eng, err = loadBundle(bundlePath, keysPath, scope)
			} else {
				_, eng, err = loadPolicies(cmd, args)
			}
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(input)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("reading input: %w", err)}
			}
			var in policies.Input
			dec := json.NewDecoder(bytesReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&in); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid request JSON: %w", input, err)}
			}
			var d policies.Decision
			eng.Decide(in.Request(), &d)
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(d.JSON())
		},
	}
	eval.Flags().StringVar(&input, "input", "", "request JSON file (spiffeID, jti, claims, device, peerVersion, method, path, headers)")
	eval.Flags().StringVar(&bundlePath, "bundle", "", "signed policy bundle to verify and evaluate instead of files, through its engine image as the guard does (needs --verify-keys)")
	eval.Flags().StringVar(&keysPath, "verify-keys", "", "public JWK Set that verifies --bundle (verify.jwk)")
	aliasFlag(eval.Flags(), "verify-keys", "keys")
	eval.Flags().StringVar(&scope, "scope", "", "scope the --bundle must be issued for")
	return eval
}

func newPolicyTestCmd() *cobra.Command {
	var verbose bool
	test := &cobra.Command{
		Use:   "test DIR...",
		Short: "Run PolicyTest cases (inputs and expected decisions) against the policies beside them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, eng, err := loadPolicies(cmd, args)
			if err != nil {
				return err
			}
			results := policies.RunTests(set, eng)
			if len(results) == 0 {
				return &exitError{code: 1, err: errors.New("no PolicyTest cases found")}
			}
			out := cmd.OutOrStdout()
			failed := 0
			for _, r := range results {
				if r.Passed {
					if verbose {
						fmt.Fprintf(out, "PASS %s\n", r.Test)
					}
					continue
				}
				failed++
				fmt.Fprintf(out, "FAIL %s (%s)\n", r.Test, r.Pos)
				for _, f := range r.Failures {
					fmt.Fprintf(out, "    %s\n", f)
				}
			}
			fmt.Fprintf(out, "%d passed, %d failed, %d total\n", len(results)-failed, failed, len(results))
			if failed > 0 {
				return &exitError{code: 1, err: errors.New("")}
			}
			return nil
		},
	}
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "print passing cases too")
	return test
}

// loadPolicies reads, checks and compiles policy files; bad policies exit 1
// with one file:line:col line per problem.
func loadPolicies(cmd *cobra.Command, paths []string) (*policies.Set, *policies.Engine, error) {
	files, err := policies.ReadPaths(paths...)
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	set, err := policies.Load(files)
	if err != nil {
		var list policies.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
			}
			return nil, nil, &exitError{code: 1, err: fmt.Errorf("%d problem(s) found", len(list))}
		}
		return nil, nil, &exitError{code: 1, err: err}
	}
	eng, err := policies.Compile(set)
	if err != nil {
		return nil, nil, &exitError{code: 1, err: err}
	}
	return set, eng, nil
}

// loadBundle verifies a signed bundle and loads its engine image: the
// policy the guard filter enforces, not a fresh compile of the sources.
func loadBundle(path, keysPath, scope string) (*policies.Engine, error) {
	if keysPath == "" {
		return nil, &exitError{code: 2, err: errors.New("--bundle needs --verify-keys (the public JWK Set that verifies it)")}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("reading bundle: %w", err)}
	}
	kb, err := os.ReadFile(keysPath)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("reading keys: %w", err)}
	}
	keys, err := bundle.ParseKeySet(kb)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("%s: %w", keysPath, err)}
	}
	p, err := bundle.Load(data, bundle.VerifyOptions{Keys: keys, Scope: scope})
	if err != nil {
		return nil, &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
	}
	return p.Engine, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
