//go:build !wasip1

package policies

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TestResult is the outcome of one PolicyTest case.
type TestResult struct {
	Test     string // <PolicyTest name>/<case name>
	Suite    string // the PolicyTest name
	Case     string // the case name
	Pos      Pos
	Passed   bool
	Failures []string
	Decision Decision
}

// RunTests evaluates every PolicyTest case of s against e, refusing paths
// that are not canonical as the guard does by default.
func RunTests(s *Set, e *Engine) []TestResult { return RunTestsWith(s, e, PathOptions{}) }

// RunTestsWith is RunTests with the guard's path options.
func RunTestsWith(s *Set, e *Engine, opt PathOptions) []TestResult {
	return RunTestsAt(s, e, opt, time.Time{})
}

// RunTestsAt is RunTestsWith deciding cases without their own now at now
// (zero: the current time), so version sunsets give reproducible outcomes.
func RunTestsAt(s *Set, e *Engine, opt PathOptions, now time.Time) []TestResult {
	var out []TestResult
	for _, t := range s.Tests {
		for _, c := range t.Cases {
			res := TestResult{Test: t.Name + "/" + c.Name, Suite: t.Name, Case: c.Name, Pos: c.Pos}
			in := c.Input
			if in.Now == "" && !now.IsZero() {
				in.Now = now.Format(time.RFC3339Nano)
			}
			DecideInput(e, &in, opt, &res.Decision)
			res.Failures = compare(&c.Expect, &res.Decision)
			res.Passed = len(res.Failures) == 0
			out = append(out, res)
		}
	}
	return out
}

// DecideInput decides an input as the guard would with opt: the path is
// made canonical first (CanonicalPath); a path it refuses is denied with
// its reason.
func DecideInput(e *Engine, in *Input, opt PathOptions, d *Decision) {
	if refuseNow(in, d) {
		return
	}
	req := in.Request()
	p, err := CanonicalPath(req.Path, opt)
	if err == nil {
		req.Path = p
	}
	e.Decide(req, d)
	if err != nil {
		d.Reason = err.Error()
	}
}

// ExplainInput is DecideInput with an explanation.
func ExplainInput(e *Engine, in *Input, opt PathOptions, d *Decision) *Explanation {
	if refuseNow(in, d) {
		return &Explanation{}
	}
	req := in.Request()
	p, err := CanonicalPath(req.Path, opt)
	if err == nil {
		req.Path = p
	}
	x := e.Explain(req, d)
	if err != nil {
		d.Reason, x.Path = err.Error(), err.Error()
	}
	return x
}

// refuseNow denies an input whose now is not a valid instant (ParseInput
// and the PolicyTest parser refuse those; an Input built in Go may not).
func refuseNow(in *Input, d *Decision) bool {
	if in.Now == "" {
		return false
	}
	if _, err := ParseInstant(in.Now); err != nil {
		*d = Decision{Reason: "invalid now " + strconv.Quote(in.Now) + ": " + err.Error(), Audit: true}
		return true
	}
	return false
}

func compare(x *Expect, d *Decision) []string {
	var f []string
	if x.Allow != nil && *x.Allow != d.Allow {
		f = append(f, fmt.Sprintf("allow: want %v, got %v (rules %s, reason %q)", *x.Allow, d.Allow, strings.Join(d.Rules(), ","), d.Reason))
	}
	if x.Rule != nil && *x.Rule != d.Rule() {
		f = append(f, fmt.Sprintf("rule: want %q, got %q", *x.Rule, strings.Join(d.Rules(), ",")))
	}
	if x.Reason != nil && *x.Reason != d.Reason {
		f = append(f, fmt.Sprintf("reason: want %q, got %q", *x.Reason, d.Reason))
	}
	if x.Write != nil && *x.Write != d.Write {
		f = append(f, fmt.Sprintf("write: want %v, got %v", *x.Write, d.Write))
	}
	if x.DryRunRule != nil && *x.DryRunRule != d.DryRunRule {
		f = append(f, fmt.Sprintf("dryRunRule: want %q, got %q", *x.DryRunRule, d.DryRunRule))
	}
	if x.Audit != nil && *x.Audit != d.Audit {
		f = append(f, fmt.Sprintf("audit: want %v, got %v", *x.Audit, d.Audit))
	}
	if x.DryRun != nil && *x.DryRun != d.DryRun {
		f = append(f, fmt.Sprintf("dryRun: want %v, got %v (dry-run rule %q)", *x.DryRun, d.DryRun, d.DryRunRule))
	}
	for _, c := range [2]struct {
		what string
		want *string
		has  bool
		got  string
	}{{"callerLimit", x.CallerLimit, d.HasCallerLimit, d.CallerLimit.Rule}, {"dryRunCallerLimit", x.DryRunCallerLimit, d.HasDryRunCallerLimit, d.DryRunCallerLimit.Rule}} {
		if !c.has {
			c.got = ""
		}
		if c.want != nil && *c.want != c.got {
			f = append(f, fmt.Sprintf("%s: want rule %q, got %q", c.what, *c.want, c.got))
		}
	}
	if x.RateLimit != nil && (!d.HasRateLimit || *x.RateLimit != d.RateLimit) {
		f = append(f, fmt.Sprintf("rateLimit: want %+v, got %+v (set %v)", *x.RateLimit, d.RateLimit, d.HasRateLimit))
	}
	return f
}
