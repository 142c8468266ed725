// Package kuma renders the Kuma resources that load the meshguard guard
// filter. Kuma has no first-class Wasm API, so a MeshProxyPatch adds the
// distributor cluster and inserts envoy.filters.http.wasm before the router on
// inbound listeners; a ContainerPatch mounts a locally provided module into
// the sidecar when the module is not fetched remotely. Every Envoy value is
// built and validated with go-control-plane (Kuma itself parses the values
// leniently, so a typo would vanish silently).
package kuma

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"

	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
)

// Defaults.
const (
	DefaultName      = "meshguard-guard"
	DefaultNamespace = "kuma-system"
	DefaultMesh      = "default"
	// ModuleVolume is the pod volume the ContainerPatch mounts into the sidecar.
	ModuleVolume = "meshguard-module"
)

// Options is everything that goes into the rendered resources.
type Options struct {
	Name      string
	Namespace string
	Mesh      string
	// Labels select the Dataplanes (targetRef kind Dataplane with labels);
	// empty targets the whole mesh.
	Labels map[string]string
	// LegacyMeshSubset writes the pre-2.x targetRef {kind: MeshSubset, tags}
	// for older control planes; Kuma 2.14's CRD no longer accepts it.
	LegacyMeshSubset bool
	// Distributor is http(s)://host[:port]; it becomes the added cluster.
	Distributor string
	// DistributorCA is a CA file inside the sidecar to verify the distributor.
	DistributorCA string
	// ModuleURL is the http(s) URL of the .wasm (usually the distributor's
	// /modules/<repo>/<tag>.wasm) and ModuleSHA256 its file sha256.
	ModuleURL    string
	ModuleSHA256 string
	// LocalModule is the absolute path of the .wasm inside the sidecar; a
	// ContainerPatch mounts the pod volume ModuleVolume at its directory.
	LocalModule string
	// FailOpen lets traffic through when the VM is broken.
	FailOpen bool
	// Env are inline VM environment variables.
	Env map[string]string
	// Guard is the guard configuration.
	Guard envoy.GuardInput
}

// Rendered holds the objects and the guard configuration used.
type Rendered struct {
	MeshProxyPatch map[string]any
	ContainerPatch map[string]any
	GuardConfig    []byte
}

// Objects lists the non-nil objects (ContainerPatch first: pods reference it).
func (r *Rendered) Objects() []map[string]any {
	var out []map[string]any
	if r.ContainerPatch != nil {
		out = append(out, r.ContainerPatch)
	}
	return append(out, r.MeshProxyPatch)
}

// YAML writes the objects as one multi-document stream.
func (r *Rendered) YAML() ([]byte, error) {
	var b bytes.Buffer
	for i, o := range r.Objects() {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("kuma: %w", err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

var objectName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// Render builds the MeshProxyPatch (and the ContainerPatch for a local module).
func Render(o Options) (*Rendered, error) {
	name := orDefault(o.Name, DefaultName)
	ns := orDefault(o.Namespace, DefaultNamespace)
	mesh := orDefault(o.Mesh, DefaultMesh)
	var errs []error
	if !objectName.MatchString(name) || len(name) > 253 {
		errs = append(errs, fmt.Errorf("name %q is not a Kubernetes object name", name))
	}
	if o.ModuleURL != "" && o.LocalModule != "" {
		errs = append(errs, errors.New("set a module URL or a local module, not both"))
	}
	var mods []any
	var callouts envoy.Callouts
	if o.Distributor != "" {
		up, err := envoy.ParseUpstream(o.Distributor)
		if err != nil {
			errs = append(errs, err)
		} else {
			up.Name = envoy.DefaultClusterName
			up.CAFile = o.DistributorCA
			c, err := envoy.Cluster(up)
			if err != nil {
				errs = append(errs, err)
			} else {
				y, err := envoy.YAML(c)
				if err != nil {
					return nil, err
				}
				mods = append(mods, map[string]any{"cluster": map[string]any{"operation": "Add", "value": string(y)}})
				callouts = envoy.Callouts{Cluster: up.Name, Authority: up.Host}
			}
		}
	}
	if o.ModuleURL != "" && callouts.Cluster == "" {
		errs = append(errs, errors.New("a remote module is fetched through the distributor cluster: set the distributor"))
	}
	cfg, parsed, err := envoy.GuardConfig(o.Guard, callouts)
	if err != nil {
		errs = append(errs, err)
	}
	// The caller's side: the guard goes before the router of the outbound
	// listeners (direction outbound), where the app's requests leave.
	origin := "inbound"
	outbound := parsed != nil && parsed.Outbound()
	if outbound {
		origin = "outbound"
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("kuma: %w", errors.Join(errs...))
	}
	filters, err := envoy.GuardFilters(envoy.Filter{
		Module:   envoy.Module{URL: o.ModuleURL, SHA256: o.ModuleSHA256, Cluster: callouts.Cluster, LocalFile: o.LocalModule},
		Config:   cfg,
		Env:      o.Env,
		FailOpen: o.FailOpen,
		Outbound: outbound,
	})
	if err != nil {
		return nil, fmt.Errorf("kuma: %w", err)
	}
	// Each AddBefore lands just before the router, so the filters keep their
	// order: the one-URI-SAN RBAC filter, then the guard.
	for _, hf := range filters {
		fy, err := envoy.YAML(hf)
		if err != nil {
			return nil, err
		}
		mods = append(mods, map[string]any{"httpFilter": map[string]any{
			"operation": "AddBefore",
			"match":     map[string]any{"name": envoy.RouterFilterName, "origin": origin},
			"value":     string(fy),
		}})
	}

	target := map[string]any{"kind": "Mesh"}
	switch {
	case o.LegacyMeshSubset:
		target = map[string]any{"kind": "MeshSubset", "tags": stringMap(o.Labels)}
	case len(o.Labels) > 0:
		target = map[string]any{"kind": "Dataplane", "labels": stringMap(o.Labels)}
	}
	r := &Rendered{GuardConfig: cfg}
	r.MeshProxyPatch = map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "MeshProxyPatch",
		"metadata":   metadata(name, ns, mesh),
		"spec": map[string]any{
			"targetRef": target,
			"default":   map[string]any{"appendModifications": mods},
		},
	}
	if o.LocalModule != "" {
		mount, err := json.Marshal(map[string]any{"name": ModuleVolume, "mountPath": path.Dir(o.LocalModule), "readOnly": true})
		if err != nil {
			return nil, fmt.Errorf("kuma: %w", err)
		}
		r.ContainerPatch = map[string]any{
			"apiVersion": "kuma.io/v1alpha1",
			"kind":       "ContainerPatch",
			"metadata":   metadata(name+"-module", ns, ""),
			"spec": map[string]any{"sidecarPatch": []any{map[string]any{
				"op": "add", "path": "/volumeMounts/-", "value": string(mount),
			}}},
		}
	}
	return r, nil
}

func metadata(name, ns, mesh string) map[string]any {
	labels := map[string]any{"app.kubernetes.io/part-of": "meshguard"}
	if mesh != "" {
		labels["kuma.io/mesh"] = mesh
	}
	return map[string]any{"name": name, "namespace": ns, "labels": labels}
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
