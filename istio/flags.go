package istio

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/internal/enumflag"
)

// Flags are the command-line flags of `meshguard render istio`; Options
// and Canary translate them.
type Flags struct {
	envoy.RenderFlags
	o                             Options
	fs                            *pflag.FlagSet
	selector                      map[string]string
	targetRefs, hostEnv           []string
	ports                         []uint
	priority                      int32
	distTLS, distCred             string
	serviceEntry, noServiceEntry  bool
	canaryURL, canarySHA, canaryM string
}

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// AddFlags registers the flags on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	f.fs = fs
	f.RenderFlags.AddFlags(fs)
	fs.Lookup("distributor").Usage = "distributor http(s)://HOST[:PORT] for bundle polling and audit callouts"
	fs.Lookup("distributor-ca").Usage = "CA file inside the proxy verifying the distributor (SIMPLE)"
	fs.Lookup("sha256").Usage = "manifest digest (oci) or file sha256 (http); sha256:<hex> or <hex>"
	fs.Lookup("module").Usage = "local .wasm file: computes the sha256 for an http(s) URL"
	fs.Lookup("fail-open").Usage = "shorthand for --fail-strategy FAIL_OPEN"
	fs.StringVar(&f.o.Name, "name", DefaultName, "WasmPlugin name (other objects derive from it)")
	fs.StringVarP(&f.o.Namespace, "namespace", "n", DefaultNamespace, "namespace (istio-system applies mesh-wide)")
	fs.StringVar(&f.o.URL, "url", "", "module URL: oci://REGISTRY/REPO:TAG or http(s)://…/modules/REPO/TAG.wasm")
	fs.BoolVar(&f.o.JWTOnly, "jwt-only", false, "AUTHN-phase variant identifying callers by JWT-SVID only")
	enumflag.Var(fs, &f.o.Phase, "phase", "", "", keys(phases), "plugin phase (default AUTHZ, AUTHN with --jwt-only)")
	fs.Int32Var(&f.priority, "priority", 0, "priority within the phase")
	enumflag.Var(fs, &f.o.FailStrategy, "fail-strategy", "", "", keys(strategies), "what traffic gets when the VM fails (default FAIL_CLOSE)")
	fs.StringVar(&f.o.PluginName, "plugin-name", "", "plugin root id")
	fs.StringToStringVar(&f.selector, "selector", nil, "pod label selector KEY=VALUE (repeatable)")
	fs.StringSliceVar(&f.targetRefs, "target-ref", nil, "attach to [GROUP/]KIND/NAME instead of a selector (repeatable)")
	enumflag.Var(fs, &f.o.MatchMode, "match-mode", "", "", keys(modes), "traffic the plugin applies to (default SERVER)")
	fs.UintSliceVar(&f.ports, "port", nil, "only traffic on these ports (repeatable)")
	enumflag.Var(fs, &f.o.ImagePullPolicy, "image-pull-policy", "", "", keys(pulls), "when the proxy pulls the module image")
	fs.StringVar(&f.o.ImagePullSecret, "image-pull-secret", "", "secret with registry credentials")
	fs.StringSliceVar(&f.hostEnv, "host-env", nil, "VM environment variable copied from the proxy (repeatable)")
	enumflag.Var(fs, &f.distTLS, "distributor-tls", "", "", keys(tlsModes), "DestinationRule TLS mode to the distributor")
	fs.StringVar(&f.distCred, "distributor-credential", "", "Kubernetes secret holding the distributor CA (SIMPLE)")
	fs.BoolVar(&f.serviceEntry, "service-entry", false, "always emit the ServiceEntry (default: only for hosts that are not *.svc[.cluster.local])")
	fs.BoolVar(&f.noServiceEntry, "no-service-entry", false, "never emit the ServiceEntry")
	fs.BoolVar(&f.o.NoPeerAuthentication, "no-peer-authentication", false, "omit the STRICT PeerAuthentication")
	fs.StringVar(&f.canaryURL, "canary-url", "", "module URL of the canary version (with --kustomize)")
	fs.StringVar(&f.canarySHA, "canary-sha256", "", "sha256 of the canary module")
	fs.StringVar(&f.canaryM, "canary-module", "", "local canary .wasm (computes its sha256 for http URLs)")
}

// Options translates the flags, reading the files they name.
func (f *Flags) Options(read envoy.ReadFunc) (Options, error) {
	o := f.o
	var err error
	if o.Guard, err = f.Guard.Input(read); err != nil {
		return o, err
	}
	if o.ModuleFile, err = f.ModuleFile(read); err != nil {
		return o, err
	}
	o.SHA256 = f.SHA256
	if f.fs != nil && f.fs.Changed("priority") {
		p := f.priority
		o.Priority = &p
	}
	if f.FailOpen {
		if o.FailStrategy != "" && o.FailStrategy != "FAIL_OPEN" {
			return o, fmt.Errorf("--fail-open contradicts --fail-strategy %s", o.FailStrategy)
		}
		o.FailStrategy = "FAIL_OPEN"
	}
	o.Selector = f.selector
	for _, t := range f.targetRefs {
		ref, err := ParseTargetRef(t)
		if err != nil {
			return o, err
		}
		o.TargetRefs = append(o.TargetRefs, ref)
	}
	for _, p := range f.ports {
		if p > 65535 {
			return o, fmt.Errorf("--port %d: not a port", p)
		}
		o.Ports = append(o.Ports, uint32(p))
	}
	envs, err := f.EnvMap()
	if err != nil {
		return o, err
	}
	for _, k := range keys(envs) {
		o.Env = append(o.Env, EnvVar{Name: k, Value: envs[k]})
	}
	for _, k := range f.hostEnv {
		o.Env = append(o.Env, EnvVar{Name: k, FromHost: true})
	}
	if f.Distributor != "" {
		d := &Distributor{URL: f.Distributor, TLSMode: f.distTLS, CACertificates: f.DistributorCA, CredentialName: f.distCred}
		if f.noServiceEntry && f.serviceEntry {
			return o, errors.New("--service-entry and --no-service-entry contradict")
		}
		if f.noServiceEntry || f.serviceEntry {
			v := f.serviceEntry
			d.ServiceEntry = &v
		}
		o.Distributor = d
	}
	return o, nil
}

// Canary is the canary module of the kustomize overlay (nil without
// --canary-url).
func (f *Flags) Canary(read envoy.ReadFunc) (*Canary, error) {
	if f.canaryURL == "" {
		return nil, nil
	}
	c := &Canary{URL: f.canaryURL, SHA256: f.canarySHA}
	if f.canaryM != "" {
		var err error
		if c.ModuleFile, err = read("--canary-module", f.canaryM); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ParseTargetRef reads [GROUP/]KIND/NAME.
func ParseTargetRef(s string) (TargetRef, error) {
	parts := strings.Split(s, "/")
	for _, p := range parts {
		if p == "" {
			return TargetRef{}, fmt.Errorf("--target-ref %q: want [GROUP/]KIND/NAME", s)
		}
	}
	switch len(parts) {
	case 2:
		return TargetRef{Kind: parts[0], Name: parts[1]}, nil
	case 3:
		return TargetRef{Group: parts[0], Kind: parts[1], Name: parts[2]}, nil
	}
	return TargetRef{}, fmt.Errorf("--target-ref %q: want [GROUP/]KIND/NAME", s)
}
