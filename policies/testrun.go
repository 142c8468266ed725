//go:build !wasip1

package policies

import (
	"fmt"
	"strings"
)

// TestResult is the outcome of one PolicyTest case.
type TestResult struct {
	Test     string // <PolicyTest name>/<case name>
	Pos      Pos
	Passed   bool
	Failures []string
	Decision Decision
}

// RunTests evaluates every PolicyTest case of s against e.
func RunTests(s *Set, e *Engine) []TestResult {
	var out []TestResult
	for _, t := range s.Tests {
		for _, c := range t.Cases {
			res := TestResult{Test: t.Name + "/" + c.Name, Pos: c.Pos}
			e.Decide(c.Input.Request(), &res.Decision)
			res.Failures = compare(&c.Expect, &res.Decision)
			res.Passed = len(res.Failures) == 0
			out = append(out, res)
		}
	}
	return out
}

func compare(x *Expect, d *Decision) []string {
	var f []string
	if x.Allow != nil && *x.Allow != d.Allow {
		f = append(f, fmt.Sprintf("allow: want %v, got %v (rules %s, reason %q)", *x.Allow, d.Allow, strings.Join(d.Rules(), ","), d.Reason))
	}
	if x.Rule != nil && *x.Rule != d.Rule() && !(*x.Rule != "" && contains(d.Rules(), *x.Rule)) {
		f = append(f, fmt.Sprintf("rule: want %q, got %q", *x.Rule, strings.Join(d.Rules(), ",")))
	}
	if x.Audit != nil && *x.Audit != d.Audit {
		f = append(f, fmt.Sprintf("audit: want %v, got %v", *x.Audit, d.Audit))
	}
	if x.DryRun != nil && *x.DryRun != d.DryRun {
		f = append(f, fmt.Sprintf("dryRun: want %v, got %v (dry-run rule %q)", *x.DryRun, d.DryRun, d.DryRunRule))
	}
	if x.RateLimit != nil && (!d.HasRateLimit || *x.RateLimit != d.RateLimit) {
		f = append(f, fmt.Sprintf("rateLimit: want %+v, got %+v (set %v)", *x.RateLimit, d.RateLimit, d.HasRateLimit))
	}
	return f
}
