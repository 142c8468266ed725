package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

func init() {
	policyCmd.AddCommand(newPolicyCheckCmd(), newPolicyEvalCmd(), newPolicyTestCmd())
}

func newPolicyCheckCmd() *cobra.Command {
	var failWarnings bool
	check := &cobra.Command{
		Use:   "check FILE|DIR...",
		Short: "Parse and check policy files; print every file:line:col error and warning",
		Long: `Parse and check policy files and print every problem at once, as
file:line:col: message (errors, then exit 1) and file:line:col: warning: message.
Long runs show a progress line on stderr (on a terminal after a second,
elsewhere every few seconds once slow).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prog := newProgressLine(cmd.ErrOrStderr())
			set, eng, err := loadPoliciesProgress(cmd, args, prog.update)
			prog.finish()
			if err != nil {
				return err
			}
			warnings := policies.Warnings(set)
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), w.Error())
			}
			c := eng.Counts()
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d workload rules, %d device rules (%d device policies), %d version rules, %d revocations, %d trust domains, %d test files, %d warnings\n",
				c.WorkloadRules, c.DeviceRules, len(set.Devices), c.VersionRules, c.Revocations, c.TrustDomains, len(set.Tests), len(warnings))
			if failWarnings && len(warnings) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d warning(s) (--fail-on-warnings)", len(warnings))}
			}
			return nil
		},
	}
	check.Flags().BoolVar(&failWarnings, "fail-on-warnings", false, "exit 1 when there are warnings")
	return check
}

// pathModes are the values of --paths, the guard's handling of request
// paths that are not canonical.
var pathModes = map[string]policies.PathOptions{
	"refuse":        {},
	"normalize":     {Normalize: true},
	"merge-slashes": {Normalize: true, MergeSlashes: true},
}

func pathOptions(mode string) (policies.PathOptions, error) {
	opt, ok := pathModes[mode]
	if !ok {
		return opt, &exitError{code: 2, err: fmt.Errorf("--paths %q: want refuse, normalize or merge-slashes", mode)}
	}
	return opt, nil
}

const pathsUsage = "non-canonical request paths, as the guard handles them: refuse (deny with the reason), normalize (RFC 3986) or merge-slashes (normalize and merge //)"

// evalOutput is what policy eval prints: the decision, and with --explain
// how it was reached.
type evalOutput struct {
	policies.DecisionJSON
	Explain *policies.Explanation `json:"explain,omitempty"`
}

func newPolicyEvalCmd() *cobra.Command {
	var input, bundlePath, keysPath, scope, paths string
	var fail, explain bool
	eval := &cobra.Command{
		Use:   "eval (--bundle B | FILE|DIR...) --input REQUEST.json|-",
		Short: "Evaluate one request against policies and print the decision as JSON",
		Long: `Evaluate one request and print the decision as JSON. The request is one
JSON object (policies/README.md, "Request input"): exact member names, each
once, nothing after it; header names that differ only in case are refused.
--explain adds the rules the request reached and why each matched or not, why
each device policy did or did not select the device, and each version rule
checked with the version it saw. --fail exits 1 when the decision is deny.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (bundlePath == "") == (len(args) == 0) {
				return &exitError{code: 2, err: errors.New("policy eval needs either --bundle or policy files/directories")}
			}
			if input == "" {
				return &exitError{code: 2, err: errors.New("--input is required (a file, or - for stdin)")}
			}
			opt, err := pathOptions(paths)
			if err != nil {
				return err
			}
			var raw []byte
			if input == "-" {
				raw, err = io.ReadAll(cmd.InOrStdin())
			} else {
				raw, err = os.ReadFile(input)
			}
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("reading input: %w", err)}
			}
			in, err := policies.ParseInput(raw)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid request: %w", input, err)}
			}
			var eng *policies.Engine
			if bundlePath != "" {
				eng, err = loadBundle(bundlePath, keysPath, scope)
			} else {
				_, eng, err = loadPolicies(cmd, args)
			}
			if err != nil {
				return err
			}
			var d policies.Decision
			out := evalOutput{}
			if explain {
				out.Explain = policies.ExplainInput(eng, in, opt, &d)
			} else {
				policies.DecideInput(eng, in, opt, &d)
			}
			out.DecisionJSON = d.JSON()
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return err
			}
			if fail && !d.Allow {
				return &exitError{code: 1, err: errors.New("decision: deny (--fail)")}
			}
			return nil
		},
	}
	eval.Flags().StringVar(&input, "input", "", "request JSON file, or - for stdin (spiffeID, peerID, forwarded, jti, claims, device, targetDevice, peerVersion, method, path, headers)")
	eval.Flags().StringVar(&bundlePath, "bundle", "", "signed policy bundle to verify and evaluate instead of files, through its engine image as the guard does (needs --verify-keys)")
	eval.Flags().StringVar(&keysPath, "verify-keys", "", "public JWK Set that verifies --bundle (verify.jwk)")
	aliasFlag(eval.Flags(), "verify-keys", "keys")
	eval.Flags().StringVar(&scope, "scope", "", "scope the --bundle must be issued for")
	eval.Flags().BoolVar(&fail, "fail", false, "exit 1 when the decision is deny")
	eval.Flags().BoolVar(&explain, "explain", false, "say how the decision was reached (rules considered, device policy selection, version checks)")
	eval.Flags().StringVar(&paths, "paths", "refuse", pathsUsage)
	return eval
}

func newPolicyTestCmd() *cobra.Command {
	var verbose bool
	var output, paths string
	test := &cobra.Command{
		Use:   "test DIR...",
		Short: "Run PolicyTest cases (inputs and expected decisions) against the policies beside them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" && output != "junit" {
				return &exitError{code: 2, err: fmt.Errorf("-o %q: want text, json or junit", output)}
			}
			opt, err := pathOptions(paths)
			if err != nil {
				return err
			}
			set, eng, err := loadPolicies(cmd, args)
			if err != nil {
				return err
			}
			results := policies.RunTestsWith(set, eng, opt)
			if len(results) == 0 {
				return &exitError{code: 1, err: errors.New("no PolicyTest cases found")}
			}
			failed := 0
			for _, r := range results {
				if !r.Passed {
					failed++
				}
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				err = writeTestJSON(out, results, failed)
			case "junit":
				err = writeTestJUnit(out, results, failed)
			default:
				writeTestText(out, results, failed, verbose)
			}
			if err != nil {
				return err
			}
			if failed > 0 {
				return &exitError{code: 1, err: errors.New("")}
			}
			return nil
		},
	}
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "print passing cases too (text output)")
	test.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or junit (JUnit XML for CI)")
	test.Flags().StringVar(&paths, "paths", "refuse", pathsUsage)
	return test
}

func writeTestText(out io.Writer, results []policies.TestResult, failed int, verbose bool) {
	for _, r := range results {
		if r.Passed {
			if verbose {
				fmt.Fprintf(out, "PASS %s\n", r.Test)
			}
			continue
		}
		fmt.Fprintf(out, "FAIL %s (%s)\n", r.Test, r.Pos)
		for _, f := range r.Failures {
			fmt.Fprintf(out, "    %s\n", f)
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d total\n", len(results)-failed, failed, len(results))
}

// testReportJSON is `policy test -o json`.
type testReportJSON struct {
	Passed  int              `json:"passed"`
	Failed  int              `json:"failed"`
	Total   int              `json:"total"`
	Results []testResultJSON `json:"results"`
}

type testResultJSON struct {
	Test     string                `json:"test"`
	Position string                `json:"position"`
	Passed   bool                  `json:"passed"`
	Failures []string              `json:"failures,omitempty"`
	Decision policies.DecisionJSON `json:"decision"`
}

func writeTestJSON(out io.Writer, results []policies.TestResult, failed int) error {
	rep := testReportJSON{Passed: len(results) - failed, Failed: failed, Total: len(results)}
	for _, r := range results {
		rep.Results = append(rep.Results, testResultJSON{Test: r.Test, Position: r.Pos.String(), Passed: r.Passed,
			Failures: r.Failures, Decision: r.Decision.JSON()})
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// JUnit XML, as CI systems (GitLab, Jenkins, GitHub test reporters) read it.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr"`
	Line      int           `xml:"line,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func writeTestJUnit(out io.Writer, results []policies.TestResult, failed int) error {
	rep := junitSuites{Name: "meshguard policy test", Tests: len(results), Failures: failed}
	idx := map[string]int{}
	for _, r := range results {
		k, ok := idx[r.Suite]
		if !ok {
			k = len(rep.Suites)
			idx[r.Suite] = k
			rep.Suites = append(rep.Suites, junitSuite{Name: r.Suite})
		}
		s := &rep.Suites[k]
		c := junitCase{Name: r.Case, Classname: r.Suite, File: r.Pos.File, Line: r.Pos.Line}
		s.Tests++
		if !r.Passed {
			s.Failures++
			c.Failure = &junitFailure{Message: r.Failures[0], Text: strings.Join(r.Failures, "\n")}
		}
		s.Cases = append(s.Cases, c)
	}
	if _, err := io.WriteString(out, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(out)
	enc.Indent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	_, err := io.WriteString(out, "\n")
	return err
}

// loadPolicies reads, checks and compiles policy files; bad policies exit 1
// with one file:line:col line per problem.
func loadPolicies(cmd *cobra.Command, paths []string) (*policies.Set, *policies.Engine, error) {
	return loadPoliciesProgress(cmd, paths, nil)
}

func loadPoliciesProgress(cmd *cobra.Command, paths []string, progress policies.Progress) (*policies.Set, *policies.Engine, error) {
	files, err := policies.ReadPaths(paths...)
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	set, err := policies.LoadProgress(files, progress)
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
	if progress != nil {
		progress("compiling", 0, 0)
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
