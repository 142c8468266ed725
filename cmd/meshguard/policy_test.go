package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

const gridDir = "../../policies/testdata/grid"

func TestPolicyCheck(t *testing.T) {
	r := runCLI(t, "policy", "check", gridDir).ok(t)
	require.Contains(t, r.stdout, "ok: 5 workload rules, 4 device rules")

	r = runCLI(t, "policy", "check", "../../policies/testdata/errors/shadow.yaml")
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stderr, "3 problem(s) found")
	require.Contains(t, r.stderr, "shadow.yaml:")
	require.Empty(t, r.stdout)

	r = runCLI(t, "policy", "check", filepath.Join(t.TempDir(), "none"))
	require.Equal(t, exitUsage, r.code, "a path that is not there is a usage error")
}

// TestPolicyCheckFormats: every format carries the counts and the problems.
func TestPolicyCheckFormats(t *testing.T) {
	var rep checkReport
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "policy", "check", "-o", "json", gridDir).ok(t).stdout), &rep))
	assert.True(t, rep.OK)
	require.NotNil(t, rep.Counts)
	assert.Equal(t, 5, rep.Counts.WorkloadRules)
	assert.Empty(t, rep.Errors)

	// Errors as data, on stdout, still exit 1; nothing on stderr but the summary.
	r := runCLI(t, "policy", "check", "-o", "json", "../../policies/testdata/errors/shadow.yaml")
	assert.Equal(t, exitFailed, r.code)
	rep = checkReport{}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.False(t, rep.OK)
	require.Len(t, rep.Errors, 3)
	assert.Equal(t, "../../policies/testdata/errors/shadow.yaml", rep.Errors[0].File)
	assert.Positive(t, rep.Errors[0].Line)
	assert.Equal(t, "meshguard: 3 problem(s) found\n", r.stderr)

	r = runCLI(t, "policy", "check", "-o", "yaml", "../../policies/testdata/errors/shadow.yaml")
	assert.Equal(t, exitFailed, r.code)
	var y map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(r.stdout), &y))
	assert.Equal(t, false, y["ok"])

	r = runCLI(t, "policy", "check", "-o", "csv", "../../policies/testdata/errors/shadow.yaml")
	assert.Equal(t, exitFailed, r.code)
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 4)
	assert.Equal(t, []string{"severity", "file", "line", "col", "message"}, rows[0])
	assert.Equal(t, "error", rows[1][0])
}

// TestPolicyFromStdin: - is one policy file read from stdin.
func TestPolicyFromStdin(t *testing.T) {
	open := "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: open}\nspec:\n  rules:\n    - name: all\n      effect: allow\n"
	assert.Contains(t, runCLIStdin(t, open, "policy", "check", "-").ok(t).stdout, "ok: 1 workload rules")
	r := runCLIStdin(t, "kind: Nope\n", "policy", "check", "-")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "stdin:1:")
	r = runCLIStdin(t, open, "policy", "check", "-", "-")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "stdin is already the input of policy file")
	// Policies from stdin, the request from a file.
	in := writeInput(t, `{"method":"GET","path":"/x"}`)
	assert.Contains(t, runCLIStdin(t, open, "policy", "eval", "--input", in, "-").ok(t).stdout, `"allow": true`)
	r = runCLIStdin(t, open, "policy", "eval", "--input", "-", "-")
	assert.Equal(t, exitUsage, r.code, "stdin cannot be both the request and the policies")
}

func TestPolicyTestVerb(t *testing.T) {
	r := runCLI(t, "policy", "test", gridDir).ok(t)
	require.Contains(t, r.stdout, "24 passed, 0 failed, 24 total")

	// A failing expectation exits 1 and names the case.
	dir := gridWithWrongTest(t)
	r = runCLI(t, "policy", "test", dir)
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "FAIL wrong/reader may not read")
	require.Contains(t, r.stdout, "0 passed, 1 failed, 1 total")
	require.Empty(t, r.stderr, "the report says it all")
}

// gridWithWrongTest copies the grid policies without their tests and adds
// one PolicyTest whose expectation is wrong.
func gridWithWrongTest(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(gridDir + "/*.yaml")
	require.NoError(t, err)
	for _, f := range files {
		if filepath.Base(f) == "grid_test.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t.yaml"), []byte(`apiVersion: meshguard.io/v1
kind: PolicyTest
metadata: {name: wrong}
spec:
  cases:
    - name: reader may not read
      input: {spiffeID: "spiffe://grid.example/ns/metering/sa/meter-reader", method: GET, path: /v1/meters/1/readings}
      expect: {allow: false}
`), 0o644))
	return dir
}

func TestPolicyEval(t *testing.T) {
	in := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/billing/sa/billing",
"device":{"id":"3e4f45ab31edfe5b67e343e5e4562e31984e23e5","class":"meter"},
"method":"POST","path":"/v1/meters/3e4f45ab31edfe5b67e343e5e4562e31984e23e5/disconnect"}`)
	r := runCLI(t, "policy", "eval", "--input", in, gridDir).ok(t)
	var d policies.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	require.True(t, d.Allow)
	require.Equal(t, []string{"meters/remote-disconnect"}, d.Rules)
	require.True(t, d.Audit)
	require.NotNil(t, d.RateLimit)
	require.Equal(t, policies.RateLimitJSON{Key: "3e4f45ab31edfe5b67e343e5e4562e31984e23e5", PerSecond: 0.5, Burst: 1}, *d.RateLimit)

	// The other formats carry the same decision.
	yr := runCLI(t, "policy", "eval", "--input", in, "-o", "yaml", gridDir).ok(t)
	var yd policies.DecisionJSON
	require.NoError(t, yaml.Unmarshal([]byte(yr.stdout), &yd))
	assert.Equal(t, d, yd)
	table := runCLI(t, "policy", "eval", "--input", in, "-o", "table", gridDir).ok(t).stdout
	assert.Contains(t, table, "decision      allow\n")
	assert.Contains(t, table, "rules         meters/remote-disconnect\n")
	assert.Contains(t, table, "rate limit    0.5/s, burst 1, key 3e4f45ab31edfe5b67e343e5e4562e31984e23e5\n")
	rows, err := csv.NewReader(strings.NewReader(runCLI(t, "policy", "eval", "--input", in, "-o", "csv", gridDir).ok(t).stdout)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"true", "meters/remote-disconnect"}, rows[1][:2])

	bogus := writeInput(t, `{"method":"GET","path":"/","bogus":1}`)
	r = runCLI(t, "policy", "eval", "--input", bogus, gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "unknown member")
	r = runCLI(t, "policy", "eval", "--input", in, "--bundle", "x.bundle", gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "either --bundle or policy files")
}

func TestPolicyEvalBundle(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "keys", "generate", "--out", filepath.Join(dir, "keys")).ok(t)
	b := filepath.Join(dir, "p.bundle")
	runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "keys", "signing.jwk"), "--revision", "3", "--output-file", b, gridDir).ok(t)
	in := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/9/readings"}`)
	r := runCLI(t, "policy", "eval", "--bundle", b, "--verify-keys", filepath.Join(dir, "keys", "verify.jwk"), "--input", in).ok(t)
	require.Contains(t, r.stdout, `"meter-api/readers-read"`)
	r = runCLI(t, "policy", "eval", "--bundle", b, "--input", in)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--verify-keys")
	// A bundle from another signer does not verify: a failure, not a usage error.
	runCLI(t, "keys", "generate", "--out", filepath.Join(dir, "other")).ok(t)
	r = runCLI(t, "policy", "eval", "--bundle", b, "--verify-keys", filepath.Join(dir, "other", "verify.jwk"), "--input", in)
	assert.Equal(t, exitFailed, r.code, r.stderr)
}

func writeInput(t *testing.T, body string) string {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.json")
	require.NoError(t, os.WriteFile(in, []byte(body), 0o644))
	return in
}

// TestPolicyEvalStrictInput: one input has one meaning, or it is refused
// (exit 2) with the reason.
func TestPolicyEvalStrictInput(t *testing.T) {
	for body, msg := range map[string]string{
		`{"method":"GET","path":"/v1/meters/1/readings"} {"path":"/v1/admin"}`: "trailing data",
		`{"method":"GET","path":"/v1/meters/1/readings"}x`:                     "trailing data",
		`{"method":"GET","path":"/v1/a","path":"/v1/b"}`:                       `member "path" given twice`,
		`{"method":"GET","Path":"/v1/admin","path":"/v1/a"}`:                   `unknown member "Path"`,
		`{"method":"GET","path":"v1/meters/1/readings"}`:                       "must start with /",
		`{"method":"GET"}`: `missing member "path"`,
		`{"method":"GET","path":"/x","headers":{"X-Role":"admin","x-role":"ops"}}`: `"X-Role" and "x-role" differ only in case`,
		`{"method":"GET","path":"/x","headers":{"x-role":"a","x-role":"b"}}`:       `"x-role" given twice`,
		`{"method":"GET","path":"/x","claims":{"swversion":2}}`:                    "claims.swversion must be a string",
		`{"method":"GET","path":"/x","device":{"id":"a","ID":"b"}}`:                `unknown member "ID"`,
		`[{"method":"GET","path":"/x"}]`:                                           "must be a JSON object",
		`{"method":"GET","path":"/x"`:                                              "unexpected EOF",
	} {
		r := runCLI(t, "policy", "eval", "--input", writeInput(t, body), gridDir)
		assert.Equal(t, exitUsage, r.code, body)
		assert.Contains(t, r.stderr, msg, body)
	}
}

func TestPolicyEvalStdinFailExplainPaths(t *testing.T) {
	r := runCLIStdin(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/m-17/readings"}`,
		"policy", "eval", "--input", "-", "--fail", gridDir).ok(t)
	assert.Contains(t, r.stdout, `"meter-api/readers-read"`, "an allow passes --fail")

	// A deny with --fail exits 1 and still prints the decision.
	deny := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"DELETE","path":"/v1/meters/m-17/readings"}`)
	r = runCLI(t, "policy", "eval", "--input", deny, "--fail", gridDir)
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stdout, `"allow": false`)
	runCLI(t, "policy", "eval", "--input", deny, gridDir).ok(t) // without --fail a deny is a result, not an error

	// --explain names the version rule, the version and the unselected policy.
	ctlReq := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/der/sa/controller","claims":{"swversion":"2.4.1"},
"device":{"id":"inv-0042","class":"inverter","vendor":"acme","firmware":"3.2.0"},"method":"PUT","path":"/v1/inverters/inv-0042/setpoint"}`)
	r = runCLI(t, "policy", "eval", "--input", ctlReq, "--explain", gridDir).ok(t)
	var got evalOutput
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.NotNil(t, got.Explain)
	assert.Contains(t, got.Explain.VersionRules, policies.VersionCheck{Rule: "der-controller-versions/controller-releases", Version: "2.4.1", Result: policies.ReasonVersionDenied})
	assert.Contains(t, got.Explain.DevicePolicies, policies.DeviceExplanation{Policy: "inverters", Why: `device vendor "acme" is not in ["voltwerk" "sunbridge"]`})
	assert.True(t, got.Write)
	table := runCLI(t, "policy", "eval", "--input", ctlReq, "--explain", "-o", "table", gridDir).ok(t).stdout
	assert.Contains(t, table, `version rule  der-controller-versions/controller-releases: version "2.4.1": `+policies.ReasonVersionDenied)
	assert.Contains(t, table, `device policy inverters did not select the device: device vendor "acme" is not in ["voltwerk" "sunbridge"]`)

	// Non-canonical paths: refused by default, normalised on request.
	dotted := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/x/../m-17/%72eadings"}`)
	assert.Contains(t, runCLI(t, "policy", "eval", "--input", dotted, gridDir).ok(t).stdout, policies.ErrPathDotSegment.Error())
	assert.Contains(t, runCLI(t, "policy", "eval", "--input", dotted, "--paths", "normalize", gridDir).ok(t).stdout, `"allow": true`)
	r = runCLI(t, "policy", "eval", "--input", dotted, "--paths", "tolerant", gridDir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "refuse, normalize, merge-slashes")
}

func TestPolicyTestOutputs(t *testing.T) {
	var rep testReportJSON
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "policy", "test", "-o", "json", gridDir).ok(t).stdout), &rep))
	assert.Equal(t, rep.Total, rep.Passed)
	assert.Positive(t, rep.Total)
	assert.Regexp(t, `^grid_test\.yaml:\d+:\d+$`, filepath.Base(rep.Results[0].Position))

	var suites junitSuites
	require.NoError(t, xml.Unmarshal([]byte(runCLI(t, "policy", "test", "-o", "junit", gridDir).ok(t).stdout), &suites))
	assert.Equal(t, rep.Total, suites.Tests)
	require.Len(t, suites.Suites, 1)
	assert.Equal(t, "grid", suites.Suites[0].Name)
	assert.Zero(t, suites.Failures)

	// text is the older name of table.
	assert.Equal(t, runCLI(t, "policy", "test", "-o", "table", gridDir).ok(t).stdout, runCLI(t, "policy", "test", "-o", "text", gridDir).ok(t).stdout)

	// A failing case is in every report and exits 1.
	dir := gridWithWrongTest(t)
	r := runCLI(t, "policy", "test", "-o", "junit", dir)
	assert.Equal(t, exitFailed, r.code)
	require.NoError(t, xml.Unmarshal([]byte(r.stdout), &suites))
	assert.Equal(t, 1, suites.Failures)
	last := suites.Suites[len(suites.Suites)-1]
	require.Equal(t, "wrong", last.Name)
	require.NotNil(t, last.Cases[0].Failure)
	assert.Contains(t, last.Cases[0].Failure.Message, "allow: want false, got true")

	r = runCLI(t, "policy", "test", "-o", "yaml", dir)
	assert.Equal(t, exitFailed, r.code)
	var yrep testReportJSON
	require.NoError(t, yaml.Unmarshal([]byte(r.stdout), &yrep))
	assert.Equal(t, 1, yrep.Failed)
	r = runCLI(t, "policy", "test", "-o", "csv", dir)
	assert.Equal(t, exitFailed, r.code)
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, []string{"wrong/reader may not read", rows[1][1], "false"}, rows[1][:3])

	r = runCLI(t, "policy", "test", "-o", "xml", dir)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "table, text, json, yaml, csv, junit")
}

func TestPolicyCheckWarnings(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(`apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: inverters}
spec:
  devices: {classes: [inverter]}
  target: {paths: ["/v1/inverters/{id}/**"]}
  rules:
    - {name: w, effect: allow, access: write, paths: ["/v1/inverters/{id}/setpoint"]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: ops}
spec:
  rules:
    - {name: all, effect: allow, subjects: [spiffe://grid.example/ns/ops/sa/admin]}
`), 0o644))
	r := runCLI(t, "policy", "check", dir).ok(t)
	assert.Contains(t, r.stdout, "1 warnings")
	assert.Contains(t, r.stderr, `p.yaml:15:7: warning: workload rule "ops/all" allows writes on paths DevicePolicy "inverters" governs`)
	r = runCLI(t, "policy", "check", "--fail-on-warnings", dir)
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "1 warning(s)")
	var rep checkReport
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "policy", "check", "-o", "json", dir).ok(t).stdout), &rep))
	require.Len(t, rep.Warnings, 1)
	assert.Equal(t, 15, rep.Warnings[0].Line)
}

// TestPolicySunsets: check warns about sunsets within the horizon and
// about passed ones; eval and test decide at --now.
func TestPolicySunsets(t *testing.T) {
	dir := filepath.Join("..", "..", "policies", "testdata", "sunsets")
	for _, tc := range []struct {
		now, horizon string
		warnings     []string
	}{
		{"2026-12-01T00:00:00Z", "", nil},
		{"2026-12-15T00:00:00Z", "", []string{`15:50: warning: version rule "scada-versions/scada-releases": the sunset of ">=2.0.0-rc.1, <2.0.0" at 2027-01-08T11:00:00Z is within the horizon of 720h0m0s (in 587h0m0s)`}},
		{"2026-12-15T00:00:00Z", "1200h", []string{"14:45: warning:", "15:50: warning:"}},
		{"2026-12-15T00:00:00Z", "0s", nil},
		{"2027-01-10T00:00:00+01:00", "0s", []string{`15:50: warning: version rule "scada-versions/scada-releases": the sunset of ">=2.0.0-rc.1, <2.0.0" at 2027-01-08T11:00:00Z has passed: the entry approves no version any more`}},
		{"2027-02-01T00:00:00Z", "720h", []string{"14:45: warning:", "15:50: warning:", "22:33: warning:"}},
	} {
		args := []string{"policy", "check", "-o", "json", "--now", tc.now, dir}
		if tc.horizon != "" {
			args = append(args, "--sunset-horizon", tc.horizon)
		}
		var rep checkReport
		require.NoError(t, json.Unmarshal([]byte(runCLI(t, args...).ok(t).stdout), &rep))
		var got []string
		for _, w := range rep.Warnings {
			got = append(got, fmt.Sprintf("%d:%d: warning: %s", w.Line, w.Col, w.Message))
		}
		require.Len(t, got, len(tc.warnings), "%s %s: %v", tc.now, tc.horizon, got)
		for i, w := range tc.warnings {
			assert.True(t, strings.HasPrefix(got[i], w), "%s\nwant prefix %s", got[i], w)
		}
	}
	r := runCLI(t, "policy", "check", "--now", "2027-02-01T00:00:00Z", "--fail-on-warnings", dir)
	assert.Equal(t, exitFailed, r.code)
	for _, bad := range [][]string{{"--now", "2027-02-01"}, {"--now", "2027-02-01T00:00:00"}, {"--sunset-horizon", "-1h"}} {
		r := runCLI(t, append([]string{"policy", "check", dir}, bad...)...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", bad, r.stderr)
	}

	req := `{"spiffeID":"spiffe://grid.example/ns/scada/sa/historian","method":"GET","path":"/v1/points/1","headers":{"x-sw-version":"1.4.0"}}`
	var d policies.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(runCLIStdin(t, req, "policy", "eval", dir, "--input", "-", "--now", "2027-01-30T00:00:00Z").ok(t).stdout), &d))
	assert.True(t, d.Allow, d.Reason)
	r = runCLIStdin(t, req, "policy", "eval", dir, "--input", "-", "--now", "2027-01-31T00:00:00Z", "--fail")
	assert.Equal(t, exitFailed, r.code)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	assert.Equal(t, `software version approved by ">=1.4.0, <1.5.0" until 2027-01-31T00:00:00Z: sunset passed`, d.Reason)
	// The request's own now wins over --now.
	withNow := strings.TrimSuffix(req, "}") + `,"now":"2027-01-30T00:00:00Z"}`
	runCLIStdin(t, withNow, "policy", "eval", dir, "--input", "-", "--now", "2027-01-31T00:00:00Z", "--fail").ok(t)
	assert.Equal(t, exitUsage, runCLIStdin(t, req, "policy", "eval", dir, "--input", "-", "--now", "soon").code)

	// Every case has its own now, so --now changes nothing; a set whose
	// cases have none is decided at --now.
	runCLI(t, "policy", "test", "--now", "2030-01-01T00:00:00Z", dir).ok(t)
	tmp := t.TempDir()
	src, err := os.ReadFile(filepath.Join(dir, "sunsets.yaml"))
	require.NoError(t, err)
	head, _, _ := strings.Cut(string(src), "kind: PolicyTest")
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "p.yaml"), []byte(head+`kind: PolicyTest
metadata: {name: t}
spec:
  cases:
    - name: 1.4 in the window
      input: {spiffeID: spiffe://grid.example/ns/scada/sa/historian, method: GET, path: /v1/points/p1, headers: {x-sw-version: 1.4.2}}
      expect: {allow: true}
`), 0o644))
	runCLI(t, "policy", "test", "--now", "2027-01-30T00:00:00Z", tmp).ok(t)
	assert.Equal(t, exitFailed, runCLI(t, "policy", "test", "--now", "2027-01-31T00:00:00Z", tmp).code)
}

// TestProgressLine: nothing for fast runs; a line per interval once slow.
func TestProgressLine(t *testing.T) {
	var buf bytes.Buffer
	p := (&progressLine{w: &buf, delay: time.Hour, interval: time.Millisecond}).run()
	p.update("check", 1, 2)
	time.Sleep(20 * time.Millisecond)
	p.finish()
	assert.Empty(t, buf.String(), "fast runs print nothing")

	buf.Reset()
	p = (&progressLine{w: &buf, delay: 0, interval: 4 * time.Millisecond}).run()
	p.update("check", 4096, 100000)
	time.Sleep(50 * time.Millisecond)
	p.finish()
	assert.Contains(t, buf.String(), "meshguard: checking: 4096/100000 rules (")
	assert.NotContains(t, buf.String(), "\r", "no terminal escapes in logs")
}

// TestPolicyEvalBundleUsesTheImage: eval --bundle answers with the engine
// image the guard enforces, whatever the sources beside it say and
// whatever YAML data files the bundle carries.
func TestPolicyEvalBundleUsesTheImage(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "keys", "generate", "--out", dir).ok(t)
	key := must(bundle.ParseSigningKey(must(os.ReadFile(filepath.Join(dir, "signing.jwk")))))
	allowAll := must(policies.CompileFiles(map[string][]byte{"w.yaml": []byte(openPolicy)}))
	files, err := policies.ReadPaths(gridDir)
	require.NoError(t, err)
	inBundle := map[string][]byte{
		bundle.ImageFile: must(policies.MarshalEngine(allowAll)),
		// Not a policy: eval used to compile every YAML file it found.
		"data/inventory.yaml": []byte("meters: [m1, m2]\n"),
	}
	for name, b := range files {
		inBundle["policies/"+filepath.Base(name)] = b
	}
	b := filepath.Join(dir, "forged.bundle")
	require.NoError(t, os.WriteFile(b, must(bundle.Build(inBundle, bundle.BuildOptions{Revision: 1,
		Expires: time.Now().Add(time.Hour), Key: key})), 0o644))
	in := filepath.Join(dir, "in.json")
	require.NoError(t, os.WriteFile(in, []byte(`{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"DELETE","path":"/v1/meters/9/readings"}`), 0o644))

	out := runCLI(t, "policy", "eval", "--bundle", b, "--verify-keys", filepath.Join(dir, "verify.jwk"), "--input", in).ok(t).stdout
	var d policies.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	assert.True(t, d.Allow, "the image allows everything")
	assert.Equal(t, []string{"open/all"}, d.Rules)

	// The sources deny it; policy verify refuses the bundle for the mismatch.
	out = runCLI(t, "policy", "eval", "--input", in, gridDir).ok(t).stdout
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	assert.False(t, d.Allow)
	r := runCLI(t, "policy", "verify", "--verify-keys", filepath.Join(dir, "verify.jwk"), b)
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, bundle.ErrImageMismatch.Error())
}

// TestPolicyEvalUpstream: --upstream decides an upstream request as a
// caller-side guard does, with --fail, --now and strict input.
func TestPolicyEvalUpstream(t *testing.T) {
	dir := "../../policies/testdata/upstream"
	in := writeInput(t, `{"method":"PUT","path":"/v1/inverters/inv-0043/setpoint","now":"2027-01-15T00:00:00Z"}`)
	r := runCLI(t, "policy", "eval", "--upstream", "--input", in, "--fail", dir)
	assert.Equal(t, exitFailed, r.code)
	var got policies.UpstreamDecisionJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	assert.Equal(t, policies.UpstreamDecisionJSON{Rule: "der-upstreams/inverter-firmware", Reason: policies.ReasonVersionRange,
		Version: "2.9.1", TargetDevice: "inv-0043", Audit: true}, got)

	in = writeInput(t, `{"method":"POST","path":"/v1/status","upstreamKnown":true,"upstream":"spiffe://kuma.example/c",
"hostMetadata":{"envoy.lb":{"version":"5.0.1"}}}`)
	r = runCLI(t, "policy", "eval", "--upstream", "--input", in, dir).ok(t)
	got = policies.UpstreamDecisionJSON{}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	assert.True(t, got.Allow)
	assert.False(t, got.Pending)

	in = writeInput(t, `{"method":"POST","path":"/v1/status"}`)
	r = runCLI(t, "policy", "eval", "--upstream", "--input", in, dir).ok(t)
	assert.Contains(t, r.stdout, `"pending": true`)

	for _, bad := range []string{`{"method":"GET","path":"/","upstreamKnown":"yes"}`, `{"method":"GET","path":"/","spiffeID":"x"}`,
		`{"method":"GET","path":"/","hostMetadata":{"f":{"k":1}}}`, `{"method":"GET"}`} {
		r = runCLI(t, "policy", "eval", "--upstream", "--input", writeInput(t, bad), dir)
		assert.Equal(t, exitUsage, r.code, bad)
	}
}

// TestPolicyEvalEndUser: eval's input carries the end-user token's claims;
// the output names the scope a default deny lacks.
func TestPolicyEvalEndUser(t *testing.T) {
	const users = "../../policies/testdata/users"
	in := `{"spiffeID":"spiffe://grid.example/ns/istio-system/sa/ingress-gateway","method":"POST","path":"/api/v1/meters/m1",` +
		`"user":{"iss":"https://idp.utility.example","sub":"bob","scope":"meter:read","groups":["operators"],"tenant":"north"}}`
	r := runCLIStdin(t, in, "policy", "eval", "--input", "-", "--explain", users).ok(t)
	assert.Contains(t, r.stdout, `"scope": "meter:write"`)
	assert.Contains(t, r.stdout, `does not grant every scope`)
	in = strings.Replace(in, `"scope":"meter:read"`, `"scope":"meter:read meter:write"`, 1)
	assert.Contains(t, runCLIStdin(t, in, "policy", "eval", "--input", "-", users).ok(t).stdout, `"allow": true`)
	r = runCLIStdin(t, `{"method":"GET","path":"/","user":{"iss":1}}`, "policy", "eval", "--input", "-", users)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `claim "iss" must be a string`)
}
