// Package envoy builds the Envoy configuration that loads the meshguard guard
// filter: the envoy.filters.http.wasm HTTP filter and the cluster of the
// distributor (which serves both the module and the policy bundles). Everything
// is built from go-control-plane types, checked with ValidateAll and written
// as protojson-derived YAML, so Kuma's MeshProxyPatch values and hand-run Envoy
// configs come from one definition.
package envoy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

// Well-known names.
const (
	// WasmFilterName is the Envoy HTTP filter that hosts Proxy-Wasm plugins.
	WasmFilterName = "envoy.filters.http.wasm"
	// RouterFilterName is the terminal HTTP filter the guard must precede.
	RouterFilterName = "envoy.filters.http.router"
	// RuntimeV8 is the Wasm runtime Envoy, Istio and Kuma ship.
	RuntimeV8 = "envoy.wasm.runtime.v8"
	// DefaultPluginName is the plugin name (Envoy stats prefix and log tag).
	DefaultPluginName = "meshguard.guard"
	// DefaultVMID groups filters sharing one VM.
	DefaultVMID = "meshguard"
	// DefaultClusterName is the distributor cluster added for Kuma and plain Envoy.
	DefaultClusterName = "meshguard-distributor"
)

var hexSHA256 = regexp.MustCompile(`^[a-f0-9]{64}$`)

// NormaliseSHA256 accepts "sha256:<hex>" or "<hex>" (any case) and returns the
// 64 lower-case hex digits Envoy and Istio expect. Empty stays empty.
func NormaliseSHA256(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	h := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if !hexSHA256.MatchString(h) {
		return "", fmt.Errorf("sha256 %q: want 64 hex digits, optionally prefixed with \"sha256:\"", s)
	}
	return h, nil
}

// Module says where Envoy loads the filter module from: a remote http_uri
// fetched through a cluster (sha256 required by Envoy) or a local file.
type Module struct {
	// URL is an http(s) URL of the raw .wasm, e.g. the distributor's
	// /modules/<repo>/<tag>.wasm download.
	URL string
	// SHA256 of the .wasm file (hex or sha256:hex); required for URL.
	SHA256 string
	// Cluster serving URL.
	Cluster string
	// Timeout of the fetch (default 10s).
	Timeout time.Duration
	// Retries on fetch failure (default 5).
	Retries uint32
	// LocalFile is a path inside the proxy's filesystem; exclusive with URL.
	LocalFile string
}

// Filter describes the guard filter instance.
type Filter struct {
	// PluginName is PluginConfig.name (default DefaultPluginName).
	PluginName string
	// RootID selects the root context; the guard's is empty (default).
	RootID string
	// VMID is vm_config.vm_id (default DefaultVMID).
	VMID   string
	Module Module
	// Config is the guard configuration JSON (see filters/guard/config), passed
	// to the plugin as a google.protobuf.StringValue.
	Config []byte
	// Env are inline environment variables for the VM.
	Env map[string]string
	// HostEnv are host environment variable names exposed to the VM.
	HostEnv []string
	// FailOpen lets traffic through when the VM is broken (default fail closed).
	FailOpen bool
	// Outbound places the guard on the caller's side (an outbound
	// listener): there is no downstream peer certificate to check, so
	// GuardFilters omits the one-URI-SAN filter.
	Outbound bool
}

// HTTPFilter builds the envoy.filters.http.wasm HttpFilter and validates it.
func HTTPFilter(f Filter) (*hcmv3.HttpFilter, error) {
	if len(f.Config) == 0 {
		return nil, errors.New("envoy: the guard configuration is empty")
	}
	code, err := codeSource(f.Module)
	if err != nil {
		return nil, err
	}
	cfg, err := anypb.New(wrapperspb.String(string(f.Config)))
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	vm := &wasmv3.VmConfig{
		VmId:    orDefault(f.VMID, DefaultVMID),
		Runtime: RuntimeV8,
		Code:    code,
	}
	if len(f.Env) > 0 || len(f.HostEnv) > 0 {
		host := append([]string(nil), f.HostEnv...)
		sort.Strings(host)
		vm.EnvironmentVariables = &wasmv3.EnvironmentVariables{HostEnvKeys: host, KeyValues: f.Env}
	}
	policy := wasmv3.FailurePolicy_FAIL_CLOSED
	if f.FailOpen {
		policy = wasmv3.FailurePolicy_FAIL_OPEN
	}
	w := &wasmfilterv3.Wasm{Config: &wasmv3.PluginConfig{
		Name:          orDefault(f.PluginName, DefaultPluginName),
		RootId:        f.RootID,
		Vm:            &wasmv3.PluginConfig_VmConfig{VmConfig: vm},
		Configuration: cfg,
		FailurePolicy: policy,
	}}
	hf, err := typedFilter(WasmFilterName, w)
	if err != nil {
		return nil, err
	}
	if err := w.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy: wasm filter: %w", err)
	}
	return hf, nil
}

func codeSource(m Module) (*corev3.AsyncDataSource, error) {
	switch {
	case m.URL != "" && m.LocalFile != "":
		return nil, errors.New("envoy: module: set a remote URL or a local file, not both")
	case m.LocalFile != "":
		if !strings.HasPrefix(m.LocalFile, "/") {
			return nil, fmt.Errorf("envoy: module: local file %q must be an absolute path inside the proxy", m.LocalFile)
		}
		return &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: &corev3.DataSource{
			Specifier: &corev3.DataSource_Filename{Filename: m.LocalFile}}}}, nil
	case m.URL != "":
		u, err := url.Parse(m.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("envoy: module: %q is not an http(s) URL", m.URL)
		}
		sum, err := NormaliseSHA256(m.SHA256)
		if err != nil {
			return nil, fmt.Errorf("envoy: module: %w", err)
		}
		if sum == "" {
			return nil, errors.New("envoy: module: a remote module needs the sha256 of the .wasm file")
		}
		if m.Cluster == "" {
			return nil, errors.New("envoy: module: a remote module needs the cluster that serves it")
		}
		timeout := m.Timeout
		if timeout == 0 {
			timeout = 10 * time.Second
		}
		retries := m.Retries
		if retries == 0 {
			retries = 5
		}
		return &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
			HttpUri: &corev3.HttpUri{
				Uri:              m.URL,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: m.Cluster},
				Timeout:          durationpb.New(timeout),
			},
			Sha256:      sum,
			RetryPolicy: &corev3.RetryPolicy{NumRetries: wrapperspb.UInt32(retries)},
		}}}, nil
	default:
		return nil, errors.New("envoy: module: set a remote URL (with sha256) or a local file")
	}
}

// Upstream is the distributor as an Envoy cluster.
type Upstream struct {
	// Name of the cluster (default DefaultClusterName).
	Name string
	// Host and Port of the distributor (DNS name or IP literal).
	Host string
	Port uint32
	// TLS originates TLS to the distributor (SNI = Host unless SNI is set).
	TLS bool
	SNI string
	// CAFile is the trust anchor file inside the proxy used to verify the
	// distributor; empty means no verification configured (plain TLS).
	CAFile string
	// ConnectTimeout (default 5s).
	ConnectTimeout time.Duration
}

// ParseUpstream reads "http(s)://host:port" into an Upstream; the port
// defaults to 80/443.
func ParseUpstream(raw string) (Upstream, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
		return Upstream{}, fmt.Errorf("distributor %q: want http(s)://host[:port]", raw)
	}
	port := uint64(80)
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		port, err = strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			return Upstream{}, fmt.Errorf("distributor %q: bad port", raw)
		}
	}
	return Upstream{Host: u.Hostname(), Port: uint32(port), TLS: u.Scheme == "https"}, nil
}

// Cluster builds the distributor cluster and validates it.
func Cluster(u Upstream) (*clusterv3.Cluster, error) {
	if u.Host == "" || u.Port == 0 || u.Port > 65535 {
		return nil, fmt.Errorf("envoy: cluster: host %q port %d invalid", u.Host, u.Port)
	}
	name := orDefault(u.Name, DefaultClusterName)
	discovery := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(u.Host) != nil {
		discovery = clusterv3.Cluster_STATIC
	}
	ct := u.ConnectTimeout
	if ct == 0 {
		ct = 5 * time.Second
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:       durationpb.New(ct),
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address:       u.Host,
						PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: u.Port},
					}}},
				}},
			}}}},
		},
	}
	if discovery == clusterv3.Cluster_STATIC {
		c.DnsLookupFamily = clusterv3.Cluster_AUTO
	}
	if u.TLS {
		tls := &tlsv3.UpstreamTlsContext{Sni: orDefault(u.SNI, u.Host), CommonTlsContext: &tlsv3.CommonTlsContext{}}
		if u.CAFile != "" {
			tls.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: u.CAFile}},
			}}
		}
		tc, err := anypb.New(tls)
		if err != nil {
			return nil, fmt.Errorf("envoy: %w", err)
		}
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}}
	}
	if err := c.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy: cluster: %w", err)
	}
	return c, nil
}

// YAML writes a message as YAML with proto field names (Envoy's own style).
// Keys are sorted, so output is deterministic.
func YAML(m proto.Message) ([]byte, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	return y, nil
}

// Map converts a message to a generic JSON value (for embedding in larger documents).
func Map(m proto.Message) (map[string]any, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(j, &out); err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	return out, nil
}

// Decode strictly parses YAML or JSON into m (unknown fields are errors, Any
// type URLs must resolve) and runs ValidateAll when m has it.
func Decode(data []byte, m proto.Message) error {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("envoy: %w", err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(j, m); err != nil {
		return fmt.Errorf("envoy: decode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("envoy: %w", err)
		}
	}
	return nil
}

// DecodeHTTPFilter strictly decodes an HttpFilter and validates it and the Wasm
// config inside it.
func DecodeHTTPFilter(data []byte) (*hcmv3.HttpFilter, *wasmfilterv3.Wasm, error) {
	var hf hcmv3.HttpFilter
	if err := Decode(data, &hf); err != nil {
		return nil, nil, err
	}
	var w wasmfilterv3.Wasm
	if err := hf.GetTypedConfig().UnmarshalTo(&w); err != nil {
		return nil, nil, fmt.Errorf("envoy: typed_config is not a Wasm filter: %w", err)
	}
	if err := w.ValidateAll(); err != nil {
		return nil, nil, fmt.Errorf("envoy: %w", err)
	}
	return &hf, &w, nil
}

// DecodeCluster strictly decodes a Cluster and validates it.
func DecodeCluster(data []byte) (*clusterv3.Cluster, error) {
	var c clusterv3.Cluster
	if err := Decode(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
