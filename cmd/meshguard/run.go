package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/devproxy"
	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/modsource"
)

// runFlags are the flags of meshguard run.
type runFlags struct {
	listen, module, sha, pluginConfig, vmConfig, profile, failure         string
	name, rootID, vmID, caDir, trustDomain, spiffeID, workloadAPI, nodeID string
	cacheDir, logLevel                                                    string
	workers                                                               int
	routes, clusters                                                      []string
	insecure                                                              bool
	deadline                                                              time.Duration
}

// logLevels are the proxy's log levels, lowest first.
func logLevels() []string {
	var out []string
	for l := host.LogTrace; l <= host.LogCritical; l++ {
		out = append(out, l.String())
	}
	return out
}

// profileNames are the Envoy profiles of --envoy.
func profileNames() []string {
	var out []string
	for _, p := range host.Profiles() {
		out = append(out, string(p))
	}
	return out
}

// addEnvoyProfileFlag registers --envoy.
func addEnvoyProfileFlag(f *pflag.FlagSet, p *string) {
	enumflag.Var(f, p, "envoy", "", string(host.ProfileEnvoyLatest), profileNames(), "Envoy profile (the WASI functions that Envoy release offers)")
}

func (f *runFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.listen, "listen", "127.0.0.1:10000", "listen address")
	fl.StringVar(&f.module, "module", "", "module: a file, - (stdin), an http(s):// URL (with --sha256), or oci://REGISTRY/REPO:TAG|@sha256:...")
	fl.StringVar(&f.sha, "sha256", "", "expected sha256: of the file for http(s), of the manifest for oci://")
	fl.StringVar(&f.pluginConfig, "plugin-config", "", "file handed to proxy_on_configure (- for stdin)")
	fl.StringVar(&f.vmConfig, "vm-config", "", "file handed to proxy_on_vm_start (- for stdin)")
	addEnvoyProfileFlag(fl, &f.profile)
	enumflag.Var(fl, &f.failure, "failure-policy", "", "FAIL_CLOSED", []string{"FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"}, "what streams of a failed VM get")
	fl.StringVar(&f.name, "plugin-name", "meshguard.guard", "plugin name (plugin_name)")
	fl.StringVar(&f.rootID, "root-id", "", "root id (plugin_root_id)")
	fl.StringVar(&f.vmID, "vm-id", "", "vm id (plugin_vm_id); default the plugin name")
	fl.IntVar(&f.workers, "workers", 2, "worker VMs (Envoy runs one per worker thread)")
	fl.StringArrayVar(&f.routes, "route", nil, "upstream route /PREFIX=http://host:port (repeatable)")
	fl.StringArrayVar(&f.clusters, "cluster", nil, "callout cluster NAME=http://host:port (repeatable)")
	fl.StringVar(&f.caDir, "ca", "", "local SPIFFE CA directory (created if missing)")
	fl.StringVar(&f.trustDomain, "trust-domain", "grid.example", "trust domain of a new local CA")
	fl.StringVar(&f.spiffeID, "spiffe-id", "spiffe://grid.example/ns/meshguard/sa/dev-proxy", "the proxy's SPIFFE ID")
	fl.StringVar(&f.nodeID, "node-id", "", "the proxy's node id (xds.node.id, Envoy's --service-node); default meshguard-run~LISTEN")
	fl.StringVar(&f.workloadAPI, "workload-api", "", "SPIFFE Workload API socket (unix:///path)")
	fl.BoolVar(&f.insecure, "insecure-http", false, "serve plain HTTP (loopback only)")
	fl.StringVar(&f.cacheDir, "compilation-cache", "", "directory for compiled modules")
	fl.DurationVar(&f.deadline, "callback-deadline", 10*time.Second, "per-callback deadline (0 disables)")
	enumflag.Var(fl, &f.logLevel, "log-level", "", "info", logLevels(), "proxy log level")
}

// config translates the flags into the proxy's configuration, reading the
// files they name; every problem is a usage error.
func (f *runFlags) config(cmd *cobra.Command) (devproxy.ServeConfig, error) {
	var cfg devproxy.ServeConfig
	if f.module == "" {
		return cfg, usagef("--module is required")
	}
	var level host.LogLevel
	for l := host.LogTrace; l <= host.LogCritical; l++ {
		if l.String() == f.logLevel {
			level = l
		}
	}
	policy, err := host.ParseFailurePolicy(f.failure)
	if err != nil {
		return cfg, usage(err)
	}
	for _, r := range f.routes {
		rt, err := devproxy.ParseRoute(r)
		if err != nil {
			return cfg, usage(err)
		}
		cfg.Routes = append(cfg.Routes, rt)
	}
	cfg.Clusters = map[string]*url.URL{}
	for _, c := range f.clusters {
		name, u, err := devproxy.ParseCluster(c)
		if err != nil {
			return cfg, usage(err)
		}
		cfg.Clusters[name] = u
	}
	in := newInputs(cmd)
	pluginCfg, err := in.readOptional("--plugin-config", f.pluginConfig)
	if err != nil {
		return cfg, err
	}
	vmCfg, err := in.readOptional("--vm-config", f.vmConfig)
	if err != nil {
		return cfg, err
	}
	cfg.Module, err = modsource.Fetch(cmd.Context(), f.module, f.sha, modsource.Options{
		ReadFile: func(p string) ([]byte, error) { return in.read("--module", p) }})
	if err != nil {
		return cfg, err // a local file that cannot be read is a usage error already
	}
	cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level.Slog()}))
	cfg.Runtime = host.RuntimeConfig{Profile: host.Profile(f.profile), CompilationCacheDir: f.cacheDir, CallbackDeadline: f.deadline,
		Logger: cfg.Logger, LogLevel: level}
	cfg.Plugin = host.PluginConfig{Name: f.name, RootID: f.rootID, VMID: f.vmID, Configuration: pluginCfg, VMConfig: vmCfg,
		Workers: f.workers, FailurePolicy: policy}
	node := f.nodeID
	if node == "" {
		node = "meshguard-run~" + f.listen
	}
	// Envoy's node id (--service-node): the guard names itself by it in its
	// bundle polls and audit records.
	cfg.Plugin.Properties = host.NewProps().SetString("xds.node.id", node)
	cfg.Listen = f.listen
	cfg.Identity = devproxy.Identity{WorkloadAPI: f.workloadAPI, CADir: f.caDir, TrustDomain: f.trustDomain, SPIFFEID: f.spiffeID, PlainHTTP: f.insecure}
	return cfg, nil
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --module FILE|URL --route /PREFIX=URL [flags]",
		Short: "Run a filter module in the local Envoy stand-in (dev proxy)",
		Long: `run starts meshguard's dev proxy: an mTLS HTTP listener that runs a Proxy-Wasm
module on worker VMs exactly as Envoy's Wasm filter would (see check-module),
forwards allowed requests to upstreams by path prefix and sends the module's
http callouts to the named clusters.

Identity: with --ca DIR the proxy gets an X509-SVID for --spiffe-id from a local
SPIFFE CA (created in DIR if missing) and requires client certificates that
chain to the trust bundle of the trust domain in their first URI SAN, as Envoy's
SPIFFE certificate validator does; the module judges that URI SAN itself
(connection.uri_san_peer_certificate), and a certificate with two URI SANs is
refused ahead of it (403, like the RBAC filter render envoy|kuma adds). With
--workload-api it takes its SVID and bundle from a SPIFFE Workload API socket.
The path is forwarded exactly as received; x-forwarded-client-cert from the
client is dropped and x-forwarded-proto set from the connection (Envoy's
defaults). --insecure-http serves plain HTTP (loopback demos only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd)
			if err != nil {
				return err
			}
			cfg.Ready = func(l devproxy.Listening) {
				fmt.Fprintf(cmd.OutOrStdout(), "meshguard dev proxy listening on %s (module %s, %d workers, %s)\n", l.URL, l.ABIVersion, l.Workers, l.Profile)
			}
			err = devproxy.Serve(cmd.Context(), cfg)
			switch {
			case errors.Is(err, devproxy.ErrNoIdentity):
				return usagef("set --ca DIR, --workload-api or --insecure-http")
			case errors.Is(err, devproxy.ErrPlainHTTPNotLoopback):
				return usagef("--insecure-http: %w", err)
			}
			return err
		},
	}
	f.register(cmd.Flags())
	return cmd
}
