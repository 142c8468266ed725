package devproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/internal/devca"
)

// ErrPlainHTTPNotLoopback: plain HTTP was asked for on an address other
// than loopback, where callers' identities would travel unauthenticated.
var ErrPlainHTTPNotLoopback = errors.New("plain HTTP is only allowed on a loopback address")

// ErrNoIdentity: the proxy has neither a local CA, a Workload API nor
// plain HTTP to serve with.
var ErrNoIdentity = errors.New("no identity: give a local CA directory, a Workload API socket or plain HTTP")

// Identity is how the proxy terminates mTLS.
type Identity struct {
	// WorkloadAPI is a SPIFFE Workload API address (unix:///path); the
	// proxy's SVID and trust bundle come from it.
	WorkloadAPI string
	// CADir is a local SPIFFE CA (internal/devca), created for TrustDomain
	// when missing; the proxy gets an X509-SVID for SPIFFEID from it.
	CADir       string
	TrustDomain string
	SPIFFEID    string
	// PlainHTTP serves without TLS (loopback listeners only).
	PlainHTTP bool
}

// ServeConfig is a whole dev proxy: the module and what Envoy's Wasm
// filter configuration carries, the routes, the callout clusters, the
// listener and the identity.
type ServeConfig struct {
	// Module is the compiled-to-be .wasm.
	Module []byte
	// Runtime and Plugin are the host settings (Plugin.Clusters is filled
	// from Clusters).
	Runtime host.RuntimeConfig
	Plugin  host.PluginConfig
	// Routes send allowed requests upstream by path prefix.
	Routes []Route
	// Clusters serve the plugin's http callouts by name.
	Clusters map[string]*url.URL
	// Listen is the listen address.
	Listen   string
	Identity Identity
	// Logger logs access lines and errors (default slog.Default()).
	Logger *slog.Logger
	// Ready is called once the proxy listens.
	Ready func(Listening)
}

// Listening describes a proxy that has started.
type Listening struct {
	URL        string // scheme://address
	ABIVersion string // the module's Proxy-Wasm ABI, as it declares it ("0_2_1")
	Workers    int
	Profile    host.Profile
}

// ParseCluster reads "NAME=http://host:port".
func ParseCluster(s string) (string, *url.URL, error) {
	name, raw, ok := strings.Cut(s, "=")
	u, err := url.Parse(raw)
	if !ok || name == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", nil, fmt.Errorf("cluster %q: want NAME=http://host:port", s)
	}
	return name, u, nil
}

// Serve runs the proxy until ctx ends, then shuts it down (10 s for
// requests in flight).
func Serve(ctx context.Context, cfg ServeConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	rtCfg := cfg.Runtime
	if rtCfg.Logger == nil {
		rtCfg.Logger = log
	}
	rt, err := host.NewRuntime(ctx, rtCfg)
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	mod, err := rt.Compile(ctx, cfg.Module)
	if err != nil {
		return err
	}
	pcfg := cfg.Plugin
	pcfg.Clusters = map[string]host.Cluster{}
	for name, u := range cfg.Clusters {
		pcfg.Clusters[name] = &HTTPCluster{BaseURL: u, Client: &http.Client{}}
	}
	plugin, err := rt.NewPlugin(ctx, mod, pcfg)
	if err != nil {
		return err
	}
	defer plugin.Close()
	ln, scheme, local, closeID, err := listen(ctx, cfg.Listen, cfg.Identity)
	if err != nil {
		return err
	}
	defer closeID()
	// The proxy's own SVID names the local workload in XFCC (By=) and in the
	// guard's source.principal-side properties.
	proxy, err := New(Config{Plugin: plugin, Routes: cfg.Routes, Logger: log, Local: local})
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	if cfg.Ready != nil {
		cfg.Ready(Listening{URL: scheme + "://" + ln.Addr().String(), ABIVersion: mod.ABIVersion, Workers: plugin.Workers(), Profile: rtCfg.Profile})
	}
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

// listen opens the listener with the identity's TLS and returns the SVID it
// presents (nil on plain HTTP).
func listen(ctx context.Context, addr string, id Identity) (net.Listener, string, x509svid.Source, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, nil, err
	}
	if id.PlainHTTP {
		if ap, ok := ln.Addr().(*net.TCPAddr); !ok || !ap.IP.IsLoopback() {
			ln.Close()
			return nil, "", nil, nil, fmt.Errorf("%s: %w", addr, ErrPlainHTTPNotLoopback)
		}
		return ln, "http", nil, func() {}, nil
	}
	src, bundles, closeID, err := id.sources(ctx)
	if err != nil {
		ln.Close()
		return nil, "", nil, nil, err
	}
	return tls.NewListener(ln, ServerTLS(src, bundles)), "https", src, closeID, nil
}

// sources are the proxy's SVID and trust bundles, from the Workload API or
// the local CA.
func (id Identity) sources(ctx context.Context) (x509svid.Source, x509bundle.Source, func(), error) {
	if id.WorkloadAPI != "" {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(id.WorkloadAPI)))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("workload API: %w", err)
		}
		if _, err := src.GetX509SVID(); err != nil {
			src.Close()
			return nil, nil, nil, err
		}
		return src, src, func() { src.Close() }, nil
	}
	if id.CADir == "" {
		return nil, nil, nil, ErrNoIdentity
	}
	ca, err := devca.Load(id.CADir)
	if errors.Is(err, os.ErrNotExist) {
		td, perr := spiffeid.TrustDomainFromString(id.TrustDomain)
		if perr != nil {
			return nil, nil, nil, fmt.Errorf("trust domain: %w", perr)
		}
		if ca, err = devca.New(td); err == nil {
			err = ca.Save(id.CADir)
		}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	sid, err := spiffeid.FromString(id.SPIFFEID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("SPIFFE ID: %w", err)
	}
	svid, err := ca.IssueX509SVID(sid, devca.X509Options{TTL: 24 * time.Hour, DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, nil, nil, err
	}
	return svid, ca.X509Bundle(), func() {}, nil
}
