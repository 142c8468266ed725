package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/devproxy"
	"github.com/meshguard/meshguard/internal/devca"
)

type runFlags struct {
	listen, module, sha, pluginConfig, vmConfig, profile, failure string
	name, rootID, vmID, caDir, trustDomain, spiffeID, workloadAPI string
	cacheDir, logLevel                                            string
	workers                                                       int
	routes, clusters                                              []string
	insecure                                                      bool
	deadline                                                      time.Duration
}

func init() {
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runProxy(cmd.Context(), cmd.OutOrStdout(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:10000", "listen address")
	fl.StringVar(&f.module, "module", "", "module: a file, an http(s):// URL (with --sha256), or oci://REGISTRY/REPO:TAG|@sha256:...")
	fl.StringVar(&f.sha, "sha256", "", "expected sha256: of the file for http(s), of the manifest for oci://")
	fl.StringVar(&f.pluginConfig, "plugin-config", "", "file handed to proxy_on_configure")
	fl.StringVar(&f.vmConfig, "vm-config", "", "file handed to proxy_on_vm_start")
	fl.StringVar(&f.profile, "envoy", string(host.ProfileEnvoyLatest), "Envoy profile: envoy-1.33 or envoy-latest")
	fl.StringVar(&f.failure, "failure-policy", "FAIL_CLOSED", "FAIL_CLOSED, FAIL_OPEN or FAIL_RELOAD")
	fl.StringVar(&f.name, "plugin-name", "meshguard.guard", "plugin name (plugin_name)")
	fl.StringVar(&f.rootID, "root-id", "", "root id (plugin_root_id)")
	fl.StringVar(&f.vmID, "vm-id", "", "vm id (plugin_vm_id); default the plugin name")
	fl.IntVar(&f.workers, "workers", 2, "worker VMs (Envoy runs one per worker thread)")
	fl.StringArrayVar(&f.routes, "route", nil, "upstream route /PREFIX=http://host:port (repeatable)")
	fl.StringArrayVar(&f.clusters, "cluster", nil, "callout cluster NAME=http://host:port (repeatable)")
	fl.StringVar(&f.caDir, "ca", "", "local SPIFFE CA directory (created if missing)")
	fl.StringVar(&f.trustDomain, "trust-domain", "grid.example", "trust domain of a new local CA")
	fl.StringVar(&f.spiffeID, "spiffe-id", "spiffe://grid.example/ns/meshguard/sa/dev-proxy", "the proxy's SPIFFE ID")
	fl.StringVar(&f.workloadAPI, "workload-api", "", "SPIFFE Workload API socket (unix:///path)")
	fl.BoolVar(&f.insecure, "insecure-http", false, "serve plain HTTP (loopback only)")
	fl.StringVar(&f.cacheDir, "compilation-cache", "", "directory for compiled modules")
	fl.DurationVar(&f.deadline, "callback-deadline", 10*time.Second, "per-callback deadline (0 disables)")
	fl.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn, error, critical")
	rootCmd.AddCommand(cmd)
}

func parseLogLevel(s string) (host.LogLevel, error) {
	for l := host.LogTrace; l <= host.LogCritical; l++ {
		if l.String() == s {
			return l, nil
		}
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// hexDigest normalises "sha256:<hex>" or "<hex>" to lower-case hex.
func hexDigest(d string) string { return strings.TrimPrefix(strings.ToLower(d), "sha256:") }

// loadModule reads a module from a file or an http(s) URL and checks its sha256.
func loadModule(ctx context.Context, src, want string) ([]byte, error) {
	var bin []byte
	if ref, ok := strings.CutPrefix(src, "oci://"); ok {
		// The manifest digest (what a WasmPlugin sha256 pins for oci://).
		wasm, dgst, err := modules.Pull(ctx, ref, modules.RemoteOptions{})
		if err != nil {
			return nil, err
		}
		if want != "" && hexDigest(dgst.String()) != hexDigest(want) {
			return nil, fmt.Errorf("module manifest digest is %s, want %s", dgst, want)
		}
		return wasm, nil
	}
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		if want == "" {
			return nil, errors.New("--sha256 is required for a module URL")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetch module: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetch module %s: %s", src, resp.Status)
		}
		if bin, err = io.ReadAll(io.LimitReader(resp.Body, 256<<20)); err != nil {
			return nil, fmt.Errorf("fetch module: %w", err)
		}
	} else {
		var err error
		if bin, err = os.ReadFile(src); err != nil {
			return nil, err
		}
	}
	if want != "" {
		sum := sha256.Sum256(bin)
		if got := hex.EncodeToString(sum[:]); got != hexDigest(want) {
			return nil, fmt.Errorf("module sha256 is %s, want %s", got, want)
		}
	}
	return bin, nil
}

func runProxy(ctx context.Context, out io.Writer, f runFlags) error {
	if f.module == "" {
		return &exitError{code: 2, err: errors.New("--module is required")}
	}
	level, err := parseLogLevel(f.logLevel)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	profile, err := host.ParseProfile(f.profile)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	policy, err := host.ParseFailurePolicy(f.failure)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	var routes []devproxy.Route
	for _, r := range f.routes {
		rt, err := devproxy.ParseRoute(r)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		routes = append(routes, rt)
	}
	clusters := map[string]host.Cluster{}
	for _, c := range f.clusters {
		name, raw, ok := strings.Cut(c, "=")
		u, err := url.Parse(raw)
		if !ok || name == "" || err != nil || u.Host == "" {
			return &exitError{code: 2, err: fmt.Errorf("cluster %q: want NAME=http://host:port", c)}
		}
		clusters[name] = &devproxy.HTTPCluster{BaseURL: u, Client: &http.Client{}}
	}
	read := func(p string) ([]byte, error) {
		if p == "" {
			return nil, nil
		}
		return os.ReadFile(p)
	}
	pluginCfg, err := read(f.pluginConfig)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	vmCfg, err := read(f.vmConfig)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level.Slog()}))

	bin, err := loadModule(ctx, f.module, f.sha)
	if err != nil {
		return err
	}
	rt, err := host.NewRuntime(ctx, host.RuntimeConfig{Profile: profile, CompilationCacheDir: f.cacheDir, CallbackDeadline: f.deadline, Logger: log, LogLevel: level})
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	mod, err := rt.Compile(ctx, bin)
	if err != nil {
		return err
	}
	plugin, err := rt.NewPlugin(ctx, mod, host.PluginConfig{
		Name: f.name, RootID: f.rootID, VMID: f.vmID, Configuration: pluginCfg, VMConfig: vmCfg,
		Workers: f.workers, FailurePolicy: policy, Clusters: clusters,
	})
	if err != nil {
		return err
	}
	defer plugin.Close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	scheme := "http"
	var local x509svid.Source
	if !f.insecure {
		src, bundles, closer, err := proxyTLS(ctx, f)
		if err != nil {
			ln.Close()
			return err
		}
		defer closer()
		ln = tls.NewListener(ln, devproxy.ServerTLS(src, bundles))
		scheme, local = "https", src
	} else if ap, ok := ln.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		ln.Close()
		return &exitError{code: 2, err: errors.New("--insecure-http is only allowed on a loopback address")}
	}
	proxy, err := devproxy.New(devproxy.Config{Plugin: plugin, Routes: routes, Logger: log, Local: local})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "meshguard dev proxy listening on %s://%s (module %s, %d workers, %s)\n", scheme, ln.Addr(), mod.ABIVersion, plugin.Workers(), profile)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// proxyTLS returns the server's SVID and trust bundles, from a local CA or
// the Workload API.
func proxyTLS(ctx context.Context, f runFlags) (x509svid.Source, x509bundle.Source, func(), error) {
	if f.workloadAPI != "" {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(f.workloadAPI)))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("workload API: %w", err)
		}
		if _, err := src.GetX509SVID(); err != nil {
			src.Close()
			return nil, nil, nil, err
		}
		return src, src, func() { src.Close() }, nil
	}
	if f.caDir == "" {
		return nil, nil, nil, errors.New("set --ca DIR, --workload-api or --insecure-http")
	}
	ca, err := devca.Load(f.caDir)
	if errors.Is(err, os.ErrNotExist) {
		td, perr := spiffeid.TrustDomainFromString(f.trustDomain)
		if perr != nil {
			return nil, nil, nil, perr
		}
		if ca, err = devca.New(td); err == nil {
			err = ca.Save(f.caDir)
		}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	id, err := spiffeid.FromString(f.spiffeID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--spiffe-id: %w", err)
	}
	svid, err := ca.IssueX509SVID(id, devca.X509Options{TTL: 24 * time.Hour, DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, nil, nil, err
	}
	return svid, ca.X509Bundle(), func() {}, nil
}
