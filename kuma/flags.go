package kuma

import (
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
)

// Flags are the command-line flags of `meshguard render kuma`; Options
// translates them.
type Flags struct {
	envoy.RenderFlags
	o Options
	// Universal asks for Kuma's universal resource form (UniversalYAML).
	Universal bool
}

// AddFlags registers the flags on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	f.RenderFlags.AddFlags(fs)
	fs.Lookup("distributor").Usage = "distributor http(s)://HOST[:PORT] (added as cluster " + envoy.DefaultClusterName + ")"
	fs.Lookup("distributor-ca").Usage = "CA file inside the sidecar verifying the distributor"
	fs.BoolVar(&f.Universal, "universal", false, "Kuma universal mode: the kumactl apply form (type, mesh, name, spec)")
	fs.StringVar(&f.o.Name, "name", DefaultName, "MeshProxyPatch name")
	fs.StringVarP(&f.o.Namespace, "namespace", "n", DefaultNamespace, "namespace of the policies (Kuma's system namespace)")
	fs.StringVar(&f.o.Mesh, "mesh", DefaultMesh, "mesh name")
	fs.StringToStringVar(&f.o.Labels, "label", nil, "Dataplane label KEY=VALUE to target (repeatable)")
	fs.BoolVar(&f.o.LegacyMeshSubset, "meshsubset", false, "write targetRef {kind: MeshSubset, tags} for older Kuma")
	fs.StringVar(&f.o.ModuleURL, "module-url", "", "http(s) URL of the .wasm, e.g. https://DISTRIBUTOR/modules/REPO/TAG.wasm")
	fs.StringVar(&f.o.LocalModule, "local-module", "", "absolute path of the .wasm inside the sidecar (adds a ContainerPatch)")
}

// Options translates the flags, reading the files they name.
func (f *Flags) Options(read envoy.ReadFunc) (Options, error) {
	o := f.o
	var err error
	if o.Guard, err = f.Guard.Input(read); err != nil {
		return o, err
	}
	if o.Env, err = f.EnvMap(); err != nil {
		return o, err
	}
	if o.ModuleSHA256, err = f.FileSHA256(read); err != nil {
		return o, err
	}
	o.Distributor, o.DistributorCA, o.FailOpen = f.Distributor, f.DistributorCA, f.FailOpen
	return o, nil
}

// UniversalObject is the MeshProxyPatch in Kuma's universal resource form
// (what `kumactl apply -f` takes): type, mesh and name at the top level,
// the same spec.
func (r *Rendered) UniversalObject() map[string]any {
	obj := r.MeshProxyPatch
	md, _ := obj["metadata"].(map[string]any)
	labels, _ := md["labels"].(map[string]any)
	return map[string]any{"type": obj["kind"], "mesh": labels["kuma.io/mesh"], "name": md["name"], "spec": obj["spec"]}
}

// UniversalYAML is UniversalObject as YAML. A local module is then a path on
// the dataplane's host, so no ContainerPatch goes with it.
func (r *Rendered) UniversalYAML() ([]byte, error) { return yaml.Marshal(r.UniversalObject()) }
