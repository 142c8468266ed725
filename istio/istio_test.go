package istio

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/istio/crdcheck"
)

var update = flag.Bool("update", false, "rewrite the checked-in kustomize manifests from the renderer")

const (
	exampleDigest = "sha256:4a5c0f9b6b3c1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"
	canaryDigest  = "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
	distributor   = "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443"
)

var (
	crdOnce sync.Once
	crdSet  *crdcheck.Set
	crdErr  error
)

// istioCRDs loads the CRDs shipped in the istio.io/api module this repository builds against.
func istioCRDs(t *testing.T) *crdcheck.Set {
	t.Helper()
	crdOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
		if err != nil {
			crdErr = err
			return
		}
		crdSet, crdErr = crdcheck.Load(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	})
	require.NoError(t, crdErr)
	return crdSet
}

func readFile(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

func verifyKeys(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/verify-keys.json")
	require.NoError(t, err)
	return b
}

func exampleOptions(t testing.TB) Options {
	prio := int32(10)
	return Options{
		Namespace:       "grid",
		URL:             "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.4.0",
		SHA256:          exampleDigest,
		Priority:        &prio,
		Selector:        map[string]string{"app.kubernetes.io/part-of": "grid"},
		ImagePullPolicy: "IfNotPresent",
		ImagePullSecret: "meshguard-pull",
		Env:             []EnvVar{{Name: "MESHGUARD_ZONE", Value: "north"}, {Name: "POD_NAME", FromHost: true}},
		Guard: envoy.GuardInput{
			VerifyKeys:      verifyKeys(t),
			Channel:         "grid-prod",
			PeerCertificate: true,
			JWTAudiences:    []string{"spiffe://grid.example/meshguard"},
			JWTTrustDomains: map[string][]byte{"grid.example": readFile(t, "testdata/grid-jwt-bundle.json")},
			AuditSink:       true,
		},
		Distributor: &Distributor{URL: distributor, CACertificates: "/etc/meshguard/distributor-ca.pem"},
	}
}

func TestRenderValidatesAgainstIstioCRDs(t *testing.T) {
	set := istioCRDs(t)
	r, err := Render(exampleOptions(t))
	require.NoError(t, err)
	require.NotNil(t, r.WasmPlugin)
	require.NotNil(t, r.DestinationRule)
	require.NotNil(t, r.PeerAuthentication)
	assert.Nil(t, r.ServiceEntry, "a *.svc.cluster.local distributor is already known to istiod")
	for _, o := range r.Objects() {
		assert.NoError(t, set.Validate(o))
	}
	spec := r.WasmPlugin["spec"].(map[string]any)
	assert.Equal(t, "AUTHZ", spec["phase"])
	assert.Equal(t, "FAIL_CLOSE", spec["failStrategy"])
	assert.Equal(t, strings.TrimPrefix(exampleDigest, "sha256:"), spec["sha256"])
	assert.Equal(t, float64(10), spec["priority"])
	assert.Equal(t, []any{map[string]any{"mode": "SERVER"}}, spec["match"])

	// pluginConfig is the guard configuration, valid for the filter, and its
	// callouts name the cluster istiod creates for the distributor host.
	pc, err := json.Marshal(spec["pluginConfig"])
	require.NoError(t, err)
	cfg, err := config.Parse(pc)
	require.NoError(t, err)
	want := "outbound|8443||meshguard-distributor.meshguard-system.svc.cluster.local"
	assert.Equal(t, want, cfg.Policy.Distributor.Cluster)
	assert.Equal(t, want, cfg.Audit.Sink.Cluster)
	assert.Equal(t, "meshguard-distributor.meshguard-system.svc.cluster.local", cfg.Policy.Distributor.Authority)
	assert.JSONEq(t, string(r.GuardConfig), string(pc))

	pa := r.PeerAuthentication["spec"].(map[string]any)
	assert.Equal(t, map[string]any{"mode": "STRICT"}, pa["mtls"])
	dr := r.DestinationRule["spec"].(map[string]any)
	assert.Contains(t, mustJSON(t, dr), `"mode":"SIMPLE"`)
}

func TestExternalDistributorGetsServiceEntry(t *testing.T) {
	o := exampleOptions(t)
	o.Distributor = &Distributor{URL: "https://policy.grid.example"}
	r, err := Render(o)
	require.NoError(t, err)
	require.NotNil(t, r.ServiceEntry)
	require.NoError(t, istioCRDs(t).Validate(r.ServiceEntry))
	assert.Contains(t, mustJSON(t, r.ServiceEntry), `"hosts":["policy.grid.example"]`)
	assert.Contains(t, string(r.GuardConfig), `"cluster":"outbound|443||policy.grid.example"`)
}

func TestClusterName(t *testing.T) {
	assert.Equal(t, "outbound|8443||d.ns.svc.cluster.local", ClusterName("d.ns.svc.cluster.local", 8443))
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"bad phase", func(o *Options) { o.Phase = "AUTHX" }, "phase"},
		{"bad fail strategy", func(o *Options) { o.FailStrategy = "FAIL_SOMETIMES" }, "failStrategy"},
		{"short sha256", func(o *Options) { o.SHA256 = "sha256:abc" }, "64 hex"},
		{"oci without digest", func(o *Options) { o.SHA256 = "" }, "manifest digest"},
		{"bad scheme", func(o *Options) { o.URL = "ftp://x/y" }, "scheme"},
		{"selector and targetRefs", func(o *Options) { o.TargetRefs = []TargetRef{{Kind: "Gateway", Name: "gw"}} }, "not both"},
		{"host env with value", func(o *Options) { o.Env = []EnvVar{{Name: "A", Value: "x", FromHost: true}} }, "HOST"},
		{"module with oci", func(o *Options) { o.ModuleFile = []byte("\x00asm") }, "--module"},
		{"wrong cluster in file", func(o *Options) {
			o.Guard = envoy.GuardInput{File: []byte(`{"policy":{"verifyKeys":{"keys":[]},"distributor":{"cluster":"distributor","channel":"c"}},"identity":{"peerCertificate":true}}`)}
		}, "outbound|8443||"},
		{"invalid guard config", func(o *Options) { o.Guard.VerifyKeys = nil }, "verifyKeys"},
		{"jwt-only without jwt", func(o *Options) { o.JWTOnly = true; o.Guard.JWTAudiences = nil; o.Guard.JWTTrustDomains = nil }, "jwtSvid"},
		{"bad distributor tls", func(o *Options) { o.Distributor.TLSMode = "MUTUAL" }, "TLS mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := exampleOptions(t)
			tc.edit(&o)
			_, err := Render(o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestSchemaRejects proves the CRD validation can fail: hand-edited objects
// with the mistakes people make are rejected by the Istio schema, including
// its CEL rules.
func TestSchemaRejects(t *testing.T) {
	set := istioCRDs(t)
	tests := []struct {
		name string
		path []string
		val  any
		want string
	}{
		{"bad phase", []string{"spec", "phase"}, "AUTHX", "phase"},
		{"bad failStrategy", []string{"spec", "failStrategy"}, "FAIL_SOMETIMES", "failStrategy"},
		{"sha256 with prefix", []string{"spec", "sha256"}, exampleDigest, "sha256"},
		{"sha256 upper case", []string{"spec", "sha256"}, strings.ToUpper(strings.TrimPrefix(exampleDigest, "sha256:")), "sha256"},
		{"unknown field", []string{"spec", "failstrategy"}, "FAIL_OPEN", "unknown field"},
		{"bad url scheme (CEL)", []string{"spec", "url"}, "ftp://registry/guard", "url must have schema"},
		{"selector and targetRefs (CEL)", []string{"spec", "targetRefs"}, []any{map[string]any{"kind": "Gateway", "name": "gw"}}, "only one of targetRefs or selector"},
		{"wildcard label (CEL)", []string{"spec", "selector", "matchLabels"}, map[string]any{"app": "*"}, "wildcard"},
		{"port out of range", []string{"spec", "match"}, []any{map[string]any{"mode": "SERVER", "ports": []any{map[string]any{"number": 70000}}}}, "number"},
		{"bad match mode", []string{"spec", "match"}, []any{map[string]any{"mode": "INBOUND"}}, "mode"},
		{"bad pull policy", []string{"spec", "imagePullPolicy"}, "Never", "imagePullPolicy"},
		{"host env with value (CEL)", []string{"spec", "vmConfig", "env"}, []any{map[string]any{"name": "A", "valueFrom": "HOST", "value": "x"}}, "value may only be set"},
		{"duplicate env (list map)", []string{"spec", "vmConfig", "env"}, []any{map[string]any{"name": "A", "value": "1"}, map[string]any{"name": "A", "value": "2"}}, "Duplicate"},
		{"no name", []string{"metadata", "name"}, "", "metadata.name"},
	}
	base, err := Render(exampleOptions(t))
	require.NoError(t, err)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := clone(t, base.WasmPlugin)
			setPath(obj, tc.path, tc.val)
			err := set.Validate(obj)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("PeerAuthentication bad mode", func(t *testing.T) {
		obj := clone(t, base.PeerAuthentication)
		setPath(obj, []string{"spec", "mtls", "mode"}, "STRICTER")
		require.Error(t, set.Validate(obj))
	})
	t.Run("DestinationRule bad tls mode", func(t *testing.T) {
		obj := clone(t, base.DestinationRule)
		obj["spec"].(map[string]any)["trafficPolicy"].(map[string]any)["portLevelSettings"].([]any)[0].(map[string]any)["tls"].(map[string]any)["mode"] = "TLS"
		require.Error(t, set.Validate(obj))
	})
	t.Run("ServiceEntry without hosts", func(t *testing.T) {
		o := exampleOptions(t)
		o.Distributor = &Distributor{URL: "https://policy.grid.example"}
		r, err := Render(o)
		require.NoError(t, err)
		obj := clone(t, r.ServiceEntry)
		delete(obj["spec"].(map[string]any), "hosts")
		require.Error(t, set.Validate(obj))
	})
}

func TestDigestForms(t *testing.T) {
	module := []byte("\x00asm\x01\x00\x00\x00")
	h := sha256.Sum256(module)
	fileSum := hex.EncodeToString(h[:])
	tests := []struct {
		name   string
		url    string
		sha    string
		module []byte
		want   string
		err    string
	}{
		{"oci sha256: prefix", "oci://r:5000/g:v1", exampleDigest, nil, strings.TrimPrefix(exampleDigest, "sha256:"), ""},
		{"oci upper hex", "oci://r:5000/g:v1", strings.ToUpper(strings.TrimPrefix(exampleDigest, "sha256:")), nil, strings.TrimPrefix(exampleDigest, "sha256:"), ""},
		{"http computed from module", "http://d:8080/modules/g/v1.wasm", "", module, fileSum, ""},
		{"http given and matching", "https://d/modules/g/v1.wasm", "sha256:" + fileSum, module, fileSum, ""},
		{"http mismatch", "https://d/modules/g/v1.wasm", exampleDigest, module, "", "does not match"},
		{"http without sum", "https://d/modules/g/v1.wasm", "", nil, "", "required"},
		{"file url", "file:///var/lib/guard.wasm", "", nil, "", ""},
		// Istio would pull these from Docker Hub.
		{"oci registry without repository", "oci://r:5000", exampleDigest, nil, "", "no repository"},
		{"oci repository without registry", "oci://meshguard/guard:v1", exampleDigest, nil, "", "not a registry host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := exampleOptions(t)
			o.URL, o.SHA256, o.ModuleFile = tc.url, tc.sha, tc.module
			r, err := Render(o)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			got, _ := r.WasmPlugin["spec"].(map[string]any)["sha256"].(string)
			assert.Equal(t, tc.want, got)
			require.NoError(t, istioCRDs(t).Validate(r.WasmPlugin))
		})
	}
}

func TestJWTOnlyIsAuthn(t *testing.T) {
	o := exampleOptions(t)
	o.JWTOnly = true
	o.Guard.PeerCertificate = false
	r, err := Render(o)
	require.NoError(t, err)
	assert.Equal(t, "AUTHN", r.WasmPlugin["spec"].(map[string]any)["phase"])
	require.NoError(t, istioCRDs(t).Validate(r.WasmPlugin))
}

func TestTargetRefs(t *testing.T) {
	o := exampleOptions(t)
	o.Selector = nil
	o.TargetRefs = []TargetRef{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "grid-ingress"}}
	o.MatchMode = "CLIENT_AND_SERVER"
	o.Ports = []uint32{8080, 8443}
	r, err := Render(o)
	require.NoError(t, err)
	require.NoError(t, istioCRDs(t).Validate(r.WasmPlugin))
}

func goldenOptions(t testing.TB) (Options, *Canary) {
	o := exampleOptions(t)
	o.Selector = nil
	return o, &Canary{URL: "oci://registry.meshguard-system.svc.cluster.local:5000/meshguard/guard:v1.5.0-rc.1", SHA256: canaryDigest}
}

// TestKustomizeGolden keeps istio/base and istio/overlays identical to what
// the renderer produces, and validates every object in them.
func TestKustomizeGolden(t *testing.T) {
	o, c := goldenOptions(t)
	files, err := Kustomize(o, c)
	require.NoError(t, err)
	if *update {
		for p, b := range files {
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, b, 0o644))
		}
	}
	var onDisk []string
	for _, dir := range []string{"base", "overlays"} {
		require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				onDisk = append(onDisk, filepath.ToSlash(p))
			}
			return err
		}))
	}
	var want []string
	for p := range files {
		want = append(want, p)
	}
	sort.Strings(want)
	sort.Strings(onDisk)
	require.Equal(t, want, onDisk, "checked-in files differ from the renderer's; run go test ./istio -run TestKustomizeGolden -update")
	set := istioCRDs(t)
	for _, p := range want {
		got, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, string(files[p]), string(got), "%s drifted from the renderer; run go test ./istio -run TestKustomizeGolden -update", p)
		if strings.HasSuffix(p, "kustomization.yaml") {
			continue
		}
		for _, doc := range strings.Split(string(got), "\n---\n") {
			require.NoError(t, set.ValidateYAML([]byte(doc)), p)
		}
	}
	// Stable and canary select disjoint pods.
	var stable, canary map[string]any
	require.NoError(t, yaml.Unmarshal(files["base/wasmplugin.yaml"], &stable))
	require.NoError(t, yaml.Unmarshal(files["overlays/canary/wasmplugin-canary.yaml"], &canary))
	assert.Equal(t, "stable", stable["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"].(map[string]any)[SelectorLabel])
	assert.Equal(t, "canary", canary["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"].(map[string]any)[SelectorLabel])
}

func clone(t *testing.T, m map[string]any) map[string]any {
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(mustJSON(t, m)), &out))
	return out
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func setPath(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// TestOutboundPlacement: a caller-side guard (direction outbound) renders
// with match mode CLIENT and a pluginConfig without caller identity; a
// SERVER match for it is refused.
func TestOutboundPlacement(t *testing.T) {
	o := exampleOptions(t)
	o.Guard.Direction = "outbound"
	o.Guard.PeerCertificate = false
	o.Guard.JWTAudiences, o.Guard.JWTTrustDomains = nil, nil
	r, err := Render(o)
	require.NoError(t, err)
	require.NoError(t, istioCRDs(t).Validate(r.WasmPlugin))
	spec := r.WasmPlugin["spec"].(map[string]any)
	assert.Equal(t, []any{map[string]any{"mode": "CLIENT"}}, spec["match"])
	cfg, err := config.Parse(r.GuardConfig)
	require.NoError(t, err)
	assert.True(t, cfg.Outbound())

	o.MatchMode = "SERVER"
	_, err = Render(o)
	require.ErrorContains(t, err, "match mode SERVER with direction outbound")
	o.MatchMode = ""
	o.Guard.PeerCertificate = true
	_, err = Render(o)
	require.ErrorContains(t, err, "leave identity empty")
}
