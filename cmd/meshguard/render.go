package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/internal/output"
	"github.com/meshguard/meshguard/istio"
	"github.com/meshguard/meshguard/kuma"
)

// newRenderCmd is the render verb group.
func newRenderCmd() *cobra.Command {
	return newGroup("render", "Render Istio, Kuma and Envoy resources that load meshguard",
		newRenderIstioCmd(), newRenderKumaCmd(), newRenderEnvoyCmd())
}

// renderOutput are the output flags of the render verbs: -o yaml|json and
// --output-file (default stdout).
type renderOutput struct {
	file   string
	format *outputFormat
}

func (r *renderOutput) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.file, "output-file", stdio, "file to write, or - for stdout")
	r.format = addOutputFlag(cmd, output.YAML, output.JSON)
}

// write writes the rendered objects: the renderer's YAML as it is, or JSON
// (one object, or a kubectl List of several).
func (r *renderOutput) write(cmd *cobra.Command, objs []map[string]any, y []byte) error {
	data := y
	if r.format.format() == output.JSON {
		var v any = objs
		if len(objs) == 1 {
			v = objs[0]
		} else {
			v = map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}
		}
		j, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		data = append(j, '\n')
	}
	return writeOutputFile(cmd, r.file, data, 0o644)
}

// renderReader reads the files render flags name ("-" is stdin); a file
// that cannot be read is a usage error.
func renderReader(cmd *cobra.Command) envoy.ReadFunc { return newInputs(cmd).read }

// checkGuard is checkGuardPolicy for a render verb: nothing is rendered
// from a private verification key or an inline bundle the proxy would
// refuse (exit 1).
func checkGuard(cmd *cobra.Command, in envoy.GuardInput) error {
	return failed(checkGuardPolicy(in, cmd.ErrOrStderr(), time.Now()))
}

func newRenderIstioCmd() *cobra.Command {
	var (
		f            istio.Flags
		out          renderOutput
		kustomizeDir string
	)
	cmd := &cobra.Command{
		Use:   "istio",
		Short: "Render the WasmPlugin, distributor ServiceEntry/DestinationRule and STRICT PeerAuthentication",
		Long: `Render the Istio resources that load the meshguard guard filter.

The sha256 is the manifest digest for oci:// URLs (as printed by "meshguard push module",
"sha256:<hex>" accepted) and the .wasm file's sha256 for http(s):// (computed with --module FILE).
The guard configuration's distributor and audit callouts are pointed at the cluster istiod
creates for the distributor host: outbound|PORT||HOST.

The resources go to stdout or --output-file as YAML (-o json: one kubectl List). With
--kustomize DIR the output is a kustomize base (and overlays/canary when --canary-url is
given) instead of one stream.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			read := renderReader(cmd)
			o, err := f.Options(read)
			if err != nil {
				return usage(err)
			}
			if err := checkGuard(cmd, o.Guard); err != nil {
				return err
			}
			if kustomizeDir != "" {
				canary, err := f.Canary(read)
				if err != nil {
					return usage(err)
				}
				return writeKustomize(cmd, kustomizeDir, o, canary, out)
			}
			r, err := istio.Render(o)
			if err != nil {
				return usage(err)
			}
			y, err := r.YAML()
			if err != nil {
				return err
			}
			return out.write(cmd, r.Objects(), y)
		},
	}
	f.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&kustomizeDir, "kustomize", "", "write a kustomize base (and canary overlay) under DIR")
	out.register(cmd)
	return cmd
}

// writeKustomize writes the kustomize tree (YAML files, as kustomize reads
// them) under dir.
func writeKustomize(cmd *cobra.Command, dir string, o istio.Options, canary *istio.Canary, out renderOutput) error {
	if out.format.format() != output.YAML || cmd.Flags().Changed("output-file") {
		return usagef("--kustomize writes YAML files under its directory: drop -o and --output-file")
	}
	files, err := istio.Kustomize(o, canary)
	if err != nil {
		return usage(err)
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := writeOutputFile(cmd, dst, files[p], 0o644); err != nil {
			return err
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "wrote", dst)
	}
	return nil
}

func newRenderKumaCmd() *cobra.Command {
	var (
		f   kuma.Flags
		out renderOutput
	)
	cmd := &cobra.Command{
		Use:   "kuma",
		Short: "Render the MeshProxyPatch (and ContainerPatch for a local module) that loads the guard",
		Long: `Render a MeshProxyPatch that adds the distributor cluster and inserts envoy.filters.http.wasm
before envoy.filters.http.router on inbound listeners. The module is fetched remotely
(--module-url with --sha256 or --module FILE) through the distributor cluster, or read from a
file inside the sidecar (--local-module PATH) mounted by a ContainerPatch; annotate pods with
kuma.io/container-patches: <name>-module and give them a volume named meshguard-module.

Dataplanes are targeted by --label (targetRef kind Dataplane, labels); without labels the whole
mesh. --meshsubset writes the older {kind: MeshSubset, tags} form for control planes before
the targetRef kinds were narrowed (Kuma 2.14 rejects it).

--universal writes the MeshProxyPatch in Kuma's universal form (type, mesh, name, spec) for
"kumactl apply -f"; a --local-module path then names the file on the dataplane's host and no
ContainerPatch is written. -o json writes JSON (several objects: one kubectl List).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.Options(renderReader(cmd))
			if err != nil {
				return usage(err)
			}
			if err := checkGuard(cmd, o.Guard); err != nil {
				return err
			}
			r, err := kuma.Render(o)
			if err != nil {
				return usage(err)
			}
			if f.Universal {
				y, err := r.UniversalYAML()
				if err != nil {
					return err
				}
				return out.write(cmd, []map[string]any{r.UniversalObject()}, y)
			}
			y, err := r.YAML()
			if err != nil {
				return err
			}
			return out.write(cmd, r.Objects(), y)
		},
	}
	f.AddFlags(cmd.Flags())
	out.register(cmd)
	return cmd
}

func newRenderEnvoyCmd() *cobra.Command {
	var (
		f   envoy.StandaloneFlags
		out renderOutput
	)
	cmd := &cobra.Command{
		Use:   "envoy",
		Short: "Render the guard's HTTP filters and distributor cluster for a hand-run Envoy",
		Long: `Render YAML (or -o json) with two keys, http_filters (place both entries, in order, before
envoy.filters.http.router: an RBAC filter refusing a peer certificate with two URI SANs, then
envoy.filters.http.wasm) and clusters (the distributor, which serves bundles, audit uploads and
remote modules).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := f.Standalone(renderReader(cmd))
			if err != nil {
				return usage(err)
			}
			if err := checkGuard(cmd, s.Guard); err != nil {
				return err
			}
			y, err := envoy.Fragment(s)
			if err != nil {
				return usage(err)
			}
			var obj map[string]any
			if err := yaml.Unmarshal(y, &obj); err != nil {
				return err
			}
			return out.write(cmd, []map[string]any{obj}, y)
		},
	}
	f.AddFlags(cmd.Flags())
	out.register(cmd)
	return cmd
}
