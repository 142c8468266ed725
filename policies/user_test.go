//go:build !wasip1

package policies

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadUsers(t testing.TB) (*Set, *Engine) {
	t.Helper()
	files, err := ReadPaths("testdata/users")
	require.NoError(t, err)
	s, err := Load(files)
	require.NoError(t, err)
	e, err := Compile(s)
	require.NoError(t, err)
	return s, e
}

func TestUserPolicyTests(t *testing.T) {
	s, e := loadUsers(t)
	img, _ := roundTrip(t, e)
	for _, eng := range []*Engine{e, img} {
		results := RunTests(s, eng)
		require.Len(t, results, 9)
		for _, r := range results {
			assert.True(t, r.Passed, "%s: %v (decision %+v)", r.Test, r.Failures, r.Decision)
		}
	}
}

func TestUserIssuersInImage(t *testing.T) {
	_, e := loadUsers(t)
	img, _ := roundTrip(t, e)
	for _, eng := range []*Engine{e, img} {
		l := eng.Issuers()
		require.Len(t, l, 1)
		is := l[0]
		assert.Equal(t, "utility-idp", is.Name)
		assert.Equal(t, "https://idp.utility.example", is.URL)
		assert.Equal(t, []string{"https://api.grid.example"}, is.Audiences)
		assert.Equal(t, []string{"ES256"}, is.Algorithms)
		assert.Equal(t, DefaultUserHeader, is.Header)
		assert.True(t, is.StrictType)
		assert.Equal(t, DefaultIssuerLeeway, is.Leeway)
		assert.Equal(t, []ForwardedClaim{{Claim: "sub", Header: "x-user-subject"}}, stripPos(is.ForwardedClaims))
		assert.True(t, eng.UsesUsers())
		assert.Equal(t, 1, eng.Counts().Issuers)
	}
}

func stripPos(l []ForwardedClaim) []ForwardedClaim {
	out := make([]ForwardedClaim, len(l))
	for i, f := range l {
		out[i] = ForwardedClaim{Claim: f.Claim, Header: f.Header}
	}
	return out
}

func user(t *testing.T, js string) *User {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(js))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return NewUser(m)
}

// TestClaimConditions pins the semantics of equals, contains and in on
// every claim kind.
func TestClaimConditions(t *testing.T) {
	cond := func(op ClaimOp, vals ...string) *cclaim {
		c := &cclaim{name: "c", op: op}
		for _, v := range vals {
			c.values = append(c.values, newCValue(v))
		}
		return c
	}
	cases := []struct {
		claim string
		c     *cclaim
		want  bool
	}{
		{`"a"`, cond(ClaimEquals, "a"), true},
		{`"a"`, cond(ClaimEquals, "A"), false},
		{`"1"`, cond(ClaimEquals, "1"), true},
		{`1`, cond(ClaimEquals, "1.0"), true},
		{`1e2`, cond(ClaimEquals, "100"), true},
		{`1`, cond(ClaimEquals, "01"), false}, // not a JSON number: a string value
		{`true`, cond(ClaimEquals, "true"), true},
		{`"true"`, cond(ClaimEquals, "true"), true}, // a string claim compares its text
		{`false`, cond(ClaimEquals, "true"), false},
		{`["a"]`, cond(ClaimEquals, "a"), false}, // equals never matches an array
		{`null`, cond(ClaimEquals, "null"), false},
		{`{"a":1}`, cond(ClaimEquals, "a"), false},
		{`["a","b"]`, cond(ClaimContains, "b"), true},
		{`["a","b"]`, cond(ClaimContains, "c"), false},
		{`[1,2]`, cond(ClaimContains, "2.0"), true},
		{`"a"`, cond(ClaimContains, "a"), true}, // a scalar is a one-element list
		{`"ab"`, cond(ClaimContains, "a"), false},
		{`["a",["b"]]`, cond(ClaimContains, "a"), false}, // nested arrays: kind other
		{`"x"`, cond(ClaimIn, "x", "y"), true},
		{`3`, cond(ClaimIn, "1", "3"), true},
		{`["x"]`, cond(ClaimIn, "x"), false}, // in never matches an array
		{`"z"`, cond(ClaimIn, "x", "y"), false},
	}
	for _, c := range cases {
		u := user(t, `{"c":`+c.claim+`}`)
		assert.Equal(t, c.want, c.c.matches(u), "%s %s %v", c.claim, c.c.op, c.c.values)
	}
	assert.False(t, cond(ClaimEquals, "a").matches(user(t, `{}`)), "a missing claim never matches")
}

func TestUserScopes(t *testing.T) {
	u := user(t, `{"scope":"a  b a","scp":["c","a","d e",7]}`)
	assert.Equal(t, []string{"a", "b", "c"}, u.Scopes)
	u = user(t, `{"scp":"x y"}`)
	assert.Equal(t, []string{"x", "y"}, u.Scopes)
	u = user(t, `{"scope":7}`)
	assert.Empty(t, u.Scopes)
}

func TestUserDecideAllocs(t *testing.T) {
	_, e := loadUsers(t)
	req := &Request{SPIFFEID: "spiffe://grid.example/ns/istio-system/sa/ingress-gateway", Method: "POST", Path: "/api/v1/meters/m1",
		User: user(t, `{"iss":"https://idp.utility.example","sub":"a","scope":"meter:write","groups":["operators"],"tenant":"north"}`),
		Now:  time.Now().UnixNano()}
	var d Decision
	allocs := testing.AllocsPerRun(100, func() { e.Decide(req, &d) })
	assert.True(t, d.Allow)
	assert.Zero(t, allocs)
}

func TestIssuerParseErrors(t *testing.T) {
	jwks := `'{"keys":[{"alg":"ES256","crv":"P-256","kid":"k","kty":"EC","x":"R6dpe1bZ0WaVwH4RRITBoRhokWkjYO8K10GLhCf47uk","y":"fbaXByBIQLPabCGaPSWiNbE9l1t-zUFFatSdJmOm_yU"}]}'`
	doc := func(spec string) string {
		return "apiVersion: meshguard.io/v1\nkind: Issuer\nmetadata: {name: i}\nspec:\n" + spec
	}
	cases := map[string]struct{ src, want string }{
		"http issuer": {doc("  issuer: http://idp\n  audiences: [a]\n  algorithms: [ES256]\n  jwks: " + jwks + "\n"),
			`f.yaml:5:11: issuer "http://idp" is not an https URL`},
		"hmac": {doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [HS256]\n  jwks: " + jwks + "\n"),
			`f.yaml:7:16: algorithm "HS256" not allowed`},
		"none": {doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [none]\n  jwks: " + jwks + "\n"),
			`f.yaml:7:16: algorithm "none" not allowed`},
		"missing audiences": {doc("  issuer: https://idp\n  algorithms: [ES256]\n  jwks: " + jwks + "\n"),
			`f.yaml:5:3: Issuer spec: missing required field "audiences"`},
		"bad jwks": {doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [ES256]\n  jwks: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}'\n"),
			`f.yaml:8:9: jwks:`},
		"leeway": {doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [ES256]\n  jwks: " + jwks + "\n  leeway: 1h\n"),
			`f.yaml:9:11: leeway 1h0m0s exceeds 5m0s`},
		"duplicate iss": {doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [ES256]\n  jwks: "+jwks+"\n") + "---\n" +
			strings.Replace(doc("  issuer: https://idp\n  audiences: [a]\n  algorithms: [ES256]\n  jwks: "+jwks+"\n"), "name: i", "name: j", 1),
			`f.yaml:12:11: issuer "j": another Issuer ("i", f.yaml:3:11) declares "https://idp"`},
	}
	rule := func(cond string) string {
		return "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: w}\nspec:\n  rules:\n    - name: r\n      effect: allow\n" + cond
	}
	cases["scope with space"] = struct{ src, want string }{rule("      scopes: [\"a b\"]\n"), `f.yaml:8:16: scope "a b" is not an RFC 6749 scope-token`}
	cases["two ops"] = struct{ src, want string }{rule("      claims:\n        - {name: x, equals: a, in: [b]}\n"), `f.yaml:9:11: claim condition needs exactly one of equals, contains or in`}
	cases["empty in"] = struct{ src, want string }{rule("      claims:\n        - {name: x, in: []}\n"), `f.yaml:9:25: in must list at least one value`}
	cases["list value"] = struct{ src, want string }{rule("      claims:\n        - {name: x, equals: [a]}\n"), `f.yaml:9:29: equals must be a string, number or boolean`}
	cases["hex number"] = struct{ src, want string }{rule("      claims:\n        - {name: x, equals: 0x10}\n"), `f.yaml:9:29: equals: number "0x10" is not in JSON form`}
	cases["issuer not url"] = struct{ src, want string }{rule("      issuers: [idp]\n"), `is not an https URL`}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(map[string][]byte{"f.yaml": []byte(c.src)})
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestInputUser(t *testing.T) {
	in, err := ParseInput([]byte(`{"method":"GET","path":"/","user":{"iss":"https://i","sub":"s","scp":["a"],"n":1.5}}`))
	require.NoError(t, err)
	r := in.Request()
	require.NotNil(t, r.User)
	assert.Equal(t, "https://i", r.User.Issuer)
	assert.Equal(t, "s", r.User.Subject)
	assert.Equal(t, []string{"a"}, r.User.Scopes)
	assert.Equal(t, Claim{Kind: ClaimNumber, Str: "1.5", Num: 1.5}, r.User.Claims["n"])
	for js, want := range map[string]string{
		`{"method":"GET","path":"/","user":[]}`:                     "user must be an object",
		`{"method":"GET","path":"/","user":{"a":1,"a":2}}`:          `member "a" given twice`,
		`{"method":"GET","path":"/","user":{"x":{"a":1,"a":2}}}`:    `member "a" given twice`,
		`{"method":"GET","path":"/","user":{"iss":1}}`:              `claim "iss" must be a string`,
		`{"method":"GET","path":"/","user":{"scp":[1]}}`:            `claim "scp" must be a string or an array of strings`,
		`{"method":"GET","path":"/","user":{"x":` + deep(40) + `}}`: "nested too deeply",
	} {
		_, err := ParseInput([]byte(js))
		require.Error(t, err, js)
		assert.Contains(t, err.Error(), want, js)
	}
}

func deep(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

func TestUserWarnings(t *testing.T) {
	s, _ := loadUsers(t)
	for _, w := range Warnings(s) {
		assert.NotContains(t, w.Msg, "no Issuer document declares", "the users set declares its issuer")
	}
	src := "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: w}\nspec:\n  rules:\n" +
		"    - {name: r, effect: allow, issuers: [https://other.example], rateLimit: {per: user, requests: 1, period: 1s}}\n" +
		"    - {name: q, effect: allow, paths: [/q], rateLimit: {per: user, requests: 1, period: 1s}}\n"
	s2, err := Load(map[string][]byte{"w.yaml": []byte(src)})
	require.NoError(t, err)
	var msgs []string
	for _, w := range Warnings(s2) {
		msgs = append(msgs, w.Error())
	}
	assert.Contains(t, msgs, `w.yaml:6:42: warning: rule "w/r" names issuer "https://other.example" that no Issuer document declares: only a guard that reads jwt_authn claims (identity.endUser.jwtAuthn) can match it`)
	assert.Contains(t, strings.Join(msgs, "\n"), `rule "w/q" limits per end user but has no end-user condition`)
}
