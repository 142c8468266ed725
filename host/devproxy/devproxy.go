// Package devproxy is a local Envoy stand-in (`meshguard run`): an HTTP(S)
// reverse proxy that runs a Proxy-Wasm plugin from package host on every
// request the way Envoy's HTTP Wasm filter does. It terminates mTLS as
// Envoy's SPIFFE certificate validator does (ServerTLS), sets Envoy's
// connection attributes from the peer certificate as presented (the first
// URI SAN byte for byte; the local certificate's first URI SAN), sanitises x-forwarded-client-cert and
// x-forwarded-proto as Envoy's connection manager does by default, refuses a
// peer with two URI SANs as the RBAC filter of the rendered configs does,
// runs the request and response callbacks, honours the plugin's verdicts,
// forwards allowed requests to upstreams by path prefix with :path
// unchanged, and serves the plugin's http callouts with a real HTTP client.
// Serve composes the whole proxy `meshguard run` starts: host runtime,
// plugin, callout clusters, listener and an identity from a local SPIFFE CA
// or the Workload API.
package devproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/host"
)

// Route sends requests whose path starts with Prefix to Upstream.
type Route struct {
	Prefix   string
	Upstream *url.URL
}

// Config configures a Proxy.
type Config struct {
	// Plugin is the running filter; every request gets a stream on it.
	Plugin *host.Plugin
	// Routes are matched longest prefix first.
	Routes []Route
	// MaxBodyBytes bounds request and response bodies (default 8 MiB).
	MaxBodyBytes int64
	// StreamTimeout bounds how long a paused stream may wait for the plugin
	// (default 30s), like Envoy's stream idle timeout.
	StreamTimeout time.Duration
	// Transport reaches upstreams (default a pooled http.Transport).
	Transport http.RoundTripper
	// Logger logs access lines and errors.
	Logger *slog.Logger
	// Properties are added to every stream (e.g. Istio peer metadata).
	Properties func(r *http.Request, p *host.Props)
	// Local is the SVID the proxy presents downstream (ServerTLS): its
	// first URI SAN is connection.uri_san_local_certificate on TLS
	// connections, as Envoy reports the local certificate.
	Local x509svid.Source
}

// Proxy is an http.Handler.
type Proxy struct {
	cfg    Config
	routes []Route
	connID atomic.Uint64
}

// New validates the configuration.
func New(cfg Config) (*Proxy, error) {
	if cfg.Plugin == nil {
		return nil, errors.New("devproxy: a plugin is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.StreamTimeout <= 0 {
		cfg.StreamTimeout = 30 * time.Second
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	routes := append([]Route(nil), cfg.Routes...)
	sort.SliceStable(routes, func(i, j int) bool { return len(routes[i].Prefix) > len(routes[j].Prefix) })
	return &Proxy{cfg: cfg, routes: routes}, nil
}

// ParseRoute reads "PREFIX=URL".
func ParseRoute(s string) (Route, error) {
	prefix, raw, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(prefix, "/") {
		return Route{}, fmt.Errorf("route %q: want /PREFIX=http://host:port", s)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Route{}, fmt.Errorf("route %q: upstream must be an http(s) URL", s)
	}
	return Route{Prefix: prefix, Upstream: u}, nil
}

// Props builds Envoy's connection, source, destination and request
// attributes for r.
func (p *Proxy) Props(r *http.Request) *host.Props {
	props := host.NewProps()
	props.SetTime("request.time", time.Now())
	props.SetString("request.protocol", r.Proto)
	if _, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		props.SetString("source.address", r.RemoteAddr)
		if n, err := strconv.Atoi(port); err == nil {
			props.SetInt("source.port", int64(n))
		}
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		props.SetString("destination.address", la.String())
		if _, port, err := net.SplitHostPort(la.String()); err == nil {
			if n, err := strconv.Atoi(port); err == nil {
				props.SetInt("destination.port", int64(n))
			}
		}
	}
	props.SetUint("connection.id", p.connID.Add(1))
	tlsState := r.TLS
	props.SetBool("connection.mtls", tlsState != nil && len(tlsState.PeerCertificates) > 0)
	if tlsState != nil && p.cfg.Local != nil {
		if svid, err := p.cfg.Local.GetX509SVID(); err == nil && len(svid.Certificates) > 0 {
			if san, ok := FirstURISAN(svid.Certificates[0]); ok {
				props.SetString("connection.uri_san_local_certificate", san)
			}
		}
	}
	if tlsState != nil {
		props.SetString("connection.requested_server_name", tlsState.ServerName)
		props.SetString("connection.tls_version", tlsVersion(tlsState.Version))
		if len(tlsState.PeerCertificates) > 0 {
			leaf := tlsState.PeerCertificates[0]
			if san, ok := FirstURISAN(leaf); ok {
				props.SetString("connection.uri_san_peer_certificate", san)
			}
			if len(leaf.DNSNames) > 0 {
				props.SetString("connection.dns_san_peer_certificate", leaf.DNSNames[0])
			}
			props.SetString("connection.subject_peer_certificate", leaf.Subject.String())
			sum := sha256.Sum256(leaf.Raw)
			props.SetString("connection.sha256_peer_certificate_digest", hex.EncodeToString(sum[:]))
		}
	}
	if p.cfg.Properties != nil {
		p.cfg.Properties(r, props)
	}
	return props
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	}
	return ""
}

// hopByHop headers are connection-scoped and never forwarded.
var hopByHop = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Envoy's HTTP connection manager rewrites these request headers before any
// filter runs (and so before the plugin sees them).
var sanitised = map[string]bool{
	// forward_client_cert_details defaults to SANITIZE: a client's XFCC is
	// never believed or forwarded.
	"x-forwarded-client-cert": true,
	// With xff_num_trusted_hops 0 (the default) x-forwarded-proto is set
	// from the downstream connection, whatever the client sent.
	"x-forwarded-proto": true,
}

// requestPath is :path as the client sent it: the request target byte for
// byte (Envoy hands the path to filters and upstream unchanged unless path
// normalisation is configured), the path part of an absolute-form target.
func requestPath(r *http.Request) string {
	raw := r.RequestURI
	if strings.HasPrefix(raw, "/") || raw == "*" {
		return raw
	}
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		i := strings.IndexAny(rest, "/?")
		switch {
		case i < 0:
			return "/"
		case rest[i] == '?':
			return "/" + rest[i:]
		}
		return rest[i:]
	}
	return r.URL.RequestURI()
}

// manyURISANs reports a peer certificate that the RBAC filter `meshguard
// render envoy|kuma` puts before the guard (envoy.OneURISANFilter) refuses:
// its URI SANs, joined with "," as Envoy's uri_san matching input joins
// them, contain a comma.
func manyURISANs(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	return strings.Contains(strings.Join(URISANs(r.TLS.PeerCertificates[0]), ","), ",")
}

// ServeHTTP runs one request through the plugin and, if allowed, upstream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if manyURISANs(r) {
		// The RBAC filter ahead of the guard answers; the plugin never sees
		// the request headers.
		w.Header().Set("x-envoy-local-reply-details", "rbac_access_denied_matched_policy["+envoy.OneURISANPolicy+"]")
		http.Error(w, "RBAC: access denied", http.StatusForbidden)
		return
	}
	hdrs := host.Headers{{":method", r.Method}, {":path", requestPath(r)}, {":authority", r.Host}, {":scheme", scheme}}
	for _, k := range sortedHeaderKeys(r.Header) {
		lk := strings.ToLower(k)
		if hopByHop[lk] || sanitised[lk] {
			continue
		}
		for _, v := range r.Header[k] {
			hdrs = append(hdrs, [2]string{lk, v})
		}
	}
	if _, ok := hdrs.Get("x-request-id"); !ok {
		hdrs = append(hdrs, [2]string{"x-request-id", requestID()})
	}
	hdrs = append(hdrs, [2]string{"x-forwarded-proto", scheme})

	s := p.cfg.Plugin.NewStream(p.Props(r))
	defer s.Complete()
	status := 0
	defer func() {
		p.cfg.Logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status, "duration", time.Since(start))
	}()

	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	var body []byte
	if hasBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxBodyBytes+1))
		if err != nil {
			status = http.StatusBadRequest
			http.Error(w, "reading request body: "+err.Error(), status)
			return
		}
		if int64(len(body)) > p.cfg.MaxBodyBytes {
			status = http.StatusRequestEntityTooLarge
			http.Error(w, "request body too large", status)
			return
		}
		hasBody = len(body) > 0
	}
	if v := p.settle(r.Context(), s, s.RequestHeaders(hdrs, !hasBody)); v.Action != host.Continue {
		status = p.finish(w, v)
		return
	}
	if hasBody {
		if v := p.settle(r.Context(), s, s.RequestBody(body, true)); v.Action != host.Continue {
			status = p.finish(w, v)
			return
		}
	}
	status = p.forward(w, r, s, hasBody)
}

// settle waits while the verdict is Pause, bounded by the stream timeout
// (Envoy's stream idle timeout) and the client's request.
func (p *Proxy) settle(ctx context.Context, s *host.Stream, v host.Verdict) host.Verdict {
	if v.Action != host.Pause {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StreamTimeout)
	defer cancel()
	return s.Wait(ctx)
}

// finish ends a stream the filter did not let continue: its local reply, a
// reset, or a timeout while paused.
func (p *Proxy) finish(w http.ResponseWriter, v host.Verdict) int {
	switch v.Action {
	case host.Reset:
		// Envoy resets the stream; over HTTP/1 the closest is aborting.
		panic(http.ErrAbortHandler)
	case host.Pause:
		http.Error(w, "stream timeout", http.StatusGatewayTimeout)
		return http.StatusGatewayTimeout
	}
	lr := v.Reply
	for _, kv := range lr.Headers {
		if !strings.HasPrefix(kv[0], ":") {
			w.Header().Add(kv[0], kv[1])
		}
	}
	if lr.Details != "" {
		w.Header().Set("x-envoy-local-reply-details", lr.Details)
	}
	if w.Header().Get("content-type") == "" && len(lr.Body) > 0 {
		w.Header().Set("content-type", "text/plain")
	}
	w.WriteHeader(int(lr.Status))
	_, _ = w.Write(lr.Body)
	return int(lr.Status)
}

func (p *Proxy) route(path string) *Route {
	for i := range p.routes {
		if strings.HasPrefix(path, p.routes[i].Prefix) {
			return &p.routes[i]
		}
	}
	return nil
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, s *host.Stream, hasBody bool) int {
	reqHdrs := s.RequestHeadersNow()
	path, _ := reqHdrs.Get(":path")
	method, _ := reqHdrs.Get(":method")
	authority, _ := reqHdrs.Get(":authority")
	rt := p.route(path)
	if rt == nil {
		http.Error(w, "no route for "+path, http.StatusNotFound)
		return http.StatusNotFound
	}
	target, err := upstreamURL(rt.Upstream, path)
	if err != nil {
		// Never forward a path other than the one the plugin decided on.
		p.cfg.Logger.Warn("cannot forward the path unchanged", "path", path, "error", err)
		http.Error(w, "path cannot be forwarded unchanged", http.StatusBadGateway)
		return http.StatusBadGateway
	}
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(s.RequestBodyNow())
	}
	out, err := http.NewRequestWithContext(r.Context(), method, rt.Upstream.String(), body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	out.URL = target
	out.Host = authority
	// The upstream the connection reached, for the upstream.* attributes
	// the plugin reads from response headers on (Envoy's router picks the
	// host after the filters' request headers).
	var upstreamAddr string
	out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { upstreamAddr = ci.Conn.RemoteAddr().String() },
	}))
	for _, kv := range reqHdrs {
		if !strings.HasPrefix(kv[0], ":") && !hopByHop[kv[0]] && kv[0] != "content-length" {
			out.Header.Add(kv[0], kv[1])
		}
	}
	resp, err := p.cfg.Transport.RoundTrip(out)
	if err != nil {
		p.cfg.Logger.Warn("upstream error", "upstream", rt.Upstream.String(), "error", err)
		http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBodyBytes+1))
	if err != nil || int64(len(respBody)) > p.cfg.MaxBodyBytes {
		http.Error(w, "upstream response too large or broken", http.StatusBadGateway)
		return http.StatusBadGateway
	}
	rh := host.Headers{{":status", strconv.Itoa(resp.StatusCode)}}
	for _, k := range sortedHeaderKeys(resp.Header) {
		lk := strings.ToLower(k)
		if hopByHop[lk] || lk == "content-length" {
			continue
		}
		for _, v := range resp.Header[k] {
			rh = append(rh, [2]string{lk, v})
		}
	}
	s.SelectUpstream(upstreamProps(upstreamAddr, resp))
	if v := p.settle(r.Context(), s, s.ResponseHeaders(rh, len(respBody) == 0)); v.Action != host.Continue {
		return p.finish(w, v)
	}
	if len(respBody) > 0 {
		if v := p.settle(r.Context(), s, s.ResponseBody(respBody, true)); v.Action != host.Continue {
			return p.finish(w, v)
		}
	}
	final := s.ResponseHeadersNow()
	code := resp.StatusCode
	for _, kv := range final {
		if kv[0] == ":status" {
			if n, err := strconv.Atoi(kv[1]); err == nil {
				code = n
			}
			continue
		}
		w.Header().Add(kv[0], kv[1])
	}
	out2 := respBody
	if len(respBody) > 0 {
		out2 = s.ResponseBodyNow()
	}
	w.Header().Set("content-length", strconv.Itoa(len(out2)))
	w.WriteHeader(code)
	_, _ = w.Write(out2)
	return code
}

// upstreamURL addresses path on base's scheme and host so that the request
// line carries path byte for byte (net/http would otherwise re-encode it:
// RawPath is dropped whenever it is not the canonical escaping).
func upstreamURL(base *url.URL, path string) (*url.URL, error) {
	p, q, hasQuery := strings.Cut(path, "?")
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, RawQuery: q, ForceQuery: hasQuery && q == ""}
	if strings.HasPrefix(p, "//") {
		// An opaque "//x" would be written as the absolute form "http://x".
		dec, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		u.Path, u.RawPath = dec, p
	} else {
		u.Opaque = p
	}
	if got := u.RequestURI(); got != path {
		return nil, fmt.Errorf("would be sent as %q", got)
	}
	return u, nil
}

func sortedHeaderKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// HTTPCluster serves a plugin's callouts to one cluster with a real HTTP
// client against BaseURL (scheme and host; the callout's :path is appended).
type HTTPCluster struct {
	BaseURL *url.URL
	Client  *http.Client
	// MaxBodyBytes bounds the response body (default 32 MiB).
	MaxBodyBytes int64
}

// Call performs the callout on its own goroutine.
func (c *HTTPCluster) Call(req *host.CalloutRequest, reply func(*host.CalloutResponse)) {
	go func() { reply(c.do(req)) }()
}

func (c *HTTPCluster) do(req *host.CalloutRequest) *host.CalloutResponse {
	ctx := context.Background()
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	path, _ := req.Headers.Get(":path")
	method, _ := req.Headers.Get(":method")
	authority, _ := req.Headers.Get(":authority")
	ref, err := url.Parse(path)
	if err != nil {
		return nil
	}
	u := c.BaseURL.ResolveReference(ref)
	var body io.Reader
	if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil
	}
	hr.Host = authority
	for _, kv := range req.Headers {
		if !strings.HasPrefix(kv[0], ":") && !hopByHop[kv[0]] {
			hr.Header.Add(kv[0], kv[1])
		}
	}
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(hr)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	limit := c.MaxBodyBytes
	if limit <= 0 {
		limit = 32 << 20
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil
	}
	out := &host.CalloutResponse{Headers: host.Headers{{":status", strconv.Itoa(resp.StatusCode)}}, Body: b}
	for _, k := range sortedHeaderKeys(resp.Header) {
		for _, v := range resp.Header[k] {
			out.Headers = append(out.Headers, [2]string{strings.ToLower(k), v})
		}
	}
	return out
}

// upstreamProps are the upstream attributes Envoy presents once the router
// connected: upstream.address (IP:port), and over TLS the first URI SAN of
// the upstream's certificate (upstream.uri_san_peer_certificate).
func upstreamProps(addr string, resp *http.Response) *host.Props {
	p := host.NewProps()
	if addr != "" {
		p.SetString("upstream.address", addr)
	}
	if t := resp.TLS; t != nil && len(t.PeerCertificates) > 0 && len(t.PeerCertificates[0].URIs) > 0 {
		p.SetString("upstream.uri_san_peer_certificate", t.PeerCertificates[0].URIs[0].String())
	}
	return p
}
