//go:build !wasip1

package guardtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies/bundle"
)

// Grid callers the grid policies know.
const (
	Reader     = "spiffe://grid.example/ns/metering/sa/meter-reader"
	OldReader  = "spiffe://grid.example/ns/metering/sa/old-reader" // revoked
	Controller = "spiffe://grid.example/ns/der/sa/controller"
	Invoicer   = "spiffe://grid.example/ns/billing/sa/invoicer"
	// Audience is what the fixture's tokens are for.
	Audience = "grid-apis"
	// DeviceIssuer issues the fixture's device tokens.
	DeviceIssuer = "https://mfr.example"
)

// Validity is how long the fixture's bundles are valid from Now.
const Validity = 30 * 24 * time.Hour

// Fixture holds the keys and the policy files the scenarios share.
type Fixture struct {
	// Now is the time bundles and tokens are made for.
	Now       time.Time
	BundleKey jwk.Key
	BundlePub jwk.Set
	Grid      *ecdsa.PrivateKey // signs JWT-SVIDs of grid.example (kid grid-1)
	GridJWKS  json.RawMessage
	Device    *ecdsa.PrivateKey // signs device tokens of DeviceIssuer (kid mfr-1)
	DevJWKS   json.RawMessage
	// Files are the grid policies (policies/*.yaml, no tests).
	Files map[string][]byte
}

// JWKS returns the public JWK Set of k with kid.
func JWKS(t testing.TB, k *ecdsa.PrivateKey, kid string) json.RawMessage {
	pub, err := jwk.FromRaw(k.Public())
	require.NoError(t, err)
	require.NoError(t, pub.Set(jwk.KeyIDKey, kid))
	set := jwk.NewSet()
	require.NoError(t, set.AddKey(pub))
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

// New returns a fixture with fresh keys for time now.
func New(t testing.TB, now time.Time) *Fixture {
	f := &Fixture{Now: now, Files: map[string][]byte{}}
	var err error
	f.BundleKey, f.BundlePub, err = bundle.GenerateKey(bundle.AlgEd25519)
	require.NoError(t, err)
	f.Grid, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Device, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.GridJWKS = JWKS(t, f.Grid, "grid-1")
	f.DevJWKS = JWKS(t, f.Device, "mfr-1")
	dir := gridDir(t)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.yaml") || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		f.Files[bundle.SourcesDir+e.Name()] = b
	}
	return f
}

// gridDir is policies/testdata/grid, found from this file.
func gridDir(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "policies", "testdata", "grid")
}

// WithPolicy returns the grid files plus (or replacing) one policy file.
func (f *Fixture) WithPolicy(name string, body []byte) map[string][]byte {
	files := maps.Clone(f.Files)
	files[bundle.SourcesDir+name] = body
	return files
}

// Big returns the grid policies plus a generated workload policy, so the
// bundle holds about n rules: rule i allows GET /v1/bulk/i/** to
// spiffe://grid.example/ns/bulk/sa/w<i>.
func (f *Fixture) Big(n int) map[string][]byte {
	var sb strings.Builder
	sb.WriteString("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata:\n  name: bulk\nspec:\n  rules:\n")
	for i := range n {
		fmt.Fprintf(&sb, "    - name: r%d\n      effect: allow\n      subjects: [spiffe://grid.example/ns/bulk/sa/w%d]\n      paths: [/v1/bulk/%d/**]\n      methods: [GET]\n", i, i, i)
	}
	return f.WithPolicy("bulk.yaml", []byte(sb.String()))
}

func (f *Fixture) buildOptions(rev uint64) bundle.BuildOptions {
	return bundle.BuildOptions{Revision: rev, Created: f.Now.Add(-time.Hour), Expires: f.Now.Add(Validity), Key: f.BundleKey}
}

// Bundle packs a signed bundle of files (nil: the grid policies) as
// `meshguard policy bundle` does.
func (f *Fixture) Bundle(t testing.TB, rev uint64, files map[string][]byte) []byte {
	if files == nil {
		files = f.Files
	}
	b, err := bundle.Pack(files, bundle.PackOptions{BuildOptions: f.buildOptions(rev)})
	require.NoError(t, err)
	return b
}

// Signed signs files as they are, with no engine image unless files hold
// one: bundles the guard must refuse.
func (f *Fixture) Signed(t testing.TB, rev uint64, files map[string][]byte) []byte {
	b, err := bundle.Build(files, f.buildOptions(rev))
	require.NoError(t, err)
	return b
}

// Config returns a guard configuration: the grid bundle inline, mTLS peer,
// JWT-SVID (grid.example keyed, partner.example without keys), device
// tokens and Istio peer metadata, x-meshguard-subject stripped. mutate
// edits it as JSON values before it is encoded.
func (f *Fixture) Config(t testing.TB, mutate func(m map[string]any)) []byte {
	pub, err := json.Marshal(f.BundlePub)
	require.NoError(t, err)
	m := map[string]any{
		"policy": map[string]any{"inline": base64.StdEncoding.EncodeToString(f.Bundle(t, 1, nil)), "verifyKeys": json.RawMessage(pub)},
		"identity": map[string]any{
			"peerCertificate": true,
			"jwtSvid": map[string]any{"audiences": []string{Audience},
				"trustDomains": map[string]any{"grid.example": f.GridJWKS, "partner.example": json.RawMessage(`{"keys":[]}`)}},
			"device":            map[string]any{"issuers": map[string]any{DeviceIssuer: f.DevJWKS}, "audiences": []string{Audience}},
			"istioPeerMetadata": true,
			"stripHeaders":      []string{"x-meshguard-subject"},
		},
	}
	if mutate != nil {
		mutate(m)
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// Inline sets the inline bundle of a configuration (for Config's mutate).
func Inline(data []byte) func(m map[string]any) {
	return func(m map[string]any) {
		m["policy"].(map[string]any)["inline"] = base64.StdEncoding.EncodeToString(data)
	}
}

// Sign signs claims as a compact JWS (typ JWT) with key, kid and alg.
func Sign(t testing.TB, key *ecdsa.PrivateKey, kid string, alg jwa.SignatureAlgorithm, claims map[string]any) string {
	b, err := json.Marshal(claims)
	require.NoError(t, err)
	h := jws.NewHeaders()
	require.NoError(t, h.Set(jws.KeyIDKey, kid))
	require.NoError(t, h.Set(jws.TypeKey, "JWT"))
	out, err := jws.Sign(b, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

// SVID returns a JWT-SVID for sub signed by the grid key, valid for an
// hour from Now; mutate edits its claims.
func (f *Fixture) SVID(t testing.TB, sub string, mutate func(map[string]any)) string {
	c := map[string]any{"sub": sub, "aud": Audience, "exp": f.Now.Add(time.Hour).Unix(), "iat": f.Now.Unix()}
	if mutate != nil {
		mutate(c)
	}
	return Sign(t, f.Grid, "grid-1", jwa.ES256, c)
}

// DeviceToken returns a device token (firmware 3.2.0) for id.
func (f *Fixture) DeviceToken(t testing.TB, id, class, vendor string) string {
	return Sign(t, f.Device, "mfr-1", jwa.ES256, map[string]any{"iss": DeviceIssuer, "aud": Audience,
		"exp": f.Now.Add(time.Hour).Unix(), "ueid": id, "hwmodel": class, "oemid": vendor, "swversion": "3.2.0"})
}

// ControllerToken returns the controller's JWT-SVID of an approved build.
func (f *Fixture) ControllerToken(t testing.TB) string {
	return f.SVID(t, Controller, func(c map[string]any) { c["swversion"] = "2.3.1" })
}
