package server

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// TestIngestIdentityBindsRecordsToTheirProxy is the in-mesh setup of
// decisions.proxy_bindings: guards post through their sidecar (the
// distributor takes their SPIFFE ID from its own sidecar's XFCC) or with a
// per-proxy token; every record must name a proxy its uploader may claim,
// an upload with one that does not is refused whole, and every stored
// record carries the verified uploader.
func TestIngestIdentityBindsRecordsToTheirProxy(t *testing.T) {
	const me = "spiffe://grid.example/ns/meshguard-system/sa/meshguard-distributor"
	xfcc := func(uri string) []string {
		return []string{"X-Forwarded-Client-Cert", "By=" + me + ";Hash=0123;URI=" + uri}
	}
	k := newSigner(t)
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("gw-7:gw-secret-7\nauditor:"+auditorToken+"\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.XFCC = auth.XFCCConfig{Trust: true, By: me}
	cfg.Allow = map[auth.Action][]string{
		auth.ActionIngest: {"spiffe://grid.example/ns/*", "token:gw-7", "anonymous"},
		auth.ActionAudit:  {"token:auditor"},
	}
	cfg.Decisions.ProxyBindings = []auth.ProxyBinding{
		{Identity: "spiffe://grid.example/ns/{ns}/sa/*", Proxy: "sidecar~*~*.{ns}~{ns}.svc.cluster.local"},
		{Identity: "token:{name}", Proxy: "router~*~{name}.*"},
	}
	ts := startServer(t, cfg, k.options())
	sidecar := fromAddr("127.0.0.6", nil)
	const gridProxy = "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local"
	const billingProxy = "sidecar~10.0.0.8~bill-0.billing~billing.svc.cluster.local"
	batch := func(proxies ...string) []byte {
		var parts []string
		for i, p := range proxies {
			f := ""
			if p != "" {
				f = fmt.Sprintf(`,"proxy":%q`, p)
			}
			parts = append(parts, fmt.Sprintf(`{"time":"2026-11-23T08:00:00Z","decision":"deny","decision_id":"d%d"%s}`, i, f))
		}
		return []byte("[" + strings.Join(parts, ",") + "]")
	}

	r := do(t, sidecar, http.MethodPost, ts.URL+"/v1/decisions", batch(gridProxy, gridProxy), xfcc(guardID.String())...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", batch("router~10.1.0.1~gw-7.edge~edge.svc.cluster.local"), bearer("gw-secret-7")...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))

	for name, tc := range map[string]struct {
		body []byte
		hdr  []string
		want string
	}{
		"a record for another namespace's proxy, among good ones": {batch(gridProxy, billingProxy, gridProxy), xfcc(guardID.String()),
			`record 1: record claims a proxy its uploader may not post for: proxy "` + billingProxy + `" is not one spiffe://grid.example/ns/grid/sa/guard may post for`},
		"a record naming no proxy":                         {batch(gridProxy, ""), xfcc(guardID.String()), "record 1: record claims a proxy its uploader may not post for: the record names no proxy"},
		"a token claiming a sidecar":                       {batch(gridProxy), bearer("gw-secret-7"), `proxy "` + gridProxy + `" is not one token:gw-7 may post for`},
		"anonymous, though the ingest allowlist admits it": {batch(gridProxy), nil, "matches no decisions.proxy_bindings identity"},
	} {
		t.Run(name, func(t *testing.T) {
			c := sidecar
			if tc.hdr == nil || tc.hdr[0] == "Authorization" {
				c = nil
			}
			r := do(t, c, http.MethodPost, ts.URL+"/v1/decisions", tc.body, tc.hdr...)
			assert.Equal(t, http.StatusForbidden, r.Code, string(r.Body))
			var e struct{ Error string }
			r.json(t, &e)
			assert.Contains(t, e.Error, tc.want)
			assert.Contains(t, e.Error, "nothing of this upload was stored")
		})
	}
	assert.Equal(t, uint64(3), ts.DecisionLog().Head().Seq, "refused uploads stored nothing")

	// Every stored record carries the identity that posted it.
	var qr decisionlog.QueryResult
	getJSON(t, ts.URL+"/v1/decisions", &qr)
	require.Len(t, qr.Records, 3)
	assert.Contains(t, string(qr.Records[0]), `"received_by":"`+guardID.String()+`"`)
	assert.Contains(t, string(qr.Records[1]), `"received_by":"`+guardID.String()+`"`)
	assert.Contains(t, string(qr.Records[2]), `"received_by":"token:gw-7"`)

	// A binding that does not compile stops the start.
	bad := testConfig(t)
	bad.Decisions.ProxyBindings = []auth.ProxyBinding{{Identity: "spiffe://grid.example/ns/{ns}", Proxy: "{pod}"}}
	_, err := New(t.Context(), bad, k.options())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "decisions.proxy_bindings")
}
