package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

// regClient calls the registry API with one organisation's token and
// checks every request and answer against the served OpenAPI document.
type regClient struct {
	t      *testing.T
	base   string
	token  string
	router routers.Router
}

type regResp struct {
	code int
	hdr  http.Header
	body []byte
}

func (r regResp) problem(t *testing.T) registry.Problem {
	var p registry.Problem
	require.NoError(t, json.Unmarshal(r.body, &p), string(r.body))
	return p
}

func (r regResp) record(t *testing.T) registry.Record {
	var rec registry.Record
	require.NoError(t, json.Unmarshal(r.body, &rec), string(r.body))
	return rec
}

func (c *regClient) do(method, path string, body any, hdr map[string]string) regResp {
	t := c.t
	t.Helper()
	var rb []byte
	switch b := body.(type) {
	case nil:
	case string:
		rb = []byte(b)
	default:
		var err error
		rb, err = json.Marshal(b)
		require.NoError(t, err)
	}
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(rb))
	require.NoError(t, err)
	if rb != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	c.validate(req, rb, resp, out)
	return regResp{code: resp.StatusCode, hdr: resp.Header, body: out}
}

// validate checks the answer (and a request the server accepted) against
// the OpenAPI document.
func (c *regClient) validate(req *http.Request, reqBody []byte, resp *http.Response, body []byte) {
	t := c.t
	t.Helper()
	if c.router == nil {
		return
	}
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := c.router.FindRoute(vreq)
	require.NoError(t, err, "%s %s is not in the OpenAPI document", req.Method, req.URL)
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if resp.StatusCode < 300 {
		require.NoError(t, openapi3filter.ValidateRequest(context.Background(), in), "accepted request does not match the document")
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	require.NoError(t, openapi3filter.ValidateResponse(context.Background(), out), "answer %d %s does not match the document", resp.StatusCode, body)
}

func registryServer(t *testing.T) *testServer {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("grid-op:secret-a\nmetering:secret-b\nreader:secret-c\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow[auth.ActionRegistry] = []string{"token:grid-op", "token:metering"}
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"token:grid-op"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}},
		{Name: "metering", Members: []string{"token:metering"}, SPIFFEPrefixes: []string{"spiffe://meter.example/ns/metering"}, DevicePrefixes: []string{"mtr-"}},
	}
	return startServer(t, cfg, Options{})
}

func init() {
	// A compact JWS is text (the attestation body).
	openapi3filter.RegisterBodyDecoder("application/jose", openapi3filter.PlainBodyDecoder)
}

func newRegClient(t *testing.T, ts *testServer, token string) *regClient {
	c := &regClient{t: t, base: ts.URL, token: token}
	r := c.do(http.MethodGet, "/v1/registry/openapi.json", nil, nil)
	require.Equal(t, http.StatusOK, r.code)
	doc, err := openapi3.NewLoader().LoadFromData(r.body)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()), "the served OpenAPI document is not valid OpenAPI 3")
	doc.Servers = openapi3.Servers{{URL: ts.URL}}
	c.router, err = legacy.NewRouter(doc)
	require.NoError(t, err)
	return c
}

func ecJWK(t *testing.T) map[string]any {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	jk, err := jwk.FromRaw(&k.PublicKey)
	require.NoError(t, err)
	b, err := json.Marshal(jk)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func device(t *testing.T, id string) map[string]any {
	return map[string]any{"id": id, "class": "inverter", "vendor": "voltwerk", "firmware": ">=3.1.0",
		"credential": map[string]any{"jwk": ecJWK(t)},
		"writers":    []string{"spiffe://grid.example/ns/der/sa/controller"}, "readers": []string{"spiffe://grid.example/ns/der/*"},
		"write_limit": map[string]any{"per_second": 2, "burst": 5}, "labels": map[string]string{"site": "north"}}
}

func TestRegistryCRUD(t *testing.T) {
	ts := registryServer(t)
	c := newRegClient(t, ts, "secret-a")

	d := device(t, "inv-0001")
	r := c.do(http.MethodPost, "/v1/registry/devices", d, nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	rec := r.record(t)
	assert.Equal(t, "grid-op", rec.Organisation)
	assert.Equal(t, `"1"`, r.hdr.Get("ETag"))
	assert.Equal(t, "/v1/registry/devices/inv-0001", r.hdr.Get("Location"))

	assert.Equal(t, http.StatusConflict, c.do(http.MethodPost, "/v1/registry/devices", d, nil).code)

	r = c.do(http.MethodGet, "/v1/registry/devices/inv-0001", nil, nil)
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, http.StatusNotModified, c.do(http.MethodGet, "/v1/registry/devices/inv-0001", nil, map[string]string{"If-None-Match": `"1"`}).code)

	d["firmware"] = ">=3.2.0"
	assert.Equal(t, http.StatusPreconditionRequired, c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d, nil).code)
	assert.Equal(t, http.StatusPreconditionFailed, c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d, map[string]string{"If-Match": `"7"`}).code)
	assert.Equal(t, http.StatusBadRequest, c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d, map[string]string{"If-Match": `W/"1"`}).code)
	r = c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d, map[string]string{"If-Match": `"1"`})
	require.Equal(t, http.StatusOK, r.code, string(r.body))
	assert.Equal(t, `"2"`, r.hdr.Get("ETag"))
	// The same If-Match again lost the race: 412.
	assert.Equal(t, http.StatusPreconditionFailed, c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d, map[string]string{"If-Match": `"1"`}).code)
	d2 := device(t, "inv-0002")
	r = c.do(http.MethodPut, "/v1/registry/devices/inv-0001", d2, map[string]string{"If-Match": `"2"`})
	assert.Equal(t, http.StatusBadRequest, r.code)
	assert.Equal(t, "id", r.problem(t).Fields[0].Field)

	w := map[string]any{"spiffe_id": "spiffe://grid.example/ns/der/sa/controller",
		"versions": map[string]any{"range": ">=2.0.0, <3.0.0", "denied": []string{"2.4.1", "2.3.0+b731"}}, "labels": map[string]string{"team": "der"}}
	r = c.do(http.MethodPost, "/v1/registry/workloads", w, nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	esc := "/v1/registry/workloads/" + url.PathEscape("spiffe://grid.example/ns/der/sa/controller")
	assert.Equal(t, "/v1/registry/workloads/spiffe:%2F%2Fgrid.example%2Fns%2Fder%2Fsa%2Fcontroller", esc)
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, esc, nil, nil).code)

	r = c.do(http.MethodDelete, "/v1/registry/devices/inv-0001", nil, map[string]string{"If-Match": `"1"`})
	assert.Equal(t, http.StatusPreconditionFailed, r.code)
	assert.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, "/v1/registry/devices/inv-0001", nil, map[string]string{"If-Match": `"2"`}).code)
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/v1/registry/devices/inv-0001", nil, nil).code)
	assert.Equal(t, http.StatusNotFound, c.do(http.MethodDelete, "/v1/registry/devices/inv-0001", nil, nil).code)
}

func TestRegistryBadInput(t *testing.T) {
	ts := registryServer(t)
	c := newRegClient(t, ts, "secret-a")
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pk, err := jwk.FromRaw(priv)
	require.NoError(t, err)
	privJSON, err := json.Marshal(pk)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		body   string
		fields []string
	}{
		{"unknown field", `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"x509":"x"},"colour":"red"}`, []string{"body"}},
		{"trailing data", `{"id":"inv-1"} {}`, []string{"body"}},
		{"not json", `{"id":`, []string{"body"}},
		{"wrong type", `{"id":17}`, []string{"body"}},
		{"every field at once", `{"id":"INV 1","class":"","vendor":"Volt Werk","firmware":">=1.2.3.4.5","credential":{},"writers":["spiffe://grid.example/../x"],"write_limit":{"per_second":0,"burst":0}}`,
			[]string{"id", "class", "vendor", "firmware", "credential", "writers[0]", "write_limit.per_second", "write_limit.burst"}},
		{"both credentials", `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"x509":"x","jwk":{"kty":"EC"}}}`, []string{"credential"}},
		{"private key", `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"jwk":` + string(privJSON) + `}}`, []string{"credential.jwk"}},
		{"bad certificate", `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"x509":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}`, []string{"credential.x509"}},
		{"symmetric key", `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"jwk":{"kty":"oct","k":"c2VjcmV0"}}}`, []string{"credential.jwk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(http.MethodPost, "/v1/registry/devices", tc.body, nil)
			require.Equal(t, http.StatusBadRequest, r.code, string(r.body))
			var got []string
			for _, f := range r.problem(t).Fields {
				got = append(got, f.Field)
			}
			assert.ElementsMatch(t, tc.fields, got, string(r.body))
		})
	}
	r := c.do(http.MethodPost, "/v1/registry/workloads", `{"spiffe_id":"spiffe://Grid.example/x","versions":{"range":"banana","denied":["1.2"],"source":"cookie:x"},"labels":{"bad key":"v"}}`, nil)
	require.Equal(t, http.StatusBadRequest, r.code)
	var got []string
	for _, f := range r.problem(t).Fields {
		got = append(got, f.Field)
	}
	assert.ElementsMatch(t, []string{"spiffe_id", "versions.range", "versions.denied[0]", "versions.source", "labels"}, got)

	big := `{"id":"inv-1","class":"inverter","vendor":"v","credential":{"x509":"` + string(bytes.Repeat([]byte("A"), 70<<10)) + `"}}`
	assert.Equal(t, http.StatusRequestEntityTooLarge, c.do(http.MethodPost, "/v1/registry/devices", big, nil).code)
	assert.Equal(t, http.StatusUnsupportedMediaType, c.do(http.MethodPost, "/v1/registry/devices", `{}`, map[string]string{"Content-Type": "text/plain"}).code)
	assert.Equal(t, http.StatusBadRequest, c.do(http.MethodGet, "/v1/registry/devices?limit=0", nil, nil).code)
	assert.Equal(t, http.StatusBadRequest, c.do(http.MethodGet, "/v1/registry/devices?sort=id", nil, nil).code)
	assert.Equal(t, http.StatusBadRequest, c.do(http.MethodGet, "/v1/registry/devices?page_token=%25", nil, nil).code)
}

func TestRegistryOrganisations(t *testing.T) {
	ts := registryServer(t)
	a := newRegClient(t, ts, "secret-a")
	b := newRegClient(t, ts, "secret-b")

	require.Equal(t, http.StatusCreated, a.do(http.MethodPost, "/v1/registry/devices", device(t, "inv-1"), nil).code)
	require.Equal(t, http.StatusCreated, b.do(http.MethodPost, "/v1/registry/devices", device(t, "mtr-1"), nil).code)
	require.Equal(t, http.StatusCreated, b.do(http.MethodPost, "/v1/registry/workloads", map[string]any{"spiffe_id": "spiffe://meter.example/ns/metering/sa/reader"}, nil).code)

	// Cross-organisation create, read, update, deregister: 403, whether
	// the entry exists or not.
	assert.Equal(t, http.StatusForbidden, b.do(http.MethodPost, "/v1/registry/devices", device(t, "inv-2"), nil).code)
	assert.Equal(t, http.StatusForbidden, b.do(http.MethodPost, "/v1/registry/workloads", map[string]any{"spiffe_id": "spiffe://grid.example/ns/x/sa/y"}, nil).code)
	// A prefix matches whole segments.
	assert.Equal(t, http.StatusForbidden, b.do(http.MethodPost, "/v1/registry/workloads", map[string]any{"spiffe_id": "spiffe://meter.example/ns/metering-evil/sa/y"}, nil).code)
	// Naming another organisation as owner is refused too.
	dd := device(t, "mtr-2")
	dd["organisation"] = "grid-op"
	assert.Equal(t, http.StatusForbidden, b.do(http.MethodPost, "/v1/registry/devices", dd, nil).code)
	for _, id := range []string{"inv-1", "inv-404"} {
		assert.Equal(t, http.StatusForbidden, b.do(http.MethodGet, "/v1/registry/devices/"+id, nil, nil).code)
		assert.Equal(t, http.StatusForbidden, b.do(http.MethodPut, "/v1/registry/devices/"+id, device(t, id), map[string]string{"If-Match": `"1"`}).code)
		assert.Equal(t, http.StatusForbidden, b.do(http.MethodDelete, "/v1/registry/devices/"+id, nil, nil).code)
	}
	assert.Equal(t, http.StatusOK, a.do(http.MethodGet, "/v1/registry/devices/inv-1", nil, nil).code)

	// A caller in no organisation, and one without the registry action.
	assert.Equal(t, http.StatusForbidden, (&regClient{t: t, base: ts.URL, token: "secret-c"}).do(http.MethodGet, "/v1/registry/devices", nil, nil).code)
	assert.Equal(t, http.StatusUnauthorized, (&regClient{t: t, base: ts.URL, token: "wrong"}).do(http.MethodGet, "/v1/registry/devices", nil, nil).code)

	var page registry.Page
	r := b.do(http.MethodGet, "/v1/registry/devices", nil, nil)
	require.NoError(t, json.Unmarshal(r.body, &page))
	require.Len(t, page.Items, 1)
	assert.Equal(t, "mtr-1", page.Items[0].ID)
}

func TestRegistryListPaging(t *testing.T) {
	ts := registryServer(t)
	c := newRegClient(t, ts, "secret-a")
	for i := range 25 {
		d := device(t, "inv-"+string(rune('a'+i)))
		if i%2 == 0 {
			d["class"] = "battery"
		}
		require.Equal(t, http.StatusCreated, c.do(http.MethodPost, "/v1/registry/devices", d, nil).code)
	}
	var ids []string
	tok := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		q := "/v1/registry/devices?limit=5&class=battery"
		if tok != "" {
			q += "&page_token=" + tok
		}
		r := c.do(http.MethodGet, q, nil, nil)
		require.Equal(t, http.StatusOK, r.code)
		var p registry.Page
		require.NoError(t, json.Unmarshal(r.body, &p))
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
		if tok = p.Next; tok == "" {
			break
		}
	}
	assert.Len(t, ids, 13)
	assert.IsIncreasing(t, ids)
	r := c.do(http.MethodGet, "/v1/registry/devices?label=site%3Dnorth&prefix=inv-b", nil, nil)
	var p registry.Page
	require.NoError(t, json.Unmarshal(r.body, &p))
	assert.Len(t, p.Items, 1)
}

func TestRegistryAudit(t *testing.T) {
	ts := registryServer(t)
	c := newRegClient(t, ts, "secret-a")
	d := device(t, "inv-audit")
	require.Equal(t, http.StatusCreated, c.do(http.MethodPost, "/v1/registry/devices", d, nil).code)
	d["firmware"] = ">=4.0.0"
	require.Equal(t, http.StatusOK, c.do(http.MethodPut, "/v1/registry/devices/inv-audit", d, map[string]string{"If-Match": `"1"`}).code)
	require.Equal(t, http.StatusNoContent, c.do(http.MethodDelete, "/v1/registry/devices/inv-audit", nil, nil).code)
	// Refused changes are not changes: nothing recorded.
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, "/v1/registry/devices", device(t, "mtr-x"), nil).code)

	req, err := http.NewRequest(http.MethodGet, ts.URL+"/v1/decisions?decision=registry", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Records []map[string]json.RawMessage `json:"records"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Len(t, out.Records, 3)
	var ops []string
	for _, r := range out.Records {
		var op, by, subject string
		require.NoError(t, json.Unmarshal(r["registry_op"], &op))
		require.NoError(t, json.Unmarshal(r["received_by"], &by))
		require.NoError(t, json.Unmarshal(r["subject"], &subject))
		assert.Equal(t, "token:grid-op", by)
		assert.Equal(t, "token:grid-op", subject)
		assert.JSONEq(t, `"inv-audit"`, string(r["device_id"]))
		assert.JSONEq(t, `"grid-op"`, string(r["organisation"]))
		ops = append(ops, op)
		switch op {
		case "create":
			assert.Equal(t, "null", string(r["before"]))
			assert.Contains(t, string(r["after"]), `">=3.1.0"`)
		case "update":
			assert.Contains(t, string(r["before"]), `">=3.1.0"`)
			assert.Contains(t, string(r["after"]), `">=4.0.0"`)
		case "delete":
			assert.Contains(t, string(r["before"]), `">=4.0.0"`)
			assert.Equal(t, "null", string(r["after"]))
		}
	}
	assert.ElementsMatch(t, []string{"create", "update", "delete"}, ops)

	// A proxy cannot upload a registry record, however it spells it.
	for _, dec := range []string{`"registry"`, `"regi\u0073try"`} {
		body := `[{"time":"2026-01-01T00:00:00Z","decision_id":"x1","decision":` + dec + `,"rule_ids":[],"reason":"forged"}]`
		resp, err := http.Post(ts.URL+"/v1/decisions", "application/json", bytes.NewReader([]byte(body)))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, dec)
	}
}

// TestRegistryOrganisationsOverMTLS: callers identified by their X509-SVID
// act for the organisation whose members match their SPIFFE ID.
func TestRegistryOrganisationsOverMTLS(t *testing.T) {
	p := newPKI(t, "grid.example")
	cfg := mtlsConfig(t, p)
	dso := spiffeid.RequireFromString("spiffe://grid.example/ns/dso/sa/registrar")
	mtr := spiffeid.RequireFromString("spiffe://grid.example/ns/metering/sa/registrar")
	cfg.Allow[auth.ActionRegistry] = []string{"spiffe://grid.example/ns/dso/*", "spiffe://grid.example/ns/metering/*", "spiffe://grid.example/ns/both/*"}
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"spiffe://grid.example/ns/dso/*", "spiffe://grid.example/ns/both/*"}, DevicePrefixes: []string{"inv-"}},
		{Name: "metering", Members: []string{"spiffe://grid.example/ns/metering/*", "spiffe://grid.example/ns/both/*"}, DevicePrefixes: []string{"mtr-"}},
	}
	ts := startServer(t, cfg, Options{})
	send := func(c *http.Client, method, path string, body any) int {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, ts.URL+path, rd)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	a, b := p.client(p.svid(t, dso)), p.client(p.svid(t, mtr))
	both := p.client(p.svid(t, spiffeid.RequireFromString("spiffe://grid.example/ns/both/sa/x")))
	stranger := p.client(p.svid(t, strangerID))
	assert.Equal(t, http.StatusCreated, send(a, http.MethodPost, "/v1/registry/devices", device(t, "inv-1")))
	assert.Equal(t, http.StatusForbidden, send(b, http.MethodPost, "/v1/registry/devices", device(t, "inv-2")))
	assert.Equal(t, http.StatusForbidden, send(b, http.MethodGet, "/v1/registry/devices/inv-1", nil))
	assert.Equal(t, http.StatusForbidden, send(b, http.MethodDelete, "/v1/registry/devices/inv-1", nil))
	assert.Equal(t, http.StatusCreated, send(b, http.MethodPost, "/v1/registry/devices", device(t, "mtr-1")))
	// A member of two organisations acts for none; one without the
	// registry action is refused before that.
	assert.Equal(t, http.StatusForbidden, send(both, http.MethodGet, "/v1/registry/devices", nil))
	assert.Equal(t, http.StatusForbidden, send(stranger, http.MethodGet, "/v1/registry/devices", nil))
	assert.Equal(t, http.StatusOK, send(a, http.MethodGet, "/v1/registry/devices/inv-1", nil))
}

// TestRegistryLargestEntryAudited: an entry at the size limits is stored
// and its change (before and after, twice its size) recorded and queried.
func TestRegistryLargestEntryAudited(t *testing.T) {
	ts := registryServer(t)
	c := newRegClient(t, ts, "secret-a")
	d := device(t, "inv-big")
	var writers []string
	for i := range registry.MaxListLen {
		writers = append(writers, fmt.Sprintf("spiffe://grid.example/ns/der/sa/%0200d", i))
	}
	labels := map[string]string{}
	for i := range 40 {
		labels[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", registry.MaxLabelLen)
	}
	d["writers"], d["readers"], d["labels"] = writers, writers, labels
	r := c.do(http.MethodPost, "/v1/registry/devices", d, nil)
	require.Equal(t, http.StatusCreated, r.code, string(r.body))
	require.Greater(t, len(r.body), 30<<10)
	require.Equal(t, http.StatusOK, c.do(http.MethodPut, "/v1/registry/devices/inv-big", d, map[string]string{"If-Match": `"1"`}).code)
	resp, err := http.Get(ts.URL + "/v1/decisions?decision=registry")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Records []map[string]json.RawMessage `json:"records"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Len(t, out.Records, 2)
	var update map[string]json.RawMessage
	for _, r := range out.Records {
		if string(r["registry_op"]) == `"update"` {
			update = r
		}
	}
	require.NotNil(t, update)
	assert.Greater(t, len(update["before"])+len(update["after"]), 60<<10)
}
