package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/policies/bundle"
)

func TestWarnExpiry(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		expires time.Time
		want    string
	}{
		{now.Add(30 * 24 * time.Hour), ""},
		{now.Add(8 * 24 * time.Hour), ""},
		{now.Add(6 * 24 * time.Hour), "expires at 2026-12-04T12:00:00Z (in 144h0m0s)"},
		{now.Add(-time.Hour), "expired at 2026-11-28T11:00:00Z (1h0m0s ago)"},
		{now, "expired at"},
		{time.Time{}, ""},
	}
	for _, tc := range cases {
		var b bytes.Buffer
		warned := warnExpiry(&b, "bundle", 4, tc.expires, now)
		assert.Equal(t, tc.want != "", warned, tc.expires)
		if tc.want != "" {
			assert.Contains(t, b.String(), tc.want)
		} else {
			assert.Empty(t, b.String())
		}
	}
}

// keyPair writes signing.jwk and verify.jwk like `meshguard keys generate`.
// openPolicy is a policy file that allows every request.
const openPolicy = "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: open}\nspec:\n  rules:\n    - name: all\n      effect: allow\n"

func keyPair(t *testing.T) (dir string, sign func(rev uint64, created, expires time.Time, scope ...string) []byte) {
	dir = t.TempDir()
	runCLI(t, "keys", "generate", "--out", dir).ok(t)
	raw, err := os.ReadFile(filepath.Join(dir, "signing.jwk"))
	require.NoError(t, err)
	key, err := bundle.ParseSigningKey(raw)
	require.NoError(t, err)
	return dir, func(rev uint64, created, expires time.Time, scope ...string) []byte {
		b, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
			bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: rev, Created: created, Expires: expires, Scope: scope, Key: key}})
		require.NoError(t, err)
		return b
	}
}

func TestCheckGuardPolicy(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	dir, sign := keyPair(t)
	_, signOther := keyPair(t)
	pub, err := os.ReadFile(filepath.Join(dir, "verify.jwk"))
	require.NoError(t, err)
	priv, err := os.ReadFile(filepath.Join(dir, "signing.jwk"))
	require.NoError(t, err)
	good := sign(1, now.Add(-time.Hour), now.Add(20*24*time.Hour), "grid-prod")
	fileConfig := func(keys []byte, inline []byte) []byte {
		b, _ := json.Marshal(map[string]any{"policy": map[string]any{"verifyKeys": json.RawMessage(keys),
			"inline": base64.StdEncoding.EncodeToString(inline), "scope": "grid-prod"}})
		return b
	}
	cases := []struct {
		name    string
		in      envoy.GuardInput
		err     string
		warning string
	}{
		{name: "good inline bundle", in: envoy.GuardInput{VerifyKeys: pub, InlineBundle: good, Scope: "grid-prod"}},
		{name: "channel only", in: envoy.GuardInput{VerifyKeys: pub, Channel: "grid-prod", Scope: "grid-prod"}},
		{name: "private key", in: envoy.GuardInput{VerifyKeys: priv, Channel: "prod"}, err: "private"},
		{name: "private key in a config file", in: envoy.GuardInput{File: fileConfig(priv, good)}, err: "never signing.jwk"},
		{name: "good config file", in: envoy.GuardInput{File: fileConfig(pub, good)}},
		{name: "other signer", in: envoy.GuardInput{VerifyKeys: pub, InlineBundle: signOther(1, now.Add(-time.Hour), now.Add(20*24*time.Hour))},
			err: "unknown signing key"},
		{name: "expired", in: envoy.GuardInput{VerifyKeys: pub, InlineBundle: sign(1, now.Add(-48*time.Hour), now.Add(-time.Hour))}, err: "expired"},
		{name: "wrong scope", in: envoy.GuardInput{VerifyKeys: pub, InlineBundle: good, Scope: "grid-test"}, err: "scope"},
		{name: "inline without keys", in: envoy.GuardInput{InlineBundle: good}, err: "needs verification keys"},
		{name: "expires soon", in: envoy.GuardInput{VerifyKeys: pub, InlineBundle: sign(1, now.Add(-time.Hour), now.Add(48*time.Hour))},
			warning: "warning: inline bundle revision 1 expires at"},
		{name: "channel and scope differ", in: envoy.GuardInput{VerifyKeys: pub, Channel: "prod", Scope: "grid-prod"},
			warning: `channel "prod" and scope "grid-prod" differ`},
		{name: "JWT trust domain with a private key", in: envoy.GuardInput{VerifyKeys: pub, Channel: "grid-prod",
			JWTTrustDomains: map[string][]byte{"grid.example": priv}}, err: `--jwt-trust-domain grid.example: key 0 holds private key material ("d")`},
		{name: "JWT trust domain, public set", in: envoy.GuardInput{VerifyKeys: pub, Channel: "grid-prod",
			JWTTrustDomains: map[string][]byte{"grid.example": pub}}},
		{name: "symmetric key in a config file's device issuers", in: envoy.GuardInput{File: []byte(`{"policy":{"verifyKeys":` + string(pub) +
			`},"identity":{"device":{"issuers":{"https://oem.example":{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}}}}}`)},
			err: `identity.device.issuers.https://oem.example: key 0 holds private key material ("k")`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var warn bytes.Buffer
			err := checkGuardPolicy(tc.in, &warn, now)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			if tc.warning == "" {
				assert.Empty(t, warn.String())
			} else {
				assert.Contains(t, warn.String(), tc.warning)
			}
		})
	}
}

// TestRenderRefusesBeforeWriting: the CLI exits 1 and writes no file.
func TestRenderRefusesBeforeWriting(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	dir, sign := keyPair(t)
	expired := filepath.Join(dir, "expired.bundle")
	require.NoError(t, os.WriteFile(expired, sign(2, now.Add(-48*time.Hour), now.Add(-time.Minute)), 0o644))
	for name, args := range map[string][]string{
		"signing key":    {"--verify-keys", filepath.Join(dir, "signing.jwk"), "--channel", "prod"},
		"expired inline": {"--verify-keys", filepath.Join(dir, "verify.jwk"), "--inline-bundle", expired},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "mpp.yaml")
			r := runCLI(t, append(append([]string{"render", "kuma"}, args...), "--local-module", "/etc/meshguard/guard.wasm", "--output-file", out)...)
			assert.Equal(t, exitFailed, r.code, r.stderr)
			assert.NoFileExists(t, out)
		})
	}
}

func TestPolicyBundleWarnsNearExpiry(t *testing.T) {
	dir, _ := keyPair(t)
	src := "../../examples/grid/policies"
	r := runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "signing.jwk"), "--revision", "1",
		"--expires", "72h", "--output-file", filepath.Join(dir, "b.bundle"), src).ok(t)
	assert.Contains(t, r.stderr, "warning: bundle revision 1 expires at")
	r = runCLI(t, "policy", "bundle", "--signing-key", filepath.Join(dir, "signing.jwk"), "--revision", "1",
		"--created", "2020-01-01T00:00:00Z", "--output-file", filepath.Join(dir, "b.bundle"), src).ok(t)
	assert.Contains(t, r.stderr, "warning: bundle revision 1 expired at 2020-01-31T00:00:00Z")
}

func TestRenderExpiryGrace(t *testing.T) {
	args := []string{"render", "envoy", "--distributor", "http://127.0.0.1:8080", "--local-module", "/etc/meshguard/guard.wasm",
		"--verify-keys", keysFile, "--channel", "dev"}
	out := runCLI(t, append(args, "--expiry-grace", "24h")...).ok(t).stdout
	assert.Contains(t, out, `expiryGrace`)
	assert.Contains(t, out, `24h0m0s`)
	out = runCLI(t, args...).ok(t).stdout
	assert.NotContains(t, out, "expiryGrace", "fail closed at expiry by default")
	r := runCLI(t, append(args, "--expiry-grace", "200h")...)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "policy.expiryGrace")
}

func FuzzRefusePrivateJWKs(f *testing.F) {
	f.Add(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}`)
	f.Add(`{"kty":"EC","d":"AA"}`)
	f.Add(`{"keys":[{"kty":"oct","k":"AA"}]}`)
	f.Add(`[1]`)
	f.Fuzz(func(t *testing.T, in string) {
		if refusePrivateJWKs([]byte(in)) != nil {
			return
		}
		// Accepted: no key object of the set (or the single key) has d or k.
		var doc struct {
			Keys []map[string]json.RawMessage `json:"keys"`
		}
		if json.Unmarshal([]byte(in), &doc) == nil {
			for _, k := range doc.Keys {
				_, d := k["d"]
				_, kk := k["k"]
				require.False(t, d || kk, "%q accepted with private material", in)
			}
		}
	})
}
