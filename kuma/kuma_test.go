package kuma

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/istio/crdcheck"
)

var update = flag.Bool("update", false, "rewrite the checked-in example manifests from the renderer")

// kumaCRDs loads the Kuma CRDs from <module root>/../shared/kuma.
func kumaCRDs(t *testing.T) *crdcheck.Set {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	shared := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "..", "shared", "kuma")
	set, err := crdcheck.Load(filepath.Join(shared, "kuma.io_meshproxypatches.yaml"), filepath.Join(shared, "kuma.io_containerpatches.yaml"))
	require.NoError(t, err, "the Kuma CRDs live in ../shared/kuma beside the repository")
	return set
}

func verifyKeys(t testing.TB) []byte {
	b, err := os.ReadFile("../istio/testdata/verify-keys.json")
	require.NoError(t, err)
	return b
}

var module = []byte("\x00asm\x01\x00\x00\x00meshguard example module")

func remoteOptions(t testing.TB) Options {
	h := sha256.Sum256(module)
	return Options{
		Labels:        map[string]string{"app": "meter-api"},
		Distributor:   "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443",
		DistributorCA: "/var/run/secrets/meshguard/distributor-ca.pem",
		ModuleURL:     "https://meshguard-distributor.meshguard-system.svc.cluster.local:8443/modules/meshguard/guard/v1.4.0.wasm",
		ModuleSHA256:  "sha256:" + hex.EncodeToString(h[:]),
		Env:           map[string]string{"MESHGUARD_ZONE": "north"},
		Guard: envoy.GuardInput{
			VerifyKeys:      verifyKeys(t),
			Channel:         "grid-prod",
			PeerCertificate: true,
			AuditSink:       true,
		},
	}
}

func localOptions(t testing.TB) Options {
	o := remoteOptions(t)
	o.ModuleURL, o.ModuleSHA256 = "", ""
	o.LocalModule = "/var/lib/meshguard/guard.wasm"
	return o
}

func modifications(t *testing.T, r *Rendered) []any {
	return r.MeshProxyPatch["spec"].(map[string]any)["default"].(map[string]any)["appendModifications"].([]any)
}

func TestRemoteModule(t *testing.T) {
	set := kumaCRDs(t)
	r, err := Render(remoteOptions(t))
	require.NoError(t, err)
	assert.Nil(t, r.ContainerPatch)
	require.NoError(t, set.Validate(r.MeshProxyPatch))
	mods := modifications(t, r)
	require.Len(t, mods, 3, "cluster, one-URI-SAN RBAC filter, guard")

	cl := mods[0].(map[string]any)["cluster"].(map[string]any)
	assert.Equal(t, "Add", cl["operation"])
	c, err := envoy.DecodeCluster([]byte(cl["value"].(string)))
	require.NoError(t, err)
	assert.Equal(t, envoy.DefaultClusterName, c.GetName())
	assert.NotNil(t, c.GetTransportSocket(), "https distributor gets TLS")

	rbacMod := mods[1].(map[string]any)["httpFilter"].(map[string]any)
	assert.Equal(t, "AddBefore", rbacMod["operation"], "added before the router ahead of the guard, so it runs first")
	assert.Equal(t, map[string]any{"name": "envoy.filters.http.router", "origin": "inbound"}, rbacMod["match"])
	_, err = envoy.DecodeOneURISANFilter([]byte(rbacMod["value"].(string)))
	require.NoError(t, err)

	hfMod := mods[2].(map[string]any)["httpFilter"].(map[string]any)
	assert.Equal(t, "AddBefore", hfMod["operation"])
	assert.Equal(t, map[string]any{"name": "envoy.filters.http.router", "origin": "inbound"}, hfMod["match"])
	hf, w, err := envoy.DecodeHTTPFilter([]byte(hfMod["value"].(string)))
	require.NoError(t, err)
	assert.Equal(t, envoy.WasmFilterName, hf.GetName())
	vm := w.GetConfig().GetVmConfig()
	assert.Equal(t, envoy.RuntimeV8, vm.GetRuntime())
	remote := vm.GetCode().GetRemote()
	require.NotNil(t, remote)
	assert.Equal(t, envoy.DefaultClusterName, remote.GetHttpUri().GetCluster())
	h := sha256.Sum256(module)
	assert.Equal(t, hex.EncodeToString(h[:]), remote.GetSha256())
	assert.Equal(t, "FAIL_CLOSED", w.GetConfig().GetFailurePolicy().String())

	// The configuration handed to the VM is a valid guard config whose
	// callouts name the cluster the patch adds.
	cfgJSON := configString(t, w.GetConfig().GetConfiguration().GetValue())
	cfg, err := config.Parse([]byte(cfgJSON))
	require.NoError(t, err)
	assert.Equal(t, envoy.DefaultClusterName, cfg.Policy.Distributor.Cluster)
	assert.Equal(t, envoy.DefaultClusterName, cfg.Audit.Sink.Cluster)
	assert.Equal(t, "meshguard-distributor.meshguard-system.svc.cluster.local", cfg.Audit.Sink.Authority)
}

// configString decodes the serialized google.protobuf.StringValue.
func configString(t *testing.T, b []byte) string {
	t.Helper()
	// StringValue wire format: field 1, length-delimited.
	require.NotEmpty(t, b)
	require.Equal(t, byte(0x0a), b[0])
	n, i := 0, 1
	for shift := 0; ; shift += 7 {
		c := b[i]
		i++
		n |= int(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	require.Equal(t, len(b), i+n)
	return string(b[i:])
}

func TestLocalModule(t *testing.T) {
	set := kumaCRDs(t)
	r, err := Render(localOptions(t))
	require.NoError(t, err)
	require.NotNil(t, r.ContainerPatch)
	for _, o := range r.Objects() {
		require.NoError(t, set.Validate(o))
	}
	mods := modifications(t, r)
	_, w, err := envoy.DecodeHTTPFilter([]byte(mods[len(mods)-1].(map[string]any)["httpFilter"].(map[string]any)["value"].(string)))
	require.NoError(t, err)
	assert.Equal(t, "/var/lib/meshguard/guard.wasm", w.GetConfig().GetVmConfig().GetCode().GetLocal().GetFilename())
	patch := r.ContainerPatch["spec"].(map[string]any)["sidecarPatch"].([]any)[0].(map[string]any)
	var mount map[string]any
	require.NoError(t, json.Unmarshal([]byte(patch["value"].(string)), &mount))
	assert.Equal(t, map[string]any{"name": ModuleVolume, "mountPath": "/var/lib/meshguard", "readOnly": true}, mount)
}

func TestInlineOnlyNeedsNoCluster(t *testing.T) {
	o := localOptions(t)
	o.Distributor = ""
	o.Guard = envoy.GuardInput{VerifyKeys: verifyKeys(t), InlineBundle: []byte("signed bundle bytes"), PeerCertificate: true}
	o.Labels = nil
	r, err := Render(o)
	require.NoError(t, err)
	require.NoError(t, kumaCRDs(t).Validate(r.MeshProxyPatch))
	assert.Len(t, modifications(t, r), 2, "the RBAC filter and the guard")
	assert.Equal(t, map[string]any{"kind": "Mesh"}, r.MeshProxyPatch["spec"].(map[string]any)["targetRef"])
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"both module sources", func(o *Options) { o.LocalModule = "/m/g.wasm" }, "not both"},
		{"remote without sha", func(o *Options) { o.ModuleSHA256 = "" }, "sha256"},
		{"remote without distributor", func(o *Options) {
			o.Distributor = ""
			o.Guard.Channel = ""
			o.Guard.AuditSink = false
			o.Guard.InlineBundle = []byte("b")
		}, "distributor"},
		{"relative local module", func(o *Options) { o.ModuleURL = ""; o.LocalModule = "guard.wasm" }, "absolute"},
		{"bad distributor", func(o *Options) { o.Distributor = "tcp://d:1" }, "http(s)"},
		{"guard config invalid", func(o *Options) { o.Guard.PeerCertificate = false }, "identity"},
		{"cluster mismatch", func(o *Options) {
			o.Guard = envoy.GuardInput{File: []byte("policy:\n  verifyKeys: {keys: []}\n  distributor: {cluster: 'outbound|8443||d', channel: c}\nidentity: {peerCertificate: true}\n")}
		}, "meshguard-distributor"},
		{"bad name", func(o *Options) { o.Name = "Meshguard_Guard" }, "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := remoteOptions(t)
			tc.edit(&o)
			_, err := Render(o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestSchemaRejects proves the Kuma CRD validation can fail.
func TestSchemaRejects(t *testing.T) {
	set := kumaCRDs(t)
	r, err := Render(localOptions(t))
	require.NoError(t, err)
	mpp := func(edit func(spec map[string]any)) map[string]any {
		var m map[string]any
		b, _ := json.Marshal(r.MeshProxyPatch)
		require.NoError(t, json.Unmarshal(b, &m))
		edit(m["spec"].(map[string]any))
		return m
	}
	mods := func(s map[string]any) []any { return s["default"].(map[string]any)["appendModifications"].([]any) }
	tests := []struct {
		name string
		obj  map[string]any
	}{
		{"bad httpFilter operation", mpp(func(s map[string]any) {
			mods(s)[1].(map[string]any)["httpFilter"].(map[string]any)["operation"] = "InsertBefore"
		})},
		{"bad cluster operation", mpp(func(s map[string]any) {
			mods(s)[0].(map[string]any)["cluster"].(map[string]any)["operation"] = "AddBefore"
		})},
		{"httpFilter value not a string", mpp(func(s map[string]any) {
			mods(s)[1].(map[string]any)["httpFilter"].(map[string]any)["value"] = map[string]any{"name": "x"}
		})},
		{"MeshSubset rejected by Kuma 2.14", mpp(func(s map[string]any) {
			s["targetRef"] = map[string]any{"kind": "MeshSubset", "tags": map[string]any{"app": "x"}}
		})},
		{"unknown field", mpp(func(s map[string]any) { s["defaults"] = s["default"] })},
		{"no default", mpp(func(s map[string]any) { delete(s, "default") })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { require.Error(t, set.Validate(tc.obj)) })
	}
	t.Run("ContainerPatch bad op", func(t *testing.T) {
		var cp map[string]any
		b, _ := json.Marshal(r.ContainerPatch)
		require.NoError(t, json.Unmarshal(b, &cp))
		cp["spec"].(map[string]any)["sidecarPatch"].([]any)[0].(map[string]any)["op"] = "append"
		require.Error(t, set.Validate(cp))
	})
	t.Run("legacy MeshSubset is not valid on Kuma 2.14", func(t *testing.T) {
		o := remoteOptions(t)
		o.LegacyMeshSubset = true
		lr, err := Render(o)
		require.NoError(t, err)
		require.ErrorContains(t, set.Validate(lr.MeshProxyPatch), "MeshSubset")
	})
}

// TestEnvoyValuesRejectTypos shows why values are decoded strictly: Kuma
// itself would ignore a misspelt field.
func TestEnvoyValuesRejectTypos(t *testing.T) {
	r, err := Render(remoteOptions(t))
	require.NoError(t, err)
	mods := modifications(t, r)
	fv := mods[2].(map[string]any)["httpFilter"].(map[string]any)["value"].(string)
	cv := mods[0].(map[string]any)["cluster"].(map[string]any)["value"].(string)
	_, _, err = envoy.DecodeHTTPFilter([]byte(strings.Replace(fv, "vm_config", "vm_cfg", 1)))
	assert.Error(t, err)
	_, _, err = envoy.DecodeHTTPFilter([]byte(strings.Replace(fv, "name: envoy.filters.http.wasm", "name: \"\"", 1)))
	assert.Error(t, err, "an empty filter name fails ValidateAll")
	_, _, err = envoy.DecodeHTTPFilter([]byte(strings.Replace(fv, "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasmm", 1)))
	assert.Error(t, err, "an unresolvable Any type URL is an error")
	_, err = envoy.DecodeCluster([]byte(strings.Replace(cv, "connect_timeout", "connect_timeot", 1)))
	assert.Error(t, err)
}

// TestExamplesGolden keeps kuma/examples identical to the renderer's output.
func TestExamplesGolden(t *testing.T) {
	set := kumaCRDs(t)
	examples := map[string]Options{
		"examples/remote-module.yaml": remoteOptions(t),
		"examples/local-module.yaml":  localOptions(t),
		"examples/outbound.yaml":      outboundOptions(t),
	}
	for p, o := range examples {
		r, err := Render(o)
		require.NoError(t, err)
		y, err := r.YAML()
		require.NoError(t, err)
		want := append([]byte("# Generated by `meshguard render kuma`. Do not edit: change the flags and regenerate\n# (go test ./kuma -run TestExamplesGolden -update); a golden test keeps this file identical.\n"), y...)
		if *update {
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, want, 0o644))
		}
		got, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "%s drifted; run go test ./kuma -run TestExamplesGolden -update", p)
		for _, doc := range strings.Split(string(got), "\n---\n") {
			var obj map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
			require.NoError(t, set.Validate(obj), p)
		}
	}
}

func outboundOptions(t testing.TB) Options {
	o := remoteOptions(t)
	o.Labels = map[string]string{"app": "der-controller"}
	o.Guard.Direction, o.Guard.PeerCertificate = "outbound", false
	return o
}

// TestOutboundPatch: a caller-side guard goes before the router of the
// outbound listeners, without the one-URI-SAN filter (the outbound
// listener's downstream is the local application).
func TestOutboundPatch(t *testing.T) {
	r, err := Render(outboundOptions(t))
	require.NoError(t, err)
	var filters []map[string]any
	for _, m := range modifications(t, r) {
		if hf, ok := m.(map[string]any)["httpFilter"].(map[string]any); ok {
			filters = append(filters, hf)
		}
	}
	require.Len(t, filters, 1, "only the guard")
	assert.Equal(t, map[string]any{"name": envoy.RouterFilterName, "origin": "outbound"}, filters[0]["match"])
	_, w, err := envoy.DecodeHTTPFilter([]byte(filters[0]["value"].(string)))
	require.NoError(t, err)
	assert.Contains(t, w.GetConfig().GetConfiguration().String(), `direction`)
	assert.Contains(t, string(r.GuardConfig), `"direction":"outbound"`)
}
