package main

import (
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/output"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

// newPolicyCmd is the policy verb group.
func newPolicyCmd() *cobra.Command {
	return newGroup("policy", "Check, evaluate, test, bundle and verify policies",
		newPolicyCheckCmd(), newPolicyEvalCmd(), newPolicyTestCmd(), newPolicyBundleCmd(), newPolicyVerifyCmd())
}

// nowFlag is --now: the instant version sunsets are compared with.
type nowFlag struct{ s string }

func addNowFlag(cmd *cobra.Command, n *nowFlag, what string) {
	cmd.Flags().StringVar(&n.s, "now", "", what+" at this instant instead of the current time (RFC 3339 with an explicit offset, e.g. 2027-01-31T00:00:00Z)")
}

// time returns the instant (zero without --now) or a usage error.
func (n *nowFlag) time() (time.Time, error) {
	if n.s == "" {
		return time.Time{}, nil
	}
	t, err := policies.ParseInstant(n.s)
	if err != nil {
		return time.Time{}, usagef("--now %q: %w", n.s, err)
	}
	return t, nil
}

func newPolicyCheckCmd() *cobra.Command {
	var failWarnings bool
	var horizon time.Duration
	var now nowFlag
	var out *outputFormat
	check := &cobra.Command{
		Use:   "check FILE|DIR|-...",
		Short: "Parse and check policy files; print every file:line:col error and warning",
		Long: `Parse and check policy files and print every problem at once, as
file:line:col: message (errors, then exit 1) and file:line:col: warning: message
on stderr; -o json|yaml prints the counts, errors and warnings as data on stdout
instead, -o csv one problem a row. - reads one policy file from stdin (named
stdin). Long runs show a progress line on stderr (on a terminal after a second,
elsewhere every few seconds once slow).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			at, err := now.time()
			if err != nil {
				return err
			}
			if at.IsZero() {
				at = time.Now()
			}
			if horizon < 0 {
				return usagef("--sunset-horizon must not be negative")
			}
			files, err := readPolicyFiles(cmd, args)
			if err != nil {
				return err
			}
			prog := newProgressLine(cmd.ErrOrStderr())
			set, eng, err := compilePolicies(files, prog.update)
			prog.finish()
			var errs, warnings policies.ErrorList
			if err != nil && !errors.As(err, &errs) {
				return failed(err)
			}
			rep := checkReport{OK: err == nil, Errors: problems(errs)}
			if set != nil {
				warnings = append(policies.Warnings(set), policies.SunsetWarnings(set, at, horizon)...)
				slices.SortStableFunc(warnings, func(a, b *policies.Error) int {
					return cmp.Or(strings.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
				})
				c := eng.Counts()
				rep.Counts = &checkCounts{WorkloadRules: c.WorkloadRules, DeviceRules: c.DeviceRules, DevicePolicies: len(set.Devices),
					VersionRules: c.VersionRules, Revocations: c.Revocations, TrustDomains: c.TrustDomains, Issuers: c.Issuers, TestFiles: len(set.Tests)}
				rep.Counts.UpstreamRules, rep.Counts.RegisteredDevices = upstreamCounts(set)
			}
			rep.Warnings = problems(warnings)
			if out.format() == output.Table {
				// The human form: problems on stderr, as compilers print them.
				for _, e := range append(errs, warnings...) {
					fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
				}
			}
			if rep.OK || out.format() != output.Table {
				if err := out.print(cmd, rep); err != nil {
					return err
				}
			}
			if !rep.OK {
				return failedf("%d problem(s) found", len(errs))
			}
			if failWarnings && len(warnings) > 0 {
				return failedf("%d warning(s) (--fail-on-warnings)", len(warnings))
			}
			return nil
		},
	}
	check.Flags().BoolVar(&failWarnings, "fail-on-warnings", false, "exit 1 when there are warnings")
	check.Flags().DurationVar(&horizon, "sunset-horizon", policies.DefaultSunsetHorizon,
		"warn about version sunsets (allowed entries with until) this close ahead; passed sunsets are always warned about (0: only those)")
	addNowFlag(check, &now, "judge sunsets")
	out = addOutputFlag(check, output.All...)
	return check
}

// checkReport is what policy check prints.
type checkReport struct {
	OK       bool         `json:"ok"`
	Counts   *checkCounts `json:"counts,omitempty"`
	Errors   []problem    `json:"errors"`
	Warnings []problem    `json:"warnings"`
}

type checkCounts struct {
	WorkloadRules  int `json:"workloadRules"`
	DeviceRules    int `json:"deviceRules"`
	DevicePolicies int `json:"devicePolicies"`
	VersionRules   int `json:"versionRules"`
	Revocations    int `json:"revocations"`
	TrustDomains   int `json:"trustDomains"`
	Issuers        int `json:"issuers"`
	TestFiles      int `json:"testFiles"`
	// The caller's side (policies/README.md, Upstream versions).
	UpstreamRules     int `json:"upstreamRules"`
	RegisteredDevices int `json:"registeredDevices"`
}

// upstreamCounts counts the caller's-side rules and registered devices.
func upstreamCounts(s *policies.Set) (rules, devices int) {
	for _, u := range s.Upstreams {
		rules += len(u.Rules)
	}
	for _, g := range s.Registries {
		devices += len(g.Devices)
	}
	return rules, devices
}

// problem is one error or warning at its position.
type problem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"`
}

func problems(list policies.ErrorList) []problem {
	out := []problem{}
	for _, e := range list {
		out = append(out, problem{File: e.Pos.File, Line: e.Pos.Line, Col: e.Pos.Col, Message: e.Msg})
	}
	return out
}

// Text is the summary line (the problems went to stderr).
func (r checkReport) Text(w io.Writer) error {
	c := r.Counts
	up := ""
	if c.UpstreamRules > 0 || c.RegisteredDevices > 0 {
		up = fmt.Sprintf(", %d upstream version rules, %d registered devices", c.UpstreamRules, c.RegisteredDevices)
	}
	_, err := fmt.Fprintf(w, "ok: %d workload rules, %d device rules (%d device policies), %d version rules%s, %d revocations, %d trust domains, %d test files, %d warnings\n",
		c.WorkloadRules, c.DeviceRules, c.DevicePolicies, c.VersionRules, up, c.Revocations, c.TrustDomains, c.TestFiles, len(r.Warnings))
	return err
}

// Rows are the problems, one a row.
func (r checkReport) Rows() ([]string, [][]string) {
	var rows [][]string
	for _, set := range []struct {
		severity string
		list     []problem
	}{{"error", r.Errors}, {"warning", r.Warnings}} {
		for _, p := range set.list {
			rows = append(rows, []string{set.severity, p.File, strconv.Itoa(p.Line), strconv.Itoa(p.Col), p.Message})
		}
	}
	return []string{"severity", "file", "line", "col", "message"}, rows
}

// pathModes are the values of --paths, the guard's handling of request
// paths that are not canonical.
var pathModes = map[string]policies.PathOptions{
	"refuse":        {},
	"normalize":     {Normalize: true},
	"merge-slashes": {Normalize: true, MergeSlashes: true},
}

const pathsUsage = "non-canonical request paths, as the guard handles them: refuse (deny with the reason), normalize (RFC 3986) or merge-slashes (normalize and merge //)"

// addPathsFlag registers --paths.
func addPathsFlag(cmd *cobra.Command, p *string) {
	enumflag.Var(cmd.Flags(), p, "paths", "", "refuse", []string{"refuse", "normalize", "merge-slashes"}, pathsUsage)
}

// evalOutput is what policy eval prints: the decision, and with --explain
// how it was reached.
type evalOutput struct {
	policies.DecisionJSON
	Explain *policies.Explanation `json:"explain,omitempty"`
}

// Text is the decision as labelled lines, then the explanation.
func (e evalOutput) Text(w io.Writer) error {
	d := e.DecisionJSON
	var b strings.Builder
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	line := func(k, v string) { fmt.Fprintf(&b, "%-14s%s\n", k, output.Clean(v)) }
	line("decision", decision)
	line("rules", strings.Join(d.Rules, ", "))
	line("reason", d.Reason)
	line("audit", strconv.FormatBool(d.Audit))
	line("write", strconv.FormatBool(d.Write))
	line("dry run", strconv.FormatBool(d.DryRun))
	if d.DryRunRule != "" {
		line("dry-run rule", d.DryRunRule)
	}
	if d.RateLimit != nil {
		line("rate limit", fmt.Sprintf("%g/s, burst %d, key %s", d.RateLimit.PerSecond, d.RateLimit.Burst, d.RateLimit.Key))
	}
	if d.Target != "" {
		line("target device", d.Target)
	}
	if x := e.Explain; x != nil {
		line("path", x.Path)
		line("caller", x.Caller)
		line("peer", x.Peer)
		for _, r := range x.Rules {
			verdict := "matched"
			if !r.Matched {
				verdict = "not matched: " + r.Why
			}
			line("rule", fmt.Sprintf("%s (%s%s) %s", r.Rule, r.Effect, dryRunMark(r.DryRun), verdict))
		}
		for _, p := range x.DevicePolicies {
			verdict := "selected the device"
			if !p.Selected {
				verdict = "did not select the device: " + p.Why
			}
			line("device policy", p.Policy+" "+verdict)
		}
		for _, v := range x.VersionRules {
			line("version rule", fmt.Sprintf("%s%s: version %q: %s", v.Rule, dryRunMark(v.DryRun), v.Version, v.Result))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dryRunMark(dry bool) string {
	if dry {
		return ", dry run"
	}
	return ""
}

// Rows are the decision in one row.
func (e evalOutput) Rows() ([]string, [][]string) {
	d := e.DecisionJSON
	var key, perSecond, burst string
	if d.RateLimit != nil {
		key, perSecond, burst = d.RateLimit.Key, strconv.FormatFloat(d.RateLimit.PerSecond, 'g', -1, 64), strconv.FormatUint(uint64(d.RateLimit.Burst), 10)
	}
	return []string{"allow", "rules", "reason", "audit", "write", "dryRun", "dryRunRule", "rateLimitKey", "rateLimitPerSecond", "rateLimitBurst", "targetDevice"},
		[][]string{{strconv.FormatBool(d.Allow), strings.Join(d.Rules, " "), d.Reason, strconv.FormatBool(d.Audit), strconv.FormatBool(d.Write),
			strconv.FormatBool(d.DryRun), d.DryRunRule, key, perSecond, burst, d.Target}}
}

func newPolicyEvalCmd() *cobra.Command {
	var input, bundlePath, keysPath, scope, paths string
	var fail, explain, upstream bool
	var now nowFlag
	var out *outputFormat
	eval := &cobra.Command{
		Use:   "eval (--bundle B | FILE|DIR...) --input REQUEST.json|-",
		Short: "Evaluate one request against policies and print the decision (JSON by default)",
		Long: `Evaluate one request and print the decision (-o json by default; yaml, table
or csv). The request is one JSON object (policies/README.md, "Request input"):
exact member names, each once, nothing after it; header names that differ only
in case are refused. --explain adds the rules the request reached and why each
matched or not, why each device policy did or did not select the device, and
each version rule checked with the version it saw. --fail exits 1 when the
decision is deny. --upstream decides an upstream request instead, as a guard on
the caller's side does (policies/README.md, "Upstream versions").`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (bundlePath == "") == (len(args) == 0) {
				return usagef("policy eval needs either --bundle or policy files/directories")
			}
			if input == "" {
				return usagef("--input is required (a file, or - for stdin)")
			}
			in := newInputs(cmd)
			raw, err := in.read("--input", input)
			if err != nil {
				return err
			}
			var req *policies.Input
			var upReq *policies.UpstreamInput
			if upstream {
				if explain {
					return usagef("--explain does not apply to --upstream")
				}
				upReq, err = policies.ParseUpstreamInput(raw)
			} else {
				req, err = policies.ParseInput(raw)
			}
			if err != nil {
				return usagef("%s: invalid request: %w", input, err)
			}
			at, err := now.time()
			if err != nil {
				return err
			}
			if req != nil && req.Now == "" && !at.IsZero() {
				req.Now = policies.FormatInstant(at)
			}
			if upReq != nil && upReq.Now == "" && !at.IsZero() {
				upReq.Now = policies.FormatInstant(at)
			}
			var eng *policies.Engine
			if bundlePath != "" {
				eng, err = loadBundle(in, bundlePath, keysPath, scope)
			} else {
				var files map[string][]byte
				if files, err = readPolicyFilesFrom(in, args); err == nil {
					_, eng, err = loadPolicies(cmd, files)
				}
			}
			if err != nil {
				return err
			}
			if upReq != nil {
				var ud policies.UpstreamDecision
				policies.DecideUpstreamInput(eng, upReq, pathModes[paths], &ud)
				if err := out.print(cmd, ud.JSON()); err != nil {
					return err
				}
				if fail && !ud.Allow {
					return failedf("decision: deny (--fail)")
				}
				return nil
			}
			var d policies.Decision
			res := evalOutput{}
			if explain {
				res.Explain = policies.ExplainInput(eng, req, pathModes[paths], &d)
			} else {
				policies.DecideInput(eng, req, pathModes[paths], &d)
			}
			res.DecisionJSON = d.JSON()
			if err := out.print(cmd, res); err != nil {
				return err
			}
			if fail && !d.Allow {
				return failedf("decision: deny (--fail)")
			}
			return nil
		},
	}
	f := eval.Flags()
	f.StringVar(&input, "input", "", "request JSON file, or - for stdin (spiffeID, peerID, forwarded, jti, claims, device, targetDevice, peerVersion, method, path, headers)")
	f.StringVar(&bundlePath, "bundle", "", "signed policy bundle to verify and evaluate instead of files, through its engine image as the guard does (needs --verify-keys)")
	f.StringVar(&keysPath, "verify-keys", "", "public JWK Set that verifies --bundle (verify.jwk)")
	aliasFlag(f, "verify-keys", "keys")
	f.StringVar(&scope, "scope", "", "scope the --bundle must be issued for")
	f.BoolVar(&fail, "fail", false, "exit 1 when the decision is deny")
	f.BoolVar(&upstream, "upstream", false, "the input is an upstream request (method, path, headers, targetDevice, upstreamKnown, upstream, peerVersion, hostMetadata, now): decide as a guard on the caller's side")
	f.BoolVar(&explain, "explain", false, "say how the decision was reached (rules considered, device policy selection, version checks)")
	addPathsFlag(eval, &paths)
	addNowFlag(eval, &now, "decide (version sunsets) unless the request has its own now,")
	out = addOutputFlag(eval, output.JSON, output.YAML, output.Table, output.CSV)
	return eval
}

// testFormats: the shared formats, "text" (the older name of table) and
// JUnit XML for CI.
var testFormats = []string{"table", "text", "json", "yaml", "csv", "junit"}

func newPolicyTestCmd() *cobra.Command {
	var verbose bool
	var format, paths string
	var now nowFlag
	test := &cobra.Command{
		Use:   "test DIR|FILE|-...",
		Short: "Run PolicyTest cases (inputs and expected decisions) against the policies beside them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := readPolicyFiles(cmd, args)
			if err != nil {
				return err
			}
			at, err := now.time()
			if err != nil {
				return err
			}
			set, eng, err := loadPolicies(cmd, files)
			if err != nil {
				return err
			}
			results := policies.RunTestsAt(set, eng, pathModes[paths], at)
			if len(results) == 0 {
				return failedf("no PolicyTest cases found")
			}
			rep := newTestReport(results)
			w := cmd.OutOrStdout()
			switch format {
			case "junit":
				err = writeTestJUnit(w, results, rep.Failed)
			case "table", "text":
				writeTestText(w, results, rep.Failed, verbose)
			default:
				err = output.Write(w, output.Format(format), rep)
			}
			if err != nil {
				return err
			}
			if rep.Failed > 0 {
				return failed(errors.New("")) // the report says which
			}
			return nil
		},
	}
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "print passing cases too (table output)")
	enumflag.Var(test.Flags(), &format, "output", "o", "table", testFormats,
		"output format: table (text), json, yaml, csv (one case a row) or junit (JUnit XML for CI)").WithHint("-o is the output format; redirect stdout for a file")
	addPathsFlag(test, &paths)
	addNowFlag(test, &now, "decide cases without their own now")
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

// testReportJSON is `policy test -o json` (and yaml, csv).
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

func newTestReport(results []policies.TestResult) testReportJSON {
	rep := testReportJSON{Total: len(results)}
	for _, r := range results {
		if !r.Passed {
			rep.Failed++
		}
		rep.Results = append(rep.Results, testResultJSON{Test: r.Test, Position: r.Pos.String(), Passed: r.Passed,
			Failures: r.Failures, Decision: r.Decision.JSON()})
	}
	rep.Passed = rep.Total - rep.Failed
	return rep
}

// Rows are the cases, one a row.
func (r testReportJSON) Rows() ([]string, [][]string) {
	rows := make([][]string, 0, len(r.Results))
	for _, c := range r.Results {
		rows = append(rows, []string{c.Test, c.Position, strconv.FormatBool(c.Passed), strings.Join(c.Failures, "; ")})
	}
	return []string{"test", "position", "passed", "failures"}, rows
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

// stdinPolicyName is the file name a policy read from stdin has in
// positions (stdin:3:5: ...).
const stdinPolicyName = "stdin"

// readPolicyFiles reads the policy files and directories named on the
// command line; - is one policy file from stdin.
func readPolicyFiles(cmd *cobra.Command, paths []string) (map[string][]byte, error) {
	return readPolicyFilesFrom(newInputs(cmd), paths)
}

func readPolicyFilesFrom(in *inputs, paths []string) (map[string][]byte, error) {
	var named []string
	var stdin []byte
	for _, p := range paths {
		if p != stdio {
			named = append(named, p)
			continue
		}
		b, err := in.read("policy file", p)
		if err != nil {
			return nil, err
		}
		stdin = b
	}
	files := map[string][]byte{}
	if len(named) > 0 {
		var err error
		if files, err = policies.ReadPaths(named...); err != nil {
			return nil, usage(err)
		}
	}
	if stdin != nil {
		files[stdinPolicyName] = stdin
	}
	return files, nil
}

// compilePolicies checks and compiles policy files; a policy problem is a
// policies.ErrorList.
func compilePolicies(files map[string][]byte, progress policies.Progress) (*policies.Set, *policies.Engine, error) {
	set, err := policies.LoadProgress(files, progress)
	if err != nil {
		return nil, nil, err
	}
	if progress != nil {
		progress("compiling", 0, 0)
	}
	eng, err := policies.Compile(set)
	if err != nil {
		return nil, nil, failed(err)
	}
	return set, eng, nil
}

// loadPolicies is compilePolicies for verbs whose output is not the
// problems: they go to stderr, one file:line:col line each (exit 1).
func loadPolicies(cmd *cobra.Command, files map[string][]byte) (*policies.Set, *policies.Engine, error) {
	set, eng, err := compilePolicies(files, nil)
	var list policies.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
		}
		return nil, nil, failedf("%d problem(s) found", len(list))
	}
	return set, eng, err
}

// loadBundle verifies a signed bundle and loads its engine image: the
// policy the guard filter enforces, not a fresh compile of the sources.
func loadBundle(in *inputs, path, keysPath, scope string) (*policies.Engine, error) {
	if keysPath == "" {
		return nil, usagef("--bundle needs --verify-keys (the public JWK Set that verifies it)")
	}
	data, err := in.read("--bundle", path)
	if err != nil {
		return nil, err
	}
	keys, err := readKeySet(in, keysPath)
	if err != nil {
		return nil, err
	}
	p, err := bundle.Load(data, bundle.VerifyOptions{Keys: keys, Scope: scope})
	if err != nil {
		return nil, failedf("%s: %w", path, err)
	}
	return p.Engine, nil
}

// readKeySet reads a public JWK Set (verify.jwk); a bad file is a usage
// error.
func readKeySet(in *inputs, path string) (jwk.Set, error) {
	raw, err := in.read("--verify-keys", path)
	if err != nil {
		return nil, err
	}
	keys, err := bundle.ParseKeySet(raw)
	if err != nil {
		return nil, usagef("%s: %w", path, err)
	}
	return keys, nil
}
