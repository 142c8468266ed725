// Package istio renders the Istio resources that load the meshguard guard
// filter: a WasmPlugin (extensions.istio.io/v1alpha1) built from istio.io
// client-go types, the ServiceEntry and DestinationRule its callouts to the
// distributor need, and a STRICT PeerAuthentication (the guard reads the mTLS
// peer's SPIFFE ID, which only exists when mTLS is enforced).
package istio

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"

	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	extensionsapi "istio.io/api/extensions/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	extensions "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	security "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/internal/ociref"
)

// Defaults.
const (
	DefaultName      = "meshguard-guard"
	DefaultNamespace = "istio-system"
	// SelectorLabel is the pod label the checked-in manifests select on; its
	// value names the track (stable, canary).
	SelectorLabel = "meshguard.io/guard"
)

// ClusterName is the Envoy cluster name istiod gives a service host and port
// (pilot/pkg/model BuildSubsetKey: direction|port|subset|host, no subset).
// The guard configuration's callout clusters must use it.
func ClusterName(host string, port uint32) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "||" + host
}

// TargetRef names a Gateway API object (e.g. a Gateway or Service) to attach to.
type TargetRef struct {
	Group string
	Kind  string
	Name  string
}

// EnvVar is one VM environment variable; FromHost copies the proxy's own.
type EnvVar struct {
	Name     string
	Value    string
	FromHost bool
}

// Distributor is where the filter's callouts go and how the sidecar reaches it.
type Distributor struct {
	// URL is http(s)://host[:port] of the distributor.
	URL string
	// TLSMode of the DestinationRule: SIMPLE (default for https), ISTIO_MUTUAL
	// (the distributor runs in the mesh) or DISABLE (default for http).
	TLSMode string
	// CACertificates is a path inside the proxy to verify the distributor (SIMPLE).
	CACertificates string
	// CredentialName is a Kubernetes secret holding the CA (SIMPLE), an alternative to CACertificates.
	CredentialName string
	// ServiceEntry forces (true) or suppresses (false) the ServiceEntry; nil
	// emits one unless the host is a Kubernetes service name (*.svc or
	// *.svc.cluster.local), which istiod already knows.
	ServiceEntry *bool
}

// Options is everything that goes into the rendered resources.
type Options struct {
	Name      string
	Namespace string
	// Labels go on every object's metadata.
	Labels map[string]string
	// URL of the module: oci://registry/repo:tag (or @digest), http(s)://…, or file://.
	URL string
	// SHA256 is the manifest digest (oci) or the .wasm file's sha256 (http);
	// "sha256:<hex>" or "<hex>".
	SHA256 string
	// ModuleFile, for http(s) URLs, is the local .wasm whose sha256 is computed
	// (and checked against SHA256 when both are given).
	ModuleFile []byte
	// JWTOnly renders the AUTHN-phase variant (identity from JWT-SVIDs only).
	JWTOnly bool
	// Phase overrides the phase (AUTHZ by default, AUTHN with JWTOnly).
	Phase string
	// Priority orders plugins in one phase (nil = unset).
	Priority *int32
	// FailStrategy is FAIL_CLOSE (default), FAIL_OPEN or FAIL_RELOAD.
	FailStrategy string
	// PluginName is the plugin's root id (empty = the guard's default root).
	PluginName string
	// Selector (pod labels) or TargetRefs; neither means every workload in the namespace.
	Selector   map[string]string
	TargetRefs []TargetRef
	// MatchMode is CLIENT, SERVER (default) or CLIENT_AND_SERVER; Ports limits it.
	MatchMode string
	Ports     []uint32
	// ImagePullPolicy is IfNotPresent or Always; ImagePullSecret a secret name.
	ImagePullPolicy string
	ImagePullSecret string
	Env             []EnvVar
	// Guard is the guard configuration (pluginConfig).
	Guard envoy.GuardInput
	// Distributor, when set, makes callouts possible (bundle polling, audit).
	Distributor *Distributor
	// NoPeerAuthentication omits the STRICT PeerAuthentication.
	NoPeerAuthentication bool
}

// Rendered holds the objects in apply order and the guard configuration used.
type Rendered struct {
	WasmPlugin         map[string]any
	ServiceEntry       map[string]any
	DestinationRule    map[string]any
	PeerAuthentication map[string]any
	// GuardConfig is the canonical pluginConfig JSON.
	GuardConfig []byte
}

// Objects lists the non-nil objects: distributor plumbing first, then mTLS,
// then the plugin, so the plugin never runs without its cluster.
func (r *Rendered) Objects() []map[string]any {
	var out []map[string]any
	for _, o := range []map[string]any{r.ServiceEntry, r.DestinationRule, r.PeerAuthentication, r.WasmPlugin} {
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

// YAML writes the objects as one multi-document stream.
func (r *Rendered) YAML() ([]byte, error) { return JoinYAML(r.Objects()) }

// JoinYAML writes objects as YAML documents separated by "---".
func JoinYAML(objs []map[string]any) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("istio: %w", err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	phases     = map[string]extensionsapi.PluginPhase{"AUTHN": extensionsapi.PluginPhase_AUTHN, "AUTHZ": extensionsapi.PluginPhase_AUTHZ, "STATS": extensionsapi.PluginPhase_STATS}
	strategies = map[string]extensionsapi.FailStrategy{"FAIL_CLOSE": extensionsapi.FailStrategy_FAIL_CLOSE, "FAIL_OPEN": extensionsapi.FailStrategy_FAIL_OPEN, "FAIL_RELOAD": extensionsapi.FailStrategy_FAIL_RELOAD}
	modes      = map[string]typeapi.WorkloadMode{"CLIENT": typeapi.WorkloadMode_CLIENT, "SERVER": typeapi.WorkloadMode_SERVER, "CLIENT_AND_SERVER": typeapi.WorkloadMode_CLIENT_AND_SERVER}
	pulls      = map[string]extensionsapi.PullPolicy{"IfNotPresent": extensionsapi.PullPolicy_IfNotPresent, "Always": extensionsapi.PullPolicy_Always}
	tlsModes   = map[string]networkingapi.ClientTLSSettings_TLSmode{"DISABLE": networkingapi.ClientTLSSettings_DISABLE, "SIMPLE": networkingapi.ClientTLSSettings_SIMPLE, "ISTIO_MUTUAL": networkingapi.ClientTLSSettings_ISTIO_MUTUAL}
)

// Render builds the resources. Every invalid option is reported at once.
func Render(o Options) (*Rendered, error) {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	name := orDefault(o.Name, DefaultName)
	ns := orDefault(o.Namespace, DefaultNamespace)
	if len(name) > 253 || !dnsLabel.MatchString(strings.ReplaceAll(name, ".", "-")) {
		add("name %q is not a Kubernetes object name", name)
	}
	if !dnsLabel.MatchString(ns) || len(ns) > 63 {
		add("namespace %q is not a namespace name", ns)
	}

	wp := &extensions.WasmPlugin{
		TypeMeta:   metav1.TypeMeta{APIVersion: "extensions.istio.io/v1alpha1", Kind: "WasmPlugin"},
		ObjectMeta: meta(name, ns, o.Labels),
	}
	spec := &wp.Spec
	spec.Url = o.URL
	spec.PluginName = o.PluginName
	spec.ImagePullSecret = o.ImagePullSecret
	spec.Type = extensionsapi.PluginType_HTTP
	sum, err := moduleDigest(o)
	if err != nil {
		errs = append(errs, err)
	}
	spec.Sha256 = sum

	phase := o.Phase
	if phase == "" {
		phase = "AUTHZ"
		if o.JWTOnly {
			phase = "AUTHN"
		}
	}
	if p, ok := phases[phase]; ok {
		spec.Phase = p
	} else {
		add("phase %q: want AUTHN, AUTHZ or STATS", phase)
	}
	if o.Priority != nil {
		spec.Priority = wrapperspb.Int32(*o.Priority)
	}
	fs := orDefault(o.FailStrategy, "FAIL_CLOSE")
	if s, ok := strategies[fs]; ok {
		spec.FailStrategy = s
	} else {
		add("failStrategy %q: want FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD", fs)
	}
	if o.ImagePullPolicy != "" {
		if p, ok := pulls[o.ImagePullPolicy]; ok {
			spec.ImagePullPolicy = p
		} else {
			add("imagePullPolicy %q: want IfNotPresent or Always", o.ImagePullPolicy)
		}
	}
	if len(o.Selector) > 0 && len(o.TargetRefs) > 0 {
		add("set a selector or targetRefs, not both")
	}
	if len(o.Selector) > 0 {
		spec.Selector = &typeapi.WorkloadSelector{MatchLabels: o.Selector}
	}
	for _, t := range o.TargetRefs {
		if t.Kind == "" || t.Name == "" {
			add("targetRef %+v: kind and name are required", t)
		}
		spec.TargetRefs = append(spec.TargetRefs, &typeapi.PolicyTargetReference{Group: t.Group, Kind: t.Kind, Name: t.Name})
	}
	if len(o.Env) > 0 {
		vm := &extensionsapi.VmConfig{}
		for _, e := range o.Env {
			ev := &extensionsapi.EnvVar{Name: e.Name, Value: e.Value}
			if e.FromHost {
				ev.ValueFrom = extensionsapi.EnvValueSource_HOST
				if e.Value != "" {
					add("env %s: a HOST variable takes no value", e.Name)
				}
			}
			vm.Env = append(vm.Env, ev)
		}
		spec.VmConfig = vm
	}

	r := &Rendered{}
	var callouts envoy.Callouts
	if d := o.Distributor; d != nil {
		se, dr, c, err := distributorObjects(name, ns, o.Labels, d)
		if err != nil {
			errs = append(errs, err)
		}
		r.ServiceEntry, r.DestinationRule, callouts = se, dr, c
	}
	cfgJSON, parsed, err := envoy.GuardConfig(o.Guard, callouts)
	// The caller's side (direction outbound) runs in the client proxy:
	// match mode CLIENT (outbound listeners and gateways' upstream side).
	outbound := parsed != nil && parsed.Outbound()
	defMode := "SERVER"
	if outbound {
		defMode = "CLIENT"
		if o.MatchMode != "" && o.MatchMode != "CLIENT" {
			add("match mode %s with direction outbound: the caller's side is CLIENT", o.MatchMode)
		}
	}
	mode := orDefault(o.MatchMode, defMode)
	m, ok := modes[mode]
	if !ok {
		add("match mode %q: want CLIENT, SERVER or CLIENT_AND_SERVER", mode)
	}
	sel := &extensionsapi.WasmPlugin_TrafficSelector{Mode: m}
	for _, p := range o.Ports {
		if p == 0 || p > 65535 {
			add("port %d out of range", p)
		}
		sel.Ports = append(sel.Ports, &typeapi.PortSelector{Number: p})
	}
	spec.Match = []*extensionsapi.WasmPlugin_TrafficSelector{sel}
	if err != nil {
		errs = append(errs, err)
	} else {
		if o.JWTOnly {
			var probe struct {
				Identity map[string]json.RawMessage `json:"identity"`
			}
			_ = json.Unmarshal(cfgJSON, &probe)
			if _, ok := probe.Identity["jwtSvid"]; !ok {
				add("the AUTHN (JWT-only) variant needs identity.jwtSvid in the guard configuration")
			}
		}
		r.GuardConfig = cfgJSON
		st := &structpb.Struct{}
		if err := st.UnmarshalJSON(cfgJSON); err != nil {
			add("pluginConfig: %v", err)
		}
		spec.PluginConfig = st
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("istio: %w", errors.Join(errs...))
	}

	if r.WasmPlugin, err = toMap(wp); err != nil {
		return nil, err
	}
	// The zero enum FAIL_CLOSE is omitted by the generated marshaller; a
	// security control states its failure mode explicitly.
	r.WasmPlugin["spec"].(map[string]any)["failStrategy"] = spec.FailStrategy.String()
	if !o.NoPeerAuthentication {
		pa := &security.PeerAuthentication{
			TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "PeerAuthentication"},
			ObjectMeta: meta(name+"-strict-mtls", ns, o.Labels),
			Spec: securityapi.PeerAuthentication{
				Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT},
			},
		}
		if len(o.Selector) > 0 {
			pa.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: o.Selector}
		}
		if r.PeerAuthentication, err = toMap(pa); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// moduleDigest validates the URL and returns the sha256 Istio expects.
func moduleDigest(o Options) (string, error) {
	if o.URL == "" {
		return "", errors.New("url: required (oci://, http(s):// or file://)")
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", o.URL, err)
	}
	sum, err := envoy.NormaliseSHA256(o.SHA256)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "oci":
		if len(o.ModuleFile) > 0 {
			return "", errors.New("--module applies to http(s) URLs: for oci:// the sha256 is the image manifest digest that `meshguard push module` prints")
		}
		// Istio resolves the reference as a Docker client would: a bare
		// HOST:PORT or a registry-less repository would go to Docker Hub.
		if _, err := ociref.Parse(o.URL); err != nil {
			return "", fmt.Errorf("url: %w", err)
		}
		if sum == "" {
			return "", errors.New("sha256: required for oci:// (the manifest digest pins the exact module; a moved tag must not change the filter)")
		}
	case "http", "https":
		if u.Host == "" {
			return "", fmt.Errorf("url %q: no host", o.URL)
		}
		if len(o.ModuleFile) > 0 {
			h := sha256.Sum256(o.ModuleFile)
			fileSum := hex.EncodeToString(h[:])
			if sum != "" && sum != fileSum {
				return "", fmt.Errorf("sha256 %s does not match the module file's %s", sum, fileSum)
			}
			sum = fileSum
		}
		if sum == "" {
			return "", errors.New("sha256: required for http(s) (give it or --module FILE to compute it)")
		}
	case "file":
	default:
		return "", fmt.Errorf("url %q: scheme must be oci, http, https or file", o.URL)
	}
	return sum, nil
}

func distributorObjects(name, ns string, labels map[string]string, d *Distributor) (se, dr map[string]any, c envoy.Callouts, err error) {
	up, err := envoy.ParseUpstream(d.URL)
	if err != nil {
		return nil, nil, c, err
	}
	c = envoy.Callouts{Cluster: ClusterName(up.Host, up.Port), Authority: up.Host}
	mode := d.TLSMode
	if mode == "" {
		mode = "DISABLE"
		if up.TLS {
			mode = "SIMPLE"
		}
	}
	tm, ok := tlsModes[mode]
	if !ok {
		return nil, nil, c, fmt.Errorf("distributor TLS mode %q: want SIMPLE, ISTIO_MUTUAL or DISABLE", mode)
	}
	if mode != "SIMPLE" && (d.CACertificates != "" || d.CredentialName != "") {
		return nil, nil, c, fmt.Errorf("distributor CA settings only apply to TLS mode SIMPLE, not %s", mode)
	}
	internal := strings.HasSuffix(up.Host, ".svc") || strings.HasSuffix(up.Host, ".svc.cluster.local")
	wantSE := !internal
	if d.ServiceEntry != nil {
		wantSE = *d.ServiceEntry
	}
	if wantSE {
		loc := networkingapi.ServiceEntry_MESH_EXTERNAL
		if internal {
			loc = networkingapi.ServiceEntry_MESH_INTERNAL
		}
		obj := &networking.ServiceEntry{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "ServiceEntry"},
			ObjectMeta: meta(name+"-distributor", ns, labels),
			Spec: networkingapi.ServiceEntry{
				Hosts: []string{up.Host},
				// The filter speaks plain HTTP to the cluster; the DestinationRule
				// originates TLS, so the port is declared as HTTP.
				Ports:      []*networkingapi.ServicePort{{Number: up.Port, Name: "http-distributor", Protocol: "HTTP"}},
				Location:   loc,
				Resolution: networkingapi.ServiceEntry_DNS,
			},
		}
		if se, err = toMap(obj); err != nil {
			return nil, nil, c, err
		}
		se["spec"].(map[string]any)["location"] = loc.String()
	}
	tls := &networkingapi.ClientTLSSettings{Mode: tm}
	if mode == "SIMPLE" {
		tls.Sni = up.Host
		tls.CaCertificates = d.CACertificates
		tls.CredentialName = d.CredentialName
	}
	drObj := &networking.DestinationRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "DestinationRule"},
		ObjectMeta: meta(name+"-distributor", ns, labels),
		Spec: networkingapi.DestinationRule{
			Host: up.Host,
			TrafficPolicy: &networkingapi.TrafficPolicy{
				PortLevelSettings: []*networkingapi.TrafficPolicy_PortTrafficPolicy{{
					Port: &networkingapi.PortSelector{Number: up.Port},
					Tls:  tls,
				}},
			},
		},
	}
	if dr, err = toMap(drObj); err != nil {
		return nil, nil, c, err
	}
	// DISABLE is the zero enum and would be omitted; say it.
	dr["spec"].(map[string]any)["trafficPolicy"].(map[string]any)["portLevelSettings"].([]any)[0].(map[string]any)["tls"].(map[string]any)["mode"] = mode
	return se, dr, c, nil
}

func meta(name, ns string, labels map[string]string) metav1.ObjectMeta {
	l := map[string]string{"app.kubernetes.io/part-of": "meshguard"}
	for k, v := range labels {
		l[k] = v
	}
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l}
}

// toMap turns a client-go object into plain JSON data without the empty
// status and creationTimestamp the generated types always write.
func toMap(obj any) (map[string]any, error) {
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("istio: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("istio: %w", err)
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return m, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
