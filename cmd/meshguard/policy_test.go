package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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
	require.Contains(t, out, "20 passed, 0 failed, 20 total")

	// A failing expectation exits 1 and names the case.
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
	out, err = runFresh(t, newPolicyTestCmd(), dir)
	var ee *exitError
	require.True(t, errors.As(err, &ee))
	require.Equal(t, 1, ee.code)
	require.Contains(t, out, "FAIL wrong/reader may not read")
	require.Contains(t, out, "0 passed, 1 failed, 1 total")
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
	require.ErrorContains(t, err, "unknown field")
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
