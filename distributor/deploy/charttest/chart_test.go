package charttest

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/deploy/image"
	"github.com/meshguard/meshguard/distributor/server"
)

const (
	chartDir  = "../helm/meshguard-distributor"
	namespace = "meshguard-system"
)

// render is `helm template meshguard-distributor CHART -n meshguard-system -f values...`.
func render(t *testing.T, overrides map[string]any, valueFiles ...string) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, f))
		require.NoError(t, err)
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	vals = chartutil.CoalesceTables(overrides, vals)
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: "meshguard-distributor", Namespace: namespace, IsInstall: true, Revision: 1,
	}, caps)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// objects splits the rendered manifests into objects, validating each
// against the Kubernetes schemas: strict decoding into the typed objects
// (unknown or duplicate fields, wrong types) and, for built-in kinds, the
// structured-merge-diff schema client-go generates from the OpenAPI spec.
func objects(t *testing.T, files map[string]string) []*unstructured.Unstructured {
	t.Helper()
	sch := runtime.NewScheme()
	require.NoError(t, scheme.AddToScheme(sch))
	require.NoError(t, monitoringv1.AddToScheme(sch))
	strict := serializer.NewCodecFactory(sch, serializer.EnableStrict).UniversalDeserializer()
	tc := applyconfigurations.NewTypeConverter(scheme.Scheme)

	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(files[name], "\n---") {
			if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" || isComment(doc) {
				continue
			}
			j, err := yaml.YAMLToJSONStrict([]byte(doc))
			require.NoError(t, err, "%s: %s", name, doc)
			obj, gvk, err := strict.Decode(j, nil, nil)
			require.NoError(t, err, "%s: schema violation", name)
			u := &unstructured.Unstructured{}
			require.NoError(t, u.UnmarshalJSON(j), name)
			if scheme.Scheme.Recognizes(*gvk) {
				_, err := tc.ObjectToTyped(u)
				require.NoError(t, err, "%s: %s does not match the Kubernetes OpenAPI schema", name, gvk.Kind)
			}
			_ = obj
			out = append(out, u)
		}
	}
	return out
}

func isComment(doc string) bool {
	for _, l := range strings.Split(doc, "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func byKind(objs []*unstructured.Unstructured) map[string][]*unstructured.Unstructured {
	m := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		m[o.GetKind()] = append(m[o.GetKind()], o)
	}
	return m
}

func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &v, true))
	return &v
}

func TestChart(t *testing.T) {
	cases := []struct {
		name      string
		files     []string
		overrides map[string]any
		kinds     []string
		mode      string
	}{
		{name: "default", kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}, mode: "sidecar"},
		{name: "ha", files: []string{"values-ha.yaml"}, mode: "spiffe",
			kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"}},
		{name: "spiffe from a secret, tokens", mode: "spiffe", overrides: map[string]any{
			"mesh":   map[string]any{"mode": "spiffe"},
			"spiffe": map[string]any{"secretName": "meshguard-svid"},
			"tokens": map[string]any{"secretName": "meshguard-tokens"},
		}, kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}},
		{name: "registry organisations and device classes", mode: "sidecar", overrides: map[string]any{
			"allow": map[string]any{"registry": []any{"spiffe://cluster.local/ns/dso/sa/*"}, "attest": []any{"anonymous"}},
			"registry": map[string]any{
				"organisations": []any{map[string]any{"name": "grid-op", "members": []any{"spiffe://cluster.local/ns/dso/sa/*"}, "device_prefixes": []any{"inv-"}}},
				"deviceClasses": map[string]any{"inverter": map[string]any{"target_paths": []any{"/v1/inverters/{id}/**"}, "write_paths": []any{"/v1/inverters/{id}/**"}}},
			},
		}, kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}},
		{name: "decision log: proxy bindings, checkpoint key from a secret", mode: "sidecar", overrides: map[string]any{
			"decisions": map[string]any{
				"checkpointKeySecret": map[string]any{"name": "meshguard-checkpoint", "key": "checkpoint.key"},
				"proxyBindings":       []any{map[string]any{"identity": "spiffe://cluster.local/ns/{ns}/sa/*", "proxy": "sidecar~*~*.{ns}~{ns}.svc.cluster.local"}},
			},
		}, kinds: []string{"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files, err := render(t, tc.overrides, tc.files...)
			require.NoError(t, err)
			objs := byKind(objects(t, files))
			var kinds []string
			for k := range objs {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			assert.Equal(t, tc.kinds, kinds)

			d := typed[appsv1.Deployment](t, objs["Deployment"][0])
			pod := d.Spec.Template.Spec
			require.Len(t, pod.Containers, 1)
			c := pod.Containers[0]
			psc, csc := pod.SecurityContext, c.SecurityContext
			assert.True(t, *psc.RunAsNonRoot)
			assert.Equal(t, int64(image.UID), *psc.RunAsUser, "the image's user")
			assert.True(t, *csc.ReadOnlyRootFilesystem)
			assert.False(t, *csc.AllowPrivilegeEscalation)
			assert.Equal(t, []corev1.Capability{"ALL"}, csc.Capabilities.Drop)
			assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
			assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
			assert.NotEmpty(t, c.Resources.Requests)
			wantScheme := corev1.URISchemeHTTP
			if tc.mode == "spiffe" {
				wantScheme = corev1.URISchemeHTTPS
			}
			assert.Equal(t, wantScheme, c.ReadinessProbe.HTTPGet.Scheme)

			// Every mount has a volume; the Services and the PDB select the pods.
			vols := map[string]bool{}
			for _, v := range pod.Volumes {
				vols[v.Name] = true
			}
			for _, m := range c.VolumeMounts {
				assert.True(t, vols[m.Name], "mount %s has no volume", m.Name)
			}
			podLabels := labels.Set(d.Spec.Template.Labels)
			for _, so := range objs["Service"] {
				s := typed[corev1.Service](t, so)
				assert.True(t, labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels), s.Name)
			}
			pdb := typed[policyv1.PodDisruptionBudget](t, objs["PodDisruptionBudget"][0])
			sel, err := metav1LabelSelector(pdb)
			require.NoError(t, err)
			assert.True(t, sel.Matches(podLabels))

			// The ConfigMap is a configuration the distributor accepts.
			cm := typed[corev1.ConfigMap](t, objs["ConfigMap"][0])
			path := filepath.Join(t.TempDir(), "distributor.yaml")
			require.NoError(t, os.WriteFile(path, []byte(cm.Data["distributor.yaml"]), 0o644))
			cfg, err := server.LoadConfig(path)
			require.NoError(t, err, cm.Data["distributor.yaml"])
			require.NoError(t, cfg.Validate())
			switch tc.mode {
			case "sidecar":
				assert.True(t, cfg.XFCC.Trust, "the sidecar's XFCC is the identity source")
				assert.Equal(t, "spiffe://cluster.local/ns/meshguard-system/sa/meshguard-distributor", cfg.XFCC.By)
				assert.NoError(t, server.CheckListen(cfg))
			case "spiffe":
				assert.False(t, cfg.XFCC.Trust)
				assert.True(t, cfg.TLS.Enabled())
				assert.NoError(t, server.CheckListen(cfg))
				assert.Equal(t, "8443", d.Spec.Template.Annotations["traffic.sidecar.istio.io/excludeInboundPorts"])
			}
			if tc.overrides["registry"] != nil {
				require.Len(t, cfg.Registry.Organisations, 1)
				assert.Equal(t, "grid-op", cfg.Registry.Organisations[0].Name)
				assert.Equal(t, []string{"inv-"}, cfg.Registry.Organisations[0].DevicePrefixes)
				assert.Equal(t, []string{"/v1/inverters/{id}/**"}, cfg.Registry.DeviceClasses["inverter"].TargetPaths)
				assert.Equal(t, []string{"anonymous"}, cfg.Allow["attest"])
			} else {
				assert.Empty(t, cfg.Registry.Organisations)
				assert.Equal(t, []string{"loopback"}, cfg.Allow["registry"], "the distributor's default stays")
			}
			if tc.overrides["decisions"] != nil {
				assert.Equal(t, "/etc/meshguard/checkpoint/checkpoint.key", cfg.Decisions.CheckpointKey)
				require.Len(t, cfg.Decisions.ProxyBindings, 1)
				assert.Equal(t, "sidecar~*~*.{ns}~{ns}.svc.cluster.local", cfg.Decisions.ProxyBindings[0].Proxy)
				_, err := auth.CompileProxyBindings(cfg.Decisions.ProxyBindings)
				assert.NoError(t, err)
			} else if slices.Contains(tc.files, "values-ha.yaml") {
				assert.Equal(t, "/etc/meshguard/checkpoint/checkpoint.key", cfg.Decisions.CheckpointKey, "replicas share one key")
			} else {
				assert.Empty(t, cfg.Decisions.CheckpointKey, "generated on the data volume")
				assert.Empty(t, cfg.Decisions.ProxyBindings)
			}
			for _, a := range cfg.Allow["publish"] {
				assert.NotEqual(t, "anonymous", a)
			}
		})
	}
}

func TestHAValues(t *testing.T) {
	files, err := render(t, nil, "values-ha.yaml")
	require.NoError(t, err)
	objs := byKind(objects(t, files))
	d := typed[appsv1.Deployment](t, objs["Deployment"][0])
	assert.Equal(t, int32(3), *d.Spec.Replicas)
	pdb := typed[policyv1.PodDisruptionBudget](t, objs["PodDisruptionBudget"][0])
	assert.Equal(t, 2, pdb.Spec.MinAvailable.IntValue())
	var csi bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		csi = csi || (v.CSI != nil && v.CSI.Driver == "csi.spiffe.io")
	}
	assert.True(t, csi, "SPIFFE Workload API through the CSI driver")

	// Shared state: bundles and the decision log in PostgreSQL, the password,
	// CA and checkpoint key from Secrets mounted where the config points.
	cm := typed[corev1.ConfigMap](t, objs["ConfigMap"][0])
	path := filepath.Join(t.TempDir(), "distributor.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cm.Data["distributor.yaml"]), 0o644))
	cfg, err := server.LoadConfig(path)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	assert.Equal(t, "postgres", cfg.State.Backend)
	assert.Equal(t, "verify-full", cfg.State.Postgres.SSLMode)
	userinfo, _, _ := strings.Cut(strings.TrimPrefix(cfg.State.Postgres.URL, "postgres://"), "@")
	assert.NotContains(t, userinfo, ":", "no password in the URL")
	mounts := map[string]string{}
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	secrets := map[string]string{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	for file, secret := range map[string]string{
		cfg.State.Postgres.PasswordFile: "meshguard-postgres",
		cfg.State.Postgres.CAFile:       "meshguard-postgres-ca",
		cfg.Decisions.CheckpointKey:     "meshguard-checkpoint-key",
	} {
		vol := mounts[filepath.Dir(file)]
		require.NotEmpty(t, vol, "%s is mounted", file)
		assert.Equal(t, secret, secrets[vol], file)
	}
	rule := typed[monitoringv1.PrometheusRule](t, objs["PrometheusRule"][0])
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
		}
	}
	assert.Contains(t, alerts, "MeshguardBundleExpired")
	assert.Contains(t, alerts, "MeshguardAuditRecordsDropped")
	assert.Contains(t, alerts, "MeshguardBundleVerificationFailures")
}

func TestChartRefusesBrokenValues(t *testing.T) {
	for name, tc := range map[string]struct {
		over  map[string]any
		msg   string
		files []string
	}{
		"mode":              {over: map[string]any{"mesh": map[string]any{"mode": "plain"}}, msg: "/mesh/mode"},
		"spiffe without id": {over: map[string]any{"mesh": map[string]any{"mode": "spiffe"}}, msg: "X509-SVID"},
		"replicas on rwo":   {over: map[string]any{"replicaCount": 3}, msg: "ReadWriteOnce"},
		"replicas, fs":      {over: map[string]any{"replicaCount": 3, "persistence": map[string]any{"enabled": false}}, msg: "storage.backend oci"},
		"replicas, fs state": {map[string]any{"replicaCount": 3, "persistence": map[string]any{"enabled": false},
			"storage": map[string]any{"backend": "oci", "oci": map[string]any{"registry": "harbor.example.com/m"}}}, "state.backend postgres", nil},
		"postgres, no url": {over: map[string]any{"state": map[string]any{"backend": "postgres"}}, msg: "state.postgres.url"},
		"password in url": {map[string]any{"state": map[string]any{"backend": "postgres",
			"postgres": map[string]any{"url": "postgres://meshguard:hunter2@pg:5432/m"}}}, "passwordSecret", nil},
		"replicas, no checkpoint key": {map[string]any{"decisions": map[string]any{"checkpointKeySecret": map[string]any{"name": ""}}}, "checkpointKeySecret", []string{"values-ha.yaml"}},
		"bad sslmode":                 {over: map[string]any{"state": map[string]any{"postgres": map[string]any{"sslmode": "sometimes"}}}, msg: "sslmode"},
		"no keys":                     {over: map[string]any{"keys": map[string]any{"secretName": ""}}, msg: "keys.secretName"},
		"typo in values":              {over: map[string]any{"mesh": map[string]any{"mod": "spiffe"}}, msg: "mod"},
		"bad digest":                  {over: map[string]any{"image": map[string]any{"digest": "latest"}}, msg: "digest"},
		"bad channel name":            {over: map[string]any{"bundles": map[string]any{"channels": map[string]any{"Prod": map[string]any{"scope": "x"}}}}, msg: "Prod"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, tc.over, tc.files...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}
