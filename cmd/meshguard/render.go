package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/istio"
	"github.com/meshguard/meshguard/kuma"
)

// renderGuardFlags are the guard-configuration flags shared by the render verbs.
type renderGuardFlags struct {
	configFile, verifyKeys, inlineBundle, tokenFile string
	channel, mode, scope, paths                     string
	pollInterval, expiryGrace                       time.Duration
	peerCert, istioPeer, audit, logAllows           bool
	jwtAudiences, jwtTrustDomains                   []string
	forwarders, keepCredentials                     []string
}

func (g *renderGuardFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&g.configFile, "config", "", "guard configuration file (JSON or YAML, filters/guard/config); replaces the guard flags below")
	f.StringVar(&g.verifyKeys, "verify-keys", "", "public JWK Set (verify.jwk) that bundles must be signed with; private keys are refused")
	f.StringVar(&g.inlineBundle, "inline-bundle", "", "signed policy bundle file to embed in the configuration")
	f.StringVar(&g.channel, "channel", "", "bundle channel to poll on the distributor")
	f.DurationVar(&g.pollInterval, "poll-interval", 0, "bundle poll interval (default 10s)")
	f.StringVar(&g.tokenFile, "token-file", "", "file holding the bearer token for bundle polls and audit uploads")
	f.StringVar(&g.mode, "mode", "", "enforce (default) or dry-run")
	f.StringVar(&g.scope, "scope", "", "scope the bundle manifest must list")
	f.DurationVar(&g.expiryGrace, "expiry-grace", 0, "keep enforcing an expired bundle this long (max 168h) instead of failing closed at expiry")
	f.BoolVar(&g.peerCert, "peer-certificate", true, "identify callers by their mTLS peer SPIFFE ID")
	f.BoolVar(&g.istioPeer, "istio-peer-metadata", false, "read Istio's downstream peer metadata")
	f.StringSliceVar(&g.jwtAudiences, "jwt-audience", nil, "accept JWT-SVIDs for this audience (repeatable); default: the guarded workload's own SPIFFE ID, one audience per service")
	f.StringSliceVar(&g.jwtTrustDomains, "jwt-trust-domain", nil, "accept JWT-SVIDs from trust domain NAME=JWKS_FILE (its JWT bundle) (repeatable)")
	f.StringSliceVar(&g.forwarders, "trusted-forwarder", nil, "SPIFFE ID of a peer (e.g. the ingress gateway) that may relay a caller's JWT-SVID (repeatable)")
	f.StringSliceVar(&g.keepCredentials, "keep-credential-header", nil, "verified credential header to forward upstream (repeatable); by default the guard removes them")
	f.StringVar(&g.paths, "paths", "", "non-canonical request paths: refuse (default, 400), normalize (RFC 3986) or merge-slashes (normalize and merge //)")
	f.BoolVar(&g.audit, "audit", false, "post decision records to the distributor")
	f.BoolVar(&g.logAllows, "log-allows", false, "record allows too, not only denies")
}

func (g *renderGuardFlags) input() (envoy.GuardInput, error) {
	var in envoy.GuardInput
	var err error
	read := func(path string) []byte {
		if path == "" || err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(path)
		if err != nil {
			err = fmt.Errorf("read %s: %w", path, err)
		}
		return b
	}
	in.File = read(g.configFile)
	in.VerifyKeys = read(g.verifyKeys)
	in.InlineBundle = read(g.inlineBundle)
	in.Token = strings.TrimSpace(string(read(g.tokenFile)))
	in.Channel, in.Mode, in.Scope, in.PollInterval, in.ExpiryGrace = g.channel, g.mode, g.scope, g.pollInterval, g.expiryGrace
	in.IstioPeerMetadata, in.AuditSink, in.LogAllows = g.istioPeer, g.audit, g.logAllows
	in.JWTAudiences = g.jwtAudiences
	in.TrustedForwarders, in.KeepCredentialHeaders, in.Paths = g.forwarders, g.keepCredentials, g.paths
	for _, td := range g.jwtTrustDomains {
		if in.JWTTrustDomains == nil {
			in.JWTTrustDomains = map[string][]byte{}
		}
		name, file, withFile := strings.Cut(td, "=")
		in.JWTTrustDomains[name] = nil
		if withFile {
			in.JWTTrustDomains[name] = read(file)
		}
	}
	in.PeerCertificate = g.peerCert && g.configFile == ""
	return in, err
}

// checkedInput is input plus checkGuardPolicy: nothing is rendered from a
// private verification key or an inline bundle the proxy would refuse.
func (g *renderGuardFlags) checkedInput(cmd *cobra.Command) (envoy.GuardInput, error) {
	in, err := g.input()
	if err != nil {
		return in, &exitError{code: 2, err: err}
	}
	if err := checkGuardPolicy(in, cmd.ErrOrStderr(), time.Now()); err != nil {
		return in, &exitError{code: 1, err: err}
	}
	return in, nil
}

func renderParseEnv(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", p)
		}
		out[k] = v
	}
	return out, nil
}

func renderReadFile(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

func renderWrite(cmd *cobra.Command, path string, data []byte) error {
	if path == "" || path == "-" {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func newRenderIstioCmd() *cobra.Command {
	var (
		g                                           renderGuardFlags
		o                                           istio.Options
		module, out, kustomizeDir                   string
		canaryURL, canarySHA, canaryModule          string
		selector                                    map[string]string
		targetRefs, env, hostEnv                    []string
		ports                                       []uint
		priority                                    int32
		failOpen, noServiceEntry, forceServiceEntry bool
		distURL, distTLS, distCA, distCred          string
	)
	cmd := &cobra.Command{
		Use:   "istio",
		Short: "Render the WasmPlugin, distributor ServiceEntry/DestinationRule and STRICT PeerAuthentication",
		Long: `Render the Istio resources that load the meshguard guard filter.

The sha256 is the manifest digest for oci:// URLs (as printed by "meshguard push module",
"sha256:<hex>" accepted) and the .wasm file's sha256 for http(s):// (computed with --module FILE).
The guard configuration's distributor and audit callouts are pointed at the cluster istiod
creates for the distributor host: outbound|PORT||HOST.

With --kustomize DIR the output is a kustomize base (and overlays/canary when --canary-url is
given) instead of one YAML stream.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Guard, err = g.checkedInput(cmd); err != nil {
				return err
			}
			if o.ModuleFile, err = renderReadFile(module); err != nil {
				return &exitError{code: 2, err: err}
			}
			if cmd.Flags().Changed("priority") {
				o.Priority = &priority
			}
			if failOpen {
				if o.FailStrategy != "" && o.FailStrategy != "FAIL_OPEN" {
					return &exitError{code: 2, err: fmt.Errorf("--fail-open contradicts --fail-strategy %s", o.FailStrategy)}
				}
				o.FailStrategy = "FAIL_OPEN"
			}
			o.Selector = selector
			for _, t := range targetRefs {
				parts := strings.Split(t, "/")
				switch len(parts) {
				case 2:
					o.TargetRefs = append(o.TargetRefs, istio.TargetRef{Kind: parts[0], Name: parts[1]})
				case 3:
					o.TargetRefs = append(o.TargetRefs, istio.TargetRef{Group: parts[0], Kind: parts[1], Name: parts[2]})
				default:
					return &exitError{code: 2, err: fmt.Errorf("--target-ref %q: want [GROUP/]KIND/NAME", t)}
				}
			}
			for _, p := range ports {
				o.Ports = append(o.Ports, uint32(p))
			}
			envs, err := renderParseEnv(env)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			for _, k := range renderSortedKeys(envs) {
				o.Env = append(o.Env, istio.EnvVar{Name: k, Value: envs[k]})
			}
			for _, k := range hostEnv {
				o.Env = append(o.Env, istio.EnvVar{Name: k, FromHost: true})
			}
			if distURL != "" {
				d := &istio.Distributor{URL: distURL, TLSMode: distTLS, CACertificates: distCA, CredentialName: distCred}
				if noServiceEntry && forceServiceEntry {
					return &exitError{code: 2, err: fmt.Errorf("--service-entry and --no-service-entry contradict")}
				}
				if noServiceEntry || forceServiceEntry {
					v := forceServiceEntry
					d.ServiceEntry = &v
				}
				o.Distributor = d
			}
			if kustomizeDir != "" {
				var canary *istio.Canary
				if canaryURL != "" {
					canary = &istio.Canary{URL: canaryURL, SHA256: canarySHA}
					if canary.ModuleFile, err = renderReadFile(canaryModule); err != nil {
						return &exitError{code: 2, err: err}
					}
				}
				files, err := istio.Kustomize(o, canary)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				for _, p := range renderSortedKeys(files) {
					dst := filepath.Join(kustomizeDir, filepath.FromSlash(p))
					if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
						return err
					}
					if err := os.WriteFile(dst, files[p], 0o644); err != nil {
						return err
					}
					fmt.Fprintln(cmd.ErrOrStderr(), "wrote", dst)
				}
				return nil
			}
			r, err := istio.Render(o)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			y, err := r.YAML()
			if err != nil {
				return err
			}
			return renderWrite(cmd, out, y)
		},
	}
	g.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", istio.DefaultName, "WasmPlugin name (other objects derive from it)")
	f.StringVarP(&o.Namespace, "namespace", "n", istio.DefaultNamespace, "namespace (istio-system applies mesh-wide)")
	f.StringVar(&o.URL, "url", "", "module URL: oci://REGISTRY/REPO:TAG or http(s)://…/modules/REPO/TAG.wasm")
	f.StringVar(&o.SHA256, "sha256", "", "manifest digest (oci) or file sha256 (http); sha256:<hex> or <hex>")
	f.StringVar(&module, "module", "", "local .wasm file: computes the sha256 for an http(s) URL")
	f.BoolVar(&o.JWTOnly, "jwt-only", false, "AUTHN-phase variant identifying callers by JWT-SVID only")
	f.StringVar(&o.Phase, "phase", "", "AUTHN, AUTHZ or STATS (default AUTHZ, AUTHN with --jwt-only)")
	f.Int32Var(&priority, "priority", 0, "priority within the phase")
	f.StringVar(&o.FailStrategy, "fail-strategy", "", "FAIL_CLOSE (default), FAIL_OPEN or FAIL_RELOAD")
	f.BoolVar(&failOpen, "fail-open", false, "shorthand for --fail-strategy FAIL_OPEN")
	f.StringVar(&o.PluginName, "plugin-name", "", "plugin root id")
	f.StringToStringVar(&selector, "selector", nil, "pod label selector KEY=VALUE (repeatable)")
	f.StringSliceVar(&targetRefs, "target-ref", nil, "attach to [GROUP/]KIND/NAME instead of a selector (repeatable)")
	f.StringVar(&o.MatchMode, "match-mode", "", "CLIENT, SERVER (default) or CLIENT_AND_SERVER")
	f.UintSliceVar(&ports, "port", nil, "only traffic on these ports (repeatable)")
	f.StringVar(&o.ImagePullPolicy, "image-pull-policy", "", "IfNotPresent or Always")
	f.StringVar(&o.ImagePullSecret, "image-pull-secret", "", "secret with registry credentials")
	f.StringSliceVar(&env, "env", nil, "VM environment NAME=VALUE (repeatable)")
	f.StringSliceVar(&hostEnv, "host-env", nil, "VM environment variable copied from the proxy (repeatable)")
	f.StringVar(&distURL, "distributor", "", "distributor http(s)://HOST[:PORT] for bundle polling and audit callouts")
	f.StringVar(&distTLS, "distributor-tls", "", "DestinationRule TLS mode to the distributor: SIMPLE, ISTIO_MUTUAL or DISABLE")
	f.StringVar(&distCA, "distributor-ca", "", "CA file inside the proxy verifying the distributor (SIMPLE)")
	f.StringVar(&distCred, "distributor-credential", "", "Kubernetes secret holding the distributor CA (SIMPLE)")
	f.BoolVar(&forceServiceEntry, "service-entry", false, "always emit the ServiceEntry (default: only for hosts that are not *.svc[.cluster.local])")
	f.BoolVar(&noServiceEntry, "no-service-entry", false, "never emit the ServiceEntry")
	f.BoolVar(&o.NoPeerAuthentication, "no-peer-authentication", false, "omit the STRICT PeerAuthentication")
	f.StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	f.StringVar(&kustomizeDir, "kustomize", "", "write a kustomize base (and canary overlay) under DIR")
	f.StringVar(&canaryURL, "canary-url", "", "module URL of the canary version (with --kustomize)")
	f.StringVar(&canarySHA, "canary-sha256", "", "sha256 of the canary module")
	f.StringVar(&canaryModule, "canary-module", "", "local canary .wasm (computes its sha256 for http URLs)")
	return cmd
}

func newRenderKumaCmd() *cobra.Command {
	var (
		g           renderGuardFlags
		o           kuma.Options
		module, out string
		env         []string
		universal   bool
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
ContainerPatch is written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Guard, err = g.checkedInput(cmd); err != nil {
				return err
			}
			if o.Env, err = renderParseEnv(env); err != nil {
				return &exitError{code: 2, err: err}
			}
			if o.ModuleSHA256, err = renderFileSum(module, o.ModuleSHA256); err != nil {
				return &exitError{code: 2, err: err}
			}
			r, err := kuma.Render(o)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			var y []byte
			if universal {
				y, err = yaml.Marshal(kumaUniversal(r.MeshProxyPatch))
			} else {
				y, err = r.YAML()
			}
			if err != nil {
				return err
			}
			return renderWrite(cmd, out, y)
		},
	}
	g.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&universal, "universal", false, "Kuma universal mode: the kumactl apply form (type, mesh, name, spec)")
	f.StringVar(&o.Name, "name", kuma.DefaultName, "MeshProxyPatch name")
	f.StringVarP(&o.Namespace, "namespace", "n", kuma.DefaultNamespace, "namespace of the policies (Kuma's system namespace)")
	f.StringVar(&o.Mesh, "mesh", kuma.DefaultMesh, "mesh name")
	f.StringToStringVar(&o.Labels, "label", nil, "Dataplane label KEY=VALUE to target (repeatable)")
	f.BoolVar(&o.LegacyMeshSubset, "meshsubset", false, "write targetRef {kind: MeshSubset, tags} for older Kuma")
	f.StringVar(&o.Distributor, "distributor", "", "distributor http(s)://HOST[:PORT] (added as cluster meshguard-distributor)")
	f.StringVar(&o.DistributorCA, "distributor-ca", "", "CA file inside the sidecar verifying the distributor")
	f.StringVar(&o.ModuleURL, "module-url", "", "http(s) URL of the .wasm, e.g. https://DISTRIBUTOR/modules/REPO/TAG.wasm")
	f.StringVar(&o.ModuleSHA256, "sha256", "", "sha256 of the .wasm file")
	f.StringVar(&module, "module", "", "local .wasm file: computes --sha256")
	f.StringVar(&o.LocalModule, "local-module", "", "absolute path of the .wasm inside the sidecar (adds a ContainerPatch)")
	f.BoolVar(&o.FailOpen, "fail-open", false, "let traffic through when the Wasm VM fails (default fail closed)")
	f.StringSliceVar(&env, "env", nil, "VM environment NAME=VALUE (repeatable)")
	f.StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

func newRenderEnvoyCmd() *cobra.Command {
	var (
		g                         renderGuardFlags
		s                         envoy.Standalone
		dist, distCA, module, out string
		env                       []string
	)
	cmd := &cobra.Command{
		Use:   "envoy",
		Short: "Render the guard's HTTP filters and distributor cluster for a hand-run Envoy",
		Long: `Render YAML with two keys, http_filters (place both entries, in order, before
envoy.filters.http.router: an RBAC filter refusing a peer certificate with two URI SANs, then
envoy.filters.http.wasm) and clusters (the distributor, which serves bundles, audit uploads and
remote modules).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if s.Guard, err = g.checkedInput(cmd); err != nil {
				return err
			}
			if s.Filter.Env, err = renderParseEnv(env); err != nil {
				return &exitError{code: 2, err: err}
			}
			if s.Filter.Module.SHA256, err = renderFileSum(module, s.Filter.Module.SHA256); err != nil {
				return &exitError{code: 2, err: err}
			}
			if dist != "" {
				up, err := envoy.ParseUpstream(dist)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				up.CAFile = distCA
				s.Distributor = &up
			}
			y, err := envoy.Fragment(s)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return renderWrite(cmd, out, y)
		},
	}
	g.register(cmd)
	f := cmd.Flags()
	f.StringVar(&dist, "distributor", "", "distributor http(s)://HOST[:PORT]")
	f.StringVar(&distCA, "distributor-ca", "", "CA file verifying the distributor")
	f.StringVar(&s.Filter.Module.URL, "module-url", "", "http(s) URL of the .wasm")
	f.StringVar(&s.Filter.Module.SHA256, "sha256", "", "sha256 of the .wasm file")
	f.StringVar(&module, "module", "", "local .wasm file: computes --sha256")
	f.StringVar(&s.Filter.Module.LocalFile, "local-module", "", "absolute path of the .wasm on the Envoy host")
	f.StringVar(&s.Filter.PluginName, "plugin-name", envoy.DefaultPluginName, "plugin name")
	f.StringVar(&s.Filter.RootID, "root-id", "", "plugin root id")
	f.StringVar(&s.Filter.VMID, "vm-id", envoy.DefaultVMID, "VM id")
	f.BoolVar(&s.Filter.FailOpen, "fail-open", false, "let traffic through when the Wasm VM fails (default fail closed)")
	f.StringSliceVar(&env, "env", nil, "VM environment NAME=VALUE (repeatable)")
	f.StringSliceVar(&s.Filter.HostEnv, "host-env", nil, "host environment variable exposed to the VM (repeatable)")
	f.StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// kumaUniversal turns a Kubernetes MeshProxyPatch into Kuma's universal
// resource form: type, mesh and name at the top level, the same spec.
func kumaUniversal(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	labels, _ := md["labels"].(map[string]any)
	return map[string]any{"type": obj["kind"], "mesh": labels["kuma.io/mesh"], "name": md["name"], "spec": obj["spec"]}
}

// renderFileSum returns the sha256 of path (checked against given when both are set).
func renderFileSum(path, given string) (string, error) {
	if path == "" {
		return given, nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	sum := fmt.Sprintf("%x", h.Sum(nil))
	if given != "" {
		g, err := envoy.NormaliseSHA256(given)
		if err != nil {
			return "", err
		}
		if g != sum {
			return "", fmt.Errorf("--sha256 %s does not match %s (%s)", g, path, sum)
		}
	}
	return sum, nil
}

func renderSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func init() {
	renderCmd.AddCommand(newRenderIstioCmd(), newRenderKumaCmd(), newRenderEnvoyCmd())
}
