package envoy

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/filters/guard/config"
)

func keys(t testing.TB) []byte {
	b, err := os.ReadFile("../istio/testdata/verify-keys.json")
	require.NoError(t, err)
	return b
}

func TestNormaliseSHA256(t *testing.T) {
	const h = "4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"
	for in, want := range map[string]string{h: h, "sha256:" + h: h, "SHA256:" + h: "", "sha256:4A5C0F9B6B3C1D2E8F7A6B5C4D3E2F1A0B9C8D7E6F5A4B3C2D1E0F9A8B7C6D5E": h, "": ""} {
		got, err := NormaliseSHA256(in)
		if want == "" && in != "" {
			assert.Error(t, err, in)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	for _, bad := range []string{"abc", "sha512:" + h, h + "0", "sha256:" + h[:63] + "g"} {
		_, err := NormaliseSHA256(bad)
		assert.Error(t, err, bad)
	}
}

func TestFragmentRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		in     Standalone
		remote bool
	}{
		{"remote module over https distributor", Standalone{
			Filter:      Filter{Module: Module{URL: "http://127.0.0.1:8080/modules/meshguard/guard/v1.wasm", SHA256: "sha256:" + sum0}, HostEnv: []string{"HOSTNAME"}},
			Distributor: &Upstream{Host: "127.0.0.1", Port: 8080},
			Guard:       GuardInput{VerifyKeys: keys(t), Channel: "dev", PeerCertificate: true},
		}, true},
		{"local module, inline bundle, fail open", Standalone{
			Filter: Filter{Module: Module{LocalFile: "/etc/envoy/guard.wasm"}, FailOpen: true, Env: map[string]string{"A": "b"}},
			Guard:  GuardInput{VerifyKeys: keys(t), InlineBundle: []byte("bundle"), IstioPeerMetadata: true, Mode: "dry-run"},
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y, err := Fragment(tc.in)
			require.NoError(t, err)
			var doc struct {
				HTTPFilters []any `json:"http_filters"`
				Clusters    []any `json:"clusters"`
			}
			require.NoError(t, yaml.UnmarshalStrict(y, &doc))
			require.Len(t, doc.HTTPFilters, 2, "the one-URI-SAN RBAC filter, then the guard")
			ry, err := yaml.Marshal(doc.HTTPFilters[0])
			require.NoError(t, err)
			_, err = DecodeOneURISANFilter(ry)
			require.NoError(t, err)
			fy, err := yaml.Marshal(doc.HTTPFilters[1])
			require.NoError(t, err)
			hf, w, err := DecodeHTTPFilter(fy)
			require.NoError(t, err)
			assert.Equal(t, WasmFilterName, hf.GetName())
			pc := w.GetConfig()
			assert.Equal(t, DefaultPluginName, pc.GetName())
			assert.Equal(t, RuntimeV8, pc.GetVmConfig().GetRuntime())
			if tc.in.Filter.FailOpen {
				assert.Equal(t, "FAIL_OPEN", pc.GetFailurePolicy().String())
			} else {
				assert.Equal(t, "FAIL_CLOSED", pc.GetFailurePolicy().String())
			}
			assert.Equal(t, "type.googleapis.com/google.protobuf.StringValue", pc.GetConfiguration().GetTypeUrl())
			if tc.remote {
				require.Len(t, doc.Clusters, 1)
				cy, err := yaml.Marshal(doc.Clusters[0])
				require.NoError(t, err)
				c, err := DecodeCluster(cy)
				require.NoError(t, err)
				assert.Equal(t, DefaultClusterName, c.GetName())
				assert.Equal(t, "STATIC", c.GetType().String())
				assert.Equal(t, sum0, pc.GetVmConfig().GetCode().GetRemote().GetSha256())
				assert.Equal(t, DefaultClusterName, pc.GetVmConfig().GetCode().GetRemote().GetHttpUri().GetCluster())
			} else {
				assert.Empty(t, doc.Clusters)
				assert.Equal(t, "/etc/envoy/guard.wasm", pc.GetVmConfig().GetCode().GetLocal().GetFilename())
			}
		})
	}
}

const sum0 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestFilterErrors(t *testing.T) {
	cfg := []byte(`{}`)
	tests := map[string]Filter{
		"no module":           {Config: cfg},
		"both sources":        {Config: cfg, Module: Module{URL: "http://d/m.wasm", SHA256: sum0, Cluster: "c", LocalFile: "/m.wasm"}},
		"remote without sha":  {Config: cfg, Module: Module{URL: "http://d/m.wasm", Cluster: "c"}},
		"remote without host": {Config: cfg, Module: Module{URL: "http:///m.wasm", SHA256: sum0, Cluster: "c"}},
		"oci url":             {Config: cfg, Module: Module{URL: "oci://r/m:v1", SHA256: sum0, Cluster: "c"}},
		"relative local":      {Config: cfg, Module: Module{LocalFile: "m.wasm"}},
		"no config":           {Module: Module{LocalFile: "/m.wasm"}},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := HTTPFilter(f)
			assert.Error(t, err)
		})
	}
}

func TestParseUpstream(t *testing.T) {
	u, err := ParseUpstream("https://d.example")
	require.NoError(t, err)
	assert.Equal(t, Upstream{Host: "d.example", Port: 443, TLS: true}, u)
	u, err = ParseUpstream("http://127.0.0.1:9000")
	require.NoError(t, err)
	assert.Equal(t, Upstream{Host: "127.0.0.1", Port: 9000}, u)
	for _, bad := range []string{"d.example:80", "ftp://d", "http://d:0", "http://d:70000", "http://d/path", "http://"} {
		_, err := ParseUpstream(bad)
		assert.Error(t, err, bad)
	}
}

func TestGuardConfig(t *testing.T) {
	out, cfg, err := GuardConfig(GuardInput{VerifyKeys: keys(t), Channel: "c", AuditSink: true, PeerCertificate: true}, Callouts{Cluster: "cl", Authority: "d.example"})
	require.NoError(t, err)
	again, err := config.Parse(out)
	require.NoError(t, err)
	assert.Equal(t, cfg, again)
	assert.Equal(t, "cl", cfg.Policy.Distributor.Cluster)
	assert.Equal(t, "d.example", cfg.Audit.Sink.Authority)

	// YAML file form, cluster filled in.
	_, cfg, err = GuardConfig(GuardInput{File: []byte("policy:\n  verifyKeys: {keys: []}\n  distributor: {channel: c}\nidentity: {peerCertificate: true}\n")}, Callouts{Cluster: "cl", Authority: "a"})
	require.NoError(t, err)
	assert.Equal(t, "cl", cfg.Policy.Distributor.Cluster)

	_, _, err = GuardConfig(GuardInput{File: []byte(`{"policy":{"verifyKeys":{}},"identity":{"peerCertificate":true},"bogus":1}`)}, Callouts{})
	assert.ErrorContains(t, err, "bogus")
	_, _, err = GuardConfig(GuardInput{File: []byte(`{}`), Channel: "x"}, Callouts{})
	assert.ErrorContains(t, err, "not both")
	_, _, err = GuardConfig(GuardInput{VerifyKeys: keys(t), Channel: "c", PeerCertificate: true}, Callouts{})
	assert.ErrorContains(t, err, "cluster")
	_, _, err = GuardConfig(GuardInput{VerifyKeys: keys(t), InlineBundle: []byte("b"), JWTAudiences: []string{"a"}, JWTTrustDomains: map[string][]byte{"td": nil}}, Callouts{})
	assert.ErrorContains(t, err, "td=JWKS_FILE")
	_, _, err = GuardConfig(GuardInput{File: []byte(`{"policy":{"inline":"YQ==","verifyKeys":{}},"identity":{"jwtSvid":{"audiences":["a"],"trustDomains":{"td":null}}}}`)}, Callouts{})
	assert.ErrorContains(t, err, "null")
}

// TestGuardConfigDefaults: what the render verbs write unless told
// otherwise: a per-service JWT audience, verified credentials removed,
// non-canonical paths refused.
func TestGuardConfigDefaults(t *testing.T) {
	jwks := map[string][]byte{"grid.example": []byte(`{"keys":[]}`)}
	base := GuardInput{VerifyKeys: keys(t), InlineBundle: []byte("b"), PeerCertificate: true, JWTTrustDomains: jwks}
	_, cfg, err := GuardConfig(base, Callouts{})
	require.NoError(t, err)
	assert.True(t, cfg.Identity.JWTSVID.LocalAudience, "per-service audience by default")
	assert.Empty(t, cfg.Identity.JWTSVID.Audiences)
	assert.Empty(t, cfg.Identity.KeepCredentialHeaders, "verified credentials are removed")
	assert.Equal(t, config.PathsRefuse, cfg.Paths)

	shared := base
	shared.JWTAudiences, shared.Paths = []string{"grid-apis"}, config.PathsMergeSlashes
	shared.TrustedForwarders = []string{"spiffe://grid.example/ns/istio-system/sa/ingress"}
	shared.KeepCredentialHeaders = []string{"x-jwt-svid"}
	_, cfg, err = GuardConfig(shared, Callouts{})
	require.NoError(t, err)
	assert.False(t, cfg.Identity.JWTSVID.LocalAudience)
	assert.Equal(t, []string{"grid-apis"}, cfg.Identity.JWTSVID.Audiences)
	assert.Equal(t, config.PathsMergeSlashes, cfg.Paths)
	assert.Equal(t, shared.TrustedForwarders, cfg.Identity.TrustedForwarders)
	assert.Equal(t, []string{"x-jwt-svid"}, cfg.Identity.KeepCredentialHeaders)

	bad := base
	bad.Paths = "decode"
	_, _, err = GuardConfig(bad, Callouts{})
	assert.ErrorContains(t, err, `paths: "decode"`)
}

func FuzzDecodeHTTPFilter(f *testing.F) {
	y, err := Fragment(Standalone{Filter: Filter{Module: Module{LocalFile: "/g.wasm"}}, Guard: GuardInput{VerifyKeys: []byte(`{"keys":[]}`), InlineBundle: []byte("b"), PeerCertificate: true}})
	require.NoError(f, err)
	f.Add(y)
	f.Add([]byte("name: envoy.filters.http.wasm\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		hf, w, err := DecodeHTTPFilter(data)
		if err != nil {
			return
		}
		// Anything accepted must validate and re-encode.
		require.NoError(t, hf.ValidateAll())
		require.NoError(t, w.ValidateAll())
		_, err = YAML(hf)
		require.NoError(t, err)
	})
}

func FuzzGuardConfig(f *testing.F) {
	f.Add([]byte("policy:\n  verifyKeys: {keys: []}\n  distributor: {channel: c}\nidentity: {peerCertificate: true}\naudit: {sink: {}}\n"))
	f.Add([]byte(`{"policy":{"inline":"YQ==","verifyKeys":{}},"identity":{"istioPeerMetadata":true}}`))
	f.Add([]byte(`{"policy":{"distributor":{"cluster":"other","channel":"c"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, cfg, err := GuardConfig(GuardInput{File: data}, Callouts{Cluster: "cl", Authority: "a"})
		if err != nil {
			return
		}
		// Whatever is accepted is a valid guard configuration pointing at our cluster.
		again, err := config.Parse(out)
		require.NoError(t, err)
		assert.Equal(t, cfg, again)
		if cfg.Policy.Distributor != nil {
			assert.Equal(t, "cl", cfg.Policy.Distributor.Cluster)
		}
		if cfg.Audit.Sink != nil {
			assert.Equal(t, "cl", cfg.Audit.Sink.Cluster)
		}
	})
}

func FuzzParseUpstream(f *testing.F) {
	for _, s := range []string{"https://d.example", "http://127.0.0.1:9000", "http://[::1]:80", "ftp://x", "http://d:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseUpstream(raw)
		if err != nil {
			return
		}
		require.NotEmpty(t, u.Host)
		require.NotZero(t, u.Port)
		if _, err := Cluster(u); err != nil {
			// Hosts the URL parser accepts but Envoy would not (e.g. odd characters) must be caught here, not panic.
			return
		}
	})
}

// TestOneURISANFilter: the rendered RBAC filter decodes strictly, validates,
// and a changed copy (allowing the match, another input, no default allow)
// is not taken for it.
func TestOneURISANFilter(t *testing.T) {
	hf, err := OneURISANFilter()
	require.NoError(t, err)
	assert.Equal(t, RBACFilterName, hf.GetName())
	y, err := YAML(hf)
	require.NoError(t, err)
	_, err = DecodeOneURISANFilter(y)
	require.NoError(t, err)
	for _, tc := range []struct{ name, from, to string }{
		{"allow instead of deny", "action: DENY", "action: LOG"},
		{"another input", "envoy.matching.inputs.uri_san", "envoy.matching.inputs.dns_san"},
		{"another pattern", "contains: ','", "contains: ';'"},
		{"typo", "on_no_match", "on_nomatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed := strings.Replace(string(y), tc.from, tc.to, 1)
			require.NotEqual(t, string(y), changed)
			_, err := DecodeOneURISANFilter([]byte(changed))
			assert.Error(t, err)
		})
	}
}
