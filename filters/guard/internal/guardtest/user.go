//go:build !wasip1

package guardtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/require"
)

// End-user fixtures: an authorisation server (IdP) and a gateway policy.
const (
	// IdPIssuer is the iss of the fixture's authorisation server.
	IdPIssuer = "https://idp.utility.example"
	// APIAudience is the audience of its access tokens.
	APIAudience = "https://api.grid.example"
	// Gateway is the ingress gateway's SPIFFE ID.
	Gateway = "spiffe://grid.example/ns/istio-system/sa/ingress-gateway"
)

// IdP is an authorisation server signing access tokens (ES256, kid idp-1).
type IdP struct {
	Key  *ecdsa.PrivateKey
	JWKS json.RawMessage
	Now  time.Time
}

// NewIdP returns an IdP with a fresh key.
func NewIdP(t testing.TB, now time.Time) *IdP {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return &IdP{Key: k, JWKS: JWKS(t, k, "idp-1"), Now: now}
}

// Policy returns the Issuer document for the IdP and a gateway policy:
// meter writes need scope meter:write and the operators group, reads
// meter:read; the sub claim is forwarded as x-user-subject.
func (p *IdP) Policy() []byte {
	return []byte(strings.ReplaceAll(`apiVersion: meshguard.io/v1
kind: Issuer
metadata: {name: utility-idp}
spec:
  issuer: `+IdPIssuer+`
  audiences: [`+APIAudience+`]
  algorithms: [ES256]
  jwks: 'JWKS'
  forwardedClaims:
    - {claim: sub, header: x-user-subject}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: edge}
spec:
  rules:
    - name: meter-writes
      effect: allow
      subjects: [`+Gateway+`]
      paths: [/api/v1/meters/**]
      methods: [POST]
      issuers: [`+IdPIssuer+`]
      scopes: [meter:write]
      claims:
        - {name: groups, contains: operators}
    - name: meter-reads
      effect: allow
      subjects: [`+Gateway+`]
      paths: [/api/v1/meters/**]
      methods: [GET]
      scopes: [meter:read]
`, "JWKS", string(p.JWKS)))
}

// Token returns an access token (typ at+jwt) for sub with scope, valid
// for an hour; mutate edits its claims.
func (p *IdP) Token(t testing.TB, sub, scope string, mutate func(map[string]any)) string {
	c := map[string]any{"iss": IdPIssuer, "sub": sub, "aud": APIAudience, "scope": scope, "client_id": "portal",
		"exp": p.Now.Add(time.Hour).Unix(), "iat": p.Now.Unix(), "jti": "at-" + sub, "groups": []string{"operators"}}
	if mutate != nil {
		mutate(c)
	}
	b, err := json.Marshal(c)
	require.NoError(t, err)
	h := jws.NewHeaders()
	require.NoError(t, h.Set(jws.KeyIDKey, "idp-1"))
	require.NoError(t, h.Set(jws.TypeKey, "at+jwt"))
	out, err := jws.Sign(b, jws.WithKey(jwa.ES256, p.Key, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

// EndUser enables end-user tokens in a Config (for its mutate), with a
// pseudonym key when key is not "".
func EndUser(key string) func(m map[string]any) {
	return func(m map[string]any) {
		e := map[string]any{}
		if key != "" {
			e["pseudonymKey"] = key
		}
		m["identity"].(map[string]any)["endUser"] = e
	}
}
