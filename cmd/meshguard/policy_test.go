package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

const gridDir = "../../policies/testdata/grid"

func TestPolicyCheck(t *testing.T) {
	out, err := runFresh(t, newPolicyCheckCmd(), gridDir)
	require.NoError(t, err)
	require.Contains(t, out, "ok: 5 workload rules, 4 device rules")

	_, err = runFresh(t, newPolicyCheckCmd(), "../../policies/testdata/errors/shadow.yaml")
	var ee *exitError
	require.True(t, errors.As(err, &ee))
	require.Equal(t, 1, ee.code)
	require.Contains(t, err.Error(), "3 problem(s) found")
}

func TestPolicyTestVerb(t *testing.T) {
	out, err := runFresh(t, newPolicyTestCmd(), gridDir)
	require.NoError(t, err)
	require.Contains(t, out, "24 passed, 0 failed, 24 total")

	// A failing expectation exits 1 and names the case.
	dir := gridWithWrongTest(t)
	out, err = runFresh(t, newPolicyTestCmd(), dir)
	var ee *exitError
	require.True(t, errors.As(err, &ee))
	require.Equal(t, 1, ee.code)
	require.Contains(t, out, "FAIL wrong/reader may not read")
	require.Contains(t, out, "0 passed, 1 failed, 1 total")
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
	in := filepath.Join(t.TempDir(), "in.json")
	require.NoError(t, os.WriteFile(in, []byte(`{"spiffeID":"spiffe://grid.example/ns/billing/sa/billing",
"device":{"id":"3e4f45ab31edfe5b67e343e5e4562e31984e23e5","class":"meter"},
"method":"POST","path":"/v1/meters/3e4f45ab31edfe5b67e343e5e4562e31984e23e5/disconnect"}`), 0o644))
	out, err := runFresh(t, newPolicyEvalCmd(), "--input", in, gridDir)
	require.NoError(t, err)
	var d policies.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	require.True(t, d.Allow)
	require.Equal(t, []string{"meters/remote-disconnect"}, d.Rules)
	require.True(t, d.Audit)
	require.NotNil(t, d.RateLimit)
	require.Equal(t, policies.RateLimitJSON{Key: "3e4f45ab31edfe5b67e343e5e4562e31984e23e5", PerSecond: 0.5, Burst: 1}, *d.RateLimit)

	require.NoError(t, os.WriteFile(in, []byte(`{"method":"GET","path":"/","bogus":1}`), 0o644))
	_, err = runFresh(t, newPolicyEvalCmd(), "--input", in, gridDir)
	require.ErrorContains(t, err, "unknown member")
	_, err = runFresh(t, newPolicyEvalCmd(), "--input", in, "--bundle", "x.bundle", gridDir)
	require.ErrorContains(t, err, "either --bundle or policy files")
}

func TestPolicyEvalBundle(t *testing.T) {
	dir := t.TempDir()
	_, err := runFresh(t, newKeysGenerateCmd(), "--out", filepath.Join(dir, "keys"))
	require.NoError(t, err)
	b := filepath.Join(dir, "p.bundle")
	_, err = runFresh(t, newPolicyBundleCmd(), "--signing-key", filepath.Join(dir, "keys", "signing.jwk"), "--revision", "3", "-o", b, gridDir)
	require.NoError(t, err)
	in := filepath.Join(dir, "in.json")
	require.NoError(t, os.WriteFile(in, []byte(`{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/9/readings"}`), 0o644))
	out, err := runFresh(t, newPolicyEvalCmd(), "--bundle", b, "--verify-keys", filepath.Join(dir, "keys", "verify.jwk"), "--input", in)
	require.NoError(t, err)
	require.Contains(t, out, `"meter-api/readers-read"`)
	_, err = runFresh(t, newPolicyEvalCmd(), "--bundle", b, "--input", in)
	require.ErrorContains(t, err, "--verify-keys")
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
		_, err := runFresh(t, newPolicyEvalCmd(), "--input", writeInput(t, body), gridDir)
		var ee *exitError
		require.True(t, errors.As(err, &ee), "%s: %v", body, err)
		assert.Equal(t, 2, ee.code, body)
		assert.ErrorContains(t, err, msg, body)
	}
}

func TestPolicyEvalStdinFailExplainPaths(t *testing.T) {
	cmd := newPolicyEvalCmd()
	cmd.SetIn(strings.NewReader(`{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/m-17/readings"}`))
	out, err := runFresh(t, cmd, "--input", "-", "--fail", gridDir)
	require.NoError(t, err, "an allow passes --fail")
	assert.Contains(t, out, `"meter-api/readers-read"`)

	// A deny with --fail exits 1 and still prints the decision.
	deny := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"DELETE","path":"/v1/meters/m-17/readings"}`)
	out, err = runFresh(t, newPolicyEvalCmd(), "--input", deny, "--fail", gridDir)
	var ee *exitError
	require.True(t, errors.As(err, &ee))
	assert.Equal(t, 1, ee.code)
	assert.Contains(t, out, `"allow": false`)
	_, err = runFresh(t, newPolicyEvalCmd(), "--input", deny, gridDir)
	require.NoError(t, err, "without --fail a deny is a result, not an error")

	// --explain names the version rule, the version and the unselected policy.
	ctlReq := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/der/sa/controller","claims":{"swversion":"2.4.1"},
"device":{"id":"inv-0042","class":"inverter","vendor":"acme","firmware":"3.2.0"},"method":"PUT","path":"/v1/inverters/inv-0042/setpoint"}`)
	out, err = runFresh(t, newPolicyEvalCmd(), "--input", ctlReq, "--explain", gridDir)
	require.NoError(t, err)
	var got evalOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.NotNil(t, got.Explain)
	assert.Contains(t, got.Explain.VersionRules, policies.VersionCheck{Rule: "der-controller-versions/controller-releases", Version: "2.4.1", Result: policies.ReasonVersionDenied})
	assert.Contains(t, got.Explain.DevicePolicies, policies.DeviceExplanation{Policy: "inverters", Why: `device vendor "acme" is not in ["voltwerk" "sunbridge"]`})
	assert.True(t, got.Write)

	// Non-canonical paths: refused by default, normalised on request.
	dotted := writeInput(t, `{"spiffeID":"spiffe://grid.example/ns/metering/sa/meter-reader","method":"GET","path":"/v1/meters/x/../m-17/%72eadings"}`)
	out, err = runFresh(t, newPolicyEvalCmd(), "--input", dotted, gridDir)
	require.NoError(t, err)
	assert.Contains(t, out, policies.ErrPathDotSegment.Error())
	out, err = runFresh(t, newPolicyEvalCmd(), "--input", dotted, "--paths", "normalize", gridDir)
	require.NoError(t, err)
	assert.Contains(t, out, `"allow": true`)
	_, err = runFresh(t, newPolicyEvalCmd(), "--input", dotted, "--paths", "tolerant", gridDir)
	assert.ErrorContains(t, err, "refuse, normalize or merge-slashes")
}

func TestPolicyTestOutputs(t *testing.T) {
	out, err := runFresh(t, newPolicyTestCmd(), "-o", "json", gridDir)
	require.NoError(t, err)
	var rep testReportJSON
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, rep.Total, rep.Passed)
	assert.Positive(t, rep.Total)
	assert.Regexp(t, `^grid_test\.yaml:\d+:\d+$`, filepath.Base(rep.Results[0].Position))

	out, err = runFresh(t, newPolicyTestCmd(), "-o", "junit", gridDir)
	require.NoError(t, err)
	var suites junitSuites
	require.NoError(t, xml.Unmarshal([]byte(out), &suites))
	assert.Equal(t, rep.Total, suites.Tests)
	require.Len(t, suites.Suites, 1)
	assert.Equal(t, "grid", suites.Suites[0].Name)
	assert.Zero(t, suites.Failures)

	// A failing case is in the report and exits 1.
	dir := gridWithWrongTest(t)
	out, err = runFresh(t, newPolicyTestCmd(), "-o", "junit", dir)
	var ee *exitError
	require.True(t, errors.As(err, &ee))
	assert.Equal(t, 1, ee.code)
	require.NoError(t, xml.Unmarshal([]byte(out), &suites))
	assert.Equal(t, 1, suites.Failures)
	last := suites.Suites[len(suites.Suites)-1]
	require.Equal(t, "wrong", last.Name)
	require.NotNil(t, last.Cases[0].Failure)
	assert.Contains(t, last.Cases[0].Failure.Message, "allow: want false, got true")
	_, err = runFresh(t, newPolicyTestCmd(), "-o", "yaml", dir)
	assert.ErrorContains(t, err, "text, json or junit")
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
	var errOut bytes.Buffer
	out, err := runFreshErr(t, newPolicyCheckCmd(), &errOut, dir)
	require.NoError(t, err)
	assert.Contains(t, out, "1 warnings")
	assert.Contains(t, errOut.String(), `p.yaml:15:7: warning: workload rule "ops/all" allows writes on paths DevicePolicy "inverters" governs`)
	_, err = runFreshErr(t, newPolicyCheckCmd(), &errOut, "--fail-on-warnings", dir)
	assert.ErrorContains(t, err, "1 warning(s)")
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
	_, err := runFresh(t, newKeysGenerateCmd(), "--out", dir)
	require.NoError(t, err)
	key := must(bundle.ParseSigningKey(must(os.ReadFile(filepath.Join(dir, "signing.jwk")))))
	allowAll := must(policies.CompileFiles(map[string][]byte{"w.yaml": []byte(openPolicy)}))
	files, err := policies.ReadPaths(gridDir)
	require.NoError(t, err)
	inBundle := map[string][]byte{
		bundle.ImageFile: must(allowAll.MarshalBinary()),
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

	out, err := runFresh(t, newPolicyEvalCmd(), "--bundle", b, "--verify-keys", filepath.Join(dir, "verify.jwk"), "--input", in)
	require.NoError(t, err)
	var d policies.DecisionJSON
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	assert.True(t, d.Allow, "the image allows everything")
	assert.Equal(t, []string{"open/all"}, d.Rules)

	// The sources deny it; policy verify refuses the bundle for the mismatch.
	out, err = runFresh(t, newPolicyEvalCmd(), "--input", in, gridDir)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	assert.False(t, d.Allow)
	_, err = runFresh(t, newPolicyVerifyCmd(), "--verify-keys", filepath.Join(dir, "verify.jwk"), b)
	assert.ErrorIs(t, err, bundle.ErrImageMismatch)
}
