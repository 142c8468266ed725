package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

// consoleRegistryServer has two registry organisations, an auditor and a
// reader that may not audit.
func consoleRegistryServer(t *testing.T) *testServer {
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("grid-op:secret-a\nmetering:secret-b\nauditor:"+auditorToken+"\nreader:"+readerToken+"\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow[auth.ActionRegistry] = []string{"token:grid-op", "token:metering"}
	cfg.Allow[auth.ActionAudit] = []string{"token:auditor"}
	cfg.Allow[auth.ActionRead] = []string{"token:reader"}
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"token:grid-op"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}},
		{Name: "metering", Members: []string{"token:metering"}, SPIFFEPrefixes: []string{"spiffe://meter.example/ns/metering"}, DevicePrefixes: []string{"mtr-"}},
	}
	return startServer(t, cfg, Options{})
}

func certPEM(t *testing.T, cn string, notAfter time.Time) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: cn, Organization: []string{"Voltwerk"}},
		NotBefore: notAfter.Add(-24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func consoleList(t *testing.T, ts *testServer, kind string, q url.Values) RegistryListPage {
	t.Helper()
	var p RegistryListPage
	getJSON(t, ts.URL+"/ui/api/registry/"+kind+"?"+q.Encode(), &p)
	return p
}

func ids(p RegistryListPage) []string {
	out := []string{}
	for _, it := range p.Items {
		out = append(out, it.ID)
	}
	return out
}

func TestConsoleRegistryListAcrossOrganisations(t *testing.T) {
	ts := consoleRegistryServer(t)
	grid, meter := newRegClient(t, ts, "secret-a"), newRegClient(t, ts, "secret-b")
	for i, id := range []string{"inv-001", "inv-002", "inv-003", "inv-0030"} {
		d := device(t, id)
		if i%2 == 1 {
			d["class"], d["labels"] = "battery", map[string]string{"site": "south"}
		}
		require.Equal(t, http.StatusCreated, grid.do(http.MethodPost, "/v1/registry/devices", d, nil).code)
	}
	m := device(t, "mtr-9")
	m["vendor"] = "metrix"
	require.Equal(t, http.StatusCreated, meter.do(http.MethodPost, "/v1/registry/devices", m, nil).code)
	require.Equal(t, http.StatusCreated, meter.do(http.MethodPost, "/v1/registry/workloads",
		map[string]any{"spiffe_id": "spiffe://meter.example/ns/metering/sa/reader", "versions": map[string]any{"range": ">=1.2.0"}}, nil).code)

	p := consoleList(t, ts, "devices", nil)
	assert.Equal(t, []string{"inv-001", "inv-002", "inv-003", "inv-0030", "mtr-9"}, ids(p), "auditors see every organisation")
	assert.Equal(t, []string{"grid-op", "metering"}, p.Orgs)
	assert.Equal(t, "inverter", p.Items[0].Class)
	assert.Regexp(t, `^EC P-256 key [A-Za-z0-9_-]{43}$`, p.Items[0].Credential)

	for _, tc := range []struct {
		q    url.Values
		want []string
	}{
		{url.Values{"organisation": {"metering"}}, []string{"mtr-9"}},
		{url.Values{"class": {"battery"}}, []string{"inv-002", "inv-0030"}},
		{url.Values{"vendor": {"metrix"}}, []string{"mtr-9"}},
		{url.Values{"prefix": {"inv-003"}}, []string{"inv-003", "inv-0030"}},
		{url.Values{"prefix": {"inv-003"}, "after": {"inv-003"}}, []string{"inv-0030"}},
		{url.Values{"prefix": {"zzz"}}, []string{}},
		{url.Values{"label": {"site=south"}}, []string{"inv-002", "inv-0030"}},
		{url.Values{"label": {"site=south", "site=north"}}, nil},
		{url.Values{"label": {"site=north"}, "organisation": {"grid-op"}}, []string{"inv-001", "inv-003"}},
		// A value that only looks like a match in the JSON text.
		{url.Values{"class": {`inverter","vendor":"voltwerk`}}, []string{}},
	} {
		if tc.want == nil {
			r := do(t, nil, http.MethodGet, ts.URL+"/ui/api/registry/devices?"+tc.q.Encode(), nil, bearer(auditorToken)...)
			assert.Equal(t, http.StatusBadRequest, r.Code, tc.q.Encode())
			continue
		}
		assert.Equal(t, tc.want, ids(consoleList(t, ts, "devices", tc.q)), tc.q.Encode())
	}

	// Paging: every entry once, in order.
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		p := consoleList(t, ts, "devices", url.Values{"limit": {"2"}, "after": {after}})
		all = append(all, ids(p)...)
		if after = p.Next; after == "" {
			break
		}
	}
	assert.Equal(t, []string{"inv-001", "inv-002", "inv-003", "inv-0030", "mtr-9"}, all)

	w := consoleList(t, ts, "workloads", nil)
	require.Len(t, w.Items, 1)
	assert.Equal(t, ">=1.2.0", w.Items[0].Versions)
	assert.Equal(t, "metering", w.Items[0].Organisation)

	for _, q := range []string{"devices?bogus=1", "devices?limit=0", "devices?limit=501", "devices?label=nokey", "devices?class=a&class=b", "gadgets"} {
		r := do(t, nil, http.MethodGet, ts.URL+"/ui/api/registry/"+q, nil, bearer(auditorToken)...)
		assert.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, r.Code, q)
		assert.Contains(t, string(r.Body), `"error"`, q)
	}
}

func TestConsoleRegistryEntry(t *testing.T) {
	ts := consoleRegistryServer(t)
	grid, meter := newRegClient(t, ts, "secret-a"), newRegClient(t, ts, "secret-b")
	hostile := `<img src=x onerror=alert(1)>`
	d := device(t, "inv-7")
	d["labels"] = map[string]string{"note": hostile}
	require.Equal(t, http.StatusCreated, grid.do(http.MethodPost, "/v1/registry/devices", d, nil).code)
	d["firmware"] = ">=4.0.0"
	require.Equal(t, http.StatusOK, grid.do(http.MethodPut, "/v1/registry/devices/inv-7", d, map[string]string{"If-Match": `"1"`}).code)
	until := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	c := device(t, "mtr-cert")
	c["credential"] = map[string]any{"x509": certPEM(t, hostile, until)}
	require.Equal(t, http.StatusCreated, meter.do(http.MethodPost, "/v1/registry/devices", c, nil).code)
	wid := "spiffe://meter.example/ns/metering/sa/reader"
	require.Equal(t, http.StatusCreated, meter.do(http.MethodPost, "/v1/registry/workloads", map[string]any{"spiffe_id": wid}, nil).code)
	require.Equal(t, http.StatusCreated, meter.do(http.MethodPost, "/v1/registry/workloads", map[string]any{"spiffe_id": wid + "x"}, nil).code)
	require.Equal(t, http.StatusNoContent, meter.do(http.MethodDelete, "/v1/registry/workloads/"+url.PathEscape(wid), nil, nil).code)

	entry := func(kind, id string) (RegistryEntryView, resp) {
		r := do(t, nil, http.MethodGet, ts.URL+"/ui/api/registry/"+kind+"/"+url.PathEscape(id), nil, bearer(auditorToken)...)
		var v RegistryEntryView
		if r.Code == http.StatusOK {
			r.json(t, &v)
		}
		return v, r
	}
	var v RegistryEntryView
	require.Eventually(t, func() bool { v, _ = entry("devices", "inv-7"); return len(v.History.Records) == 2 }, 10*time.Second, 50*time.Millisecond)
	assert.True(t, v.Registered)
	assert.Equal(t, "grid-op", v.Organisation)
	assert.Equal(t, uint64(2), v.Generation)
	assert.Equal(t, ">=4.0.0", v.Spec["firmware"])
	assert.Equal(t, map[string]any{"note": hostile}, v.Spec["labels"], "passed through as data; the page renders it as text")
	assert.NotContains(t, v.Spec, "credential", "the credential is described, not passed through")
	require.NotNil(t, v.Credential)
	assert.Equal(t, "jwk", v.Credential.Type)
	assert.Equal(t, "EC P-256", v.Credential.KeyType)
	assert.Len(t, v.Credential.Thumbprint, 43)
	assert.True(t, v.History.Exact)
	assert.True(t, v.History.Complete)
	assert.Equal(t, map[string]string{"decision": "registry", "device": "inv-7"}, v.History.Filter)
	assert.Contains(t, string(v.History.Records[0].Record), `"registry_op":"update"`, "newest first")
	assert.Nil(t, v.Channels)
	assert.NotEmpty(t, v.ChannelsNote)

	v, _ = entry("devices", "mtr-cert")
	require.NotNil(t, v.Credential)
	assert.Equal(t, "x509", v.Credential.Type)
	assert.Equal(t, `CN=\<img src=x onerror=alert(1)\>,O=Voltwerk`, v.Credential.Subject, "RFC 2253 escaping")
	assert.Equal(t, until.Format(time.RFC3339), v.Credential.NotAfter)
	assert.True(t, v.Credential.Expired)
	assert.Equal(t, "EC P-256", v.Credential.KeyType)
	assert.Len(t, v.Credential.Fingerprint, 64)
	assert.NotContains(t, string(mustJSON(t, v.Spec)), "BEGIN CERTIFICATE")

	// A deregistered workload still has its history (found by reading
	// the registry records: workload ids are not an indexed column).
	require.Eventually(t, func() bool { v, _ = entry("workloads", wid); return len(v.History.Records) == 2 }, 10*time.Second, 50*time.Millisecond)
	assert.False(t, v.Registered)
	assert.False(t, v.History.Exact)
	assert.True(t, v.History.Complete)
	assert.Contains(t, string(v.History.Records[0].Record), `"registry_op":"delete"`)
	assert.Contains(t, string(v.History.Records[1].Record), `"registry_op":"create"`)

	_, r := entry("devices", "inv-never")
	assert.Equal(t, http.StatusNotFound, r.Code)
	_, r = entry("gadgets", "x")
	assert.Equal(t, http.StatusNotFound, r.Code)
}

func TestConsoleRegistryNeedsTheAuditAction(t *testing.T) {
	ts := consoleRegistryServer(t)
	grid := newRegClient(t, ts, "secret-a")
	require.Equal(t, http.StatusCreated, grid.do(http.MethodPost, "/v1/registry/devices", device(t, "inv-1"), nil).code)
	for _, path := range []string{"/ui/api/registry/devices", "/ui/api/registry/workloads", "/ui/api/registry/devices/inv-1", "/ui/api/registry/devices?organisation=grid-op"} {
		for _, tok := range []string{readerToken, "secret-a"} {
			r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(tok)...)
			assert.Equal(t, http.StatusForbidden, r.Code, "%s with %s", path, tok)
			assert.NotContains(t, string(r.Body), "inv-1\"", path)
		}
		r := do(t, nil, http.MethodGet, ts.URL+path, nil)
		assert.Equal(t, http.StatusForbidden, r.Code, "anonymous: %s", path)
		r = do(t, nil, http.MethodGet, ts.URL+path, nil, bearer("wrong")...)
		assert.Equal(t, http.StatusUnauthorized, r.Code, path)
		assert.Contains(t, r.Header.Get("WWW-Authenticate"), "Basic", path)
		r = do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(auditorToken)...)
		assert.Equal(t, http.StatusOK, r.Code, path)
		assert.Contains(t, r.Header.Get("Content-Security-Policy"), "default-src 'none'")
		assert.Equal(t, "no-store", r.Header.Get("Cache-Control"))
	}
	// The registry API itself stays per organisation: the auditor is no member.
	r := do(t, nil, http.MethodGet, ts.URL+"/v1/registry/devices", nil, bearer(auditorToken)...)
	assert.Equal(t, http.StatusForbidden, r.Code)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// FuzzConsoleRegistryFilter: the list's query parser takes any query
// string without panicking and within its bounds, and the filter's
// substring test never rejects an entry its decoded fields match, however
// the store spaces or escapes the entry's JSON.
func FuzzConsoleRegistryFilter(f *testing.F) {
	f.Add("class=battery&label=site%3Dsouth", "battery", "site", "south")
	f.Add("label=note%3D%3Cimg%3E&vendor=a%26b", "meter", "note", "<img>")
	f.Add("prefix=inv-&limit=2&organisation=grid-op", "inverter", "k", "v w")
	f.Fuzz(func(t *testing.T, rawQuery, class, labelKey, labelValue string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		flt, _, limit, err := parseRegistryFilter(q)
		if err != nil {
			return
		}
		require.True(t, limit >= 1 && limit <= consoleRegistryMax, limit)
		require.LessOrEqual(t, len(flt.Labels), registry.MaxLabels)
		d := registry.Device{ID: "inv-1", Class: class, Vendor: flt.Vendor, Organisation: flt.Organisation,
			Labels: map[string]string{labelKey: labelValue}}
		for k, v := range flt.Labels {
			if len(d.Labels) < 3 {
				d.Labels[k] = v
			}
		}
		plain, err := json.Marshal(d)
		require.NoError(t, err)
		var spaced, unescaped bytes.Buffer
		require.NoError(t, json.Indent(&spaced, plain, "", "  "))
		enc := json.NewEncoder(&unescaped)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", " ")
		require.NoError(t, enc.Encode(d))
		decoded := flt
		decoded.needles = nil
		for _, spec := range [][]byte{plain, spaced.Bytes(), unescaped.Bytes()} {
			r := registry.Record{Kind: registry.KindDevice, ID: d.ID, Organisation: d.Organisation, Spec: spec}
			require.Equal(t, decoded.match(r), flt.match(r), "spec %s, query %q", spec, rawQuery)
		}
	})
}
