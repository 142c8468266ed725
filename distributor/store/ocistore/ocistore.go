// Package ocistore is a store.Store that keeps every blob, manifest, tag and
// upload in an external OCI registry (CNCF Distribution, Harbor, ECR, GCR,
// Artifact Registry, zot, ...), so several distributor replicas can share
// one registry and any replica can serve any request.
//
// Nothing is kept locally except caches (authenticated transports) and
// per-request scratch space:
//
//   - Upload ids carry the registry's upload session (path and query of its
//     Location) and the upload's size. The session URL of CNCF Distribution
//     changes with every chunk, so AppendUpload returns a new id, which the
//     distributor hands to the client as the next Location. Ids are checked
//     on decode: they can only name an upload URL of the same repository on
//     the configured registry.
//   - Chunks and monolithic blobs are read ahead (in memory up to 1 MiB,
//     then in a scratch file) so the size limit and the digest are checked
//     before the registry sees any byte, a client that disconnects mid-chunk
//     leaves the registry's upload untouched, and each PATCH carries an exact
//     Content-Range the registry verifies.
//   - Blobs are read with HTTP Range requests (a registry that ignores Range
//     is read from the start and skipped forward); a sequential read from
//     the start is checked against the digest.
//
// Limits of an external registry, by method:
//
//   - Manifests lists the digests of tagged manifests and their referrers:
//     registries do not list untagged manifests.
//   - Referrers uses the registry's referrers API, or the referrers tag
//     schema (tag "sha256-<hex>" holding an index) for registries without it
//     (CNCF Distribution); PutManifest and DeleteManifest keep that tag up to
//     date when the registry does not process subjects itself. Two replicas
//     adding referrers to one subject at the same moment can lose one entry,
//     as the distribution spec warns for every client of the tag schema.
//   - DeleteManifest by tag needs a registry that deletes tags (CNCF
//     Distribution v3 does); others answer store.ErrUnsupported.
//   - Repositories needs the registry's catalog (Harbor: an admin account;
//     ECR has none: store.ErrUnsupported) and pages through all of it.
//   - The digest of a chunked upload is checked by the registry at commit
//     (its content cannot be read back first); monolithic blobs are checked
//     here too.
//
// Configuration (distributor, storage.backend oci):
//
//	storage:
//	  backend: oci
//	  oci:
//	    registry: harbor.example.com/meshguard  # host[:port][/prefix]
//	    username: robot$meshguard
//	    password_file: /var/run/secrets/registry/password
//	    ca_file: /etc/meshguard/registry-ca.pem   # optional
package ocistore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// Options configure a Store.
type Options struct {
	// Registry is the registry's host[:port], e.g. "harbor.example.com".
	Registry string
	// Prefix is a path every repository is stored under: with "meshguard",
	// repository "filters/guard" is "meshguard/filters/guard" in the
	// registry and repositories outside the prefix are invisible.
	Prefix string
	// PlainHTTP talks plain HTTP to the registry. Without it only HTTPS is
	// used; there is no fallback in either direction.
	PlainHTTP bool
	// CAFile is a PEM file of CA certificates trusted for the registry in
	// addition to the system roots.
	CAFile string
	// TLSConfig is the base TLS client configuration (optional; CAFile adds
	// to its RootCAs).
	TLSConfig *tls.Config
	// Auth authenticates to the registry (see Credentials); nil resolves
	// credentials for Registry from Keychain.
	Auth authn.Authenticator
	// Keychain is consulted when Auth is nil (default authn.DefaultKeychain:
	// the Docker config file and credential helpers; anonymous without).
	Keychain authn.Keychain
	// Timeout bounds each metadata request (manifests, tags, upload
	// sessions) and the wait for the response headers of blob transfers,
	// which are otherwise bounded by the caller's context (default 60s).
	Timeout time.Duration
	// ScratchDir holds chunks over 1 MiB while they are checked before
	// upload (default os.TempDir()).
	ScratchDir string
	// Logger receives warnings about cleanups that failed (default
	// slog.Default()).
	Logger *slog.Logger
}

// Store is a store.Store in an external OCI registry. Its methods are safe
// for concurrent use.
type Store struct {
	opt    Options
	reg    name.Registry
	scheme string
	host   string
	prefix string
	auth   authn.Authenticator
	httpT  *http.Transport
	base   http.RoundTripper
	log    *slog.Logger

	mu    sync.Mutex
	trans map[string]http.RoundTripper // by registry repository; "" is registry-wide
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.ReferrerLister = (*Store)(nil)
)

// maxTransports bounds the cache of per-repository authenticated
// transports; past it the cache starts over.
const maxTransports = 1024

// New checks opts and returns a Store. It does not contact the registry
// (Ping does), so a registry that is down at start-up only makes the
// distributor unready.
func New(opts Options) (*Store, error) {
	host := strings.TrimSpace(opts.Registry)
	if host == "" {
		return nil, errors.New("ocistore: registry is required")
	}
	if strings.Contains(host, "://") || strings.ContainsAny(host, "/?#@ ") {
		return nil, fmt.Errorf("ocistore: registry %q: want host[:port] without scheme or path", host)
	}
	var nameOpts []name.Option
	if opts.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("ocistore: registry %q: %w", host, err)
	}
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" && !store.ValidRepository(prefix) {
		return nil, fmt.Errorf("ocistore: prefix %q is not a valid repository path (lower-case letters, digits, separators . _ - and /)", opts.Prefix)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.ScratchDir == "" {
		opts.ScratchDir = os.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	auth := opts.Auth
	if auth == nil {
		kc := opts.Keychain
		if kc == nil {
			kc = authn.DefaultKeychain
		}
		if auth, err = kc.Resolve(reg); err != nil {
			return nil, fmt.Errorf("ocistore: credentials for %s: %w", host, err)
		}
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSConfig != nil {
		tlsConf = opts.TLSConfig.Clone()
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ocistore: ca_file: %w", err)
		}
		pool := tlsConf.RootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil {
				pool = x509.NewCertPool()
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ocistore: ca_file %s: no PEM certificates", opts.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	ht := http.DefaultTransport.(*http.Transport).Clone()
	ht.TLSClientConfig = tlsConf
	ht.ResponseHeaderTimeout = opts.Timeout
	ht.MaxIdleConnsPerHost = 32
	scheme := "https"
	if opts.PlainHTTP {
		scheme = "http"
	}
	s := &Store{
		opt:    opts,
		reg:    reg,
		scheme: scheme,
		host:   reg.RegistryStr(),
		prefix: prefix,
		auth:   auth,
		httpT:  ht,
		log:    opts.Logger,
		trans:  map[string]http.RoundTripper{},
	}
	s.base = &baseTransport{inner: ht, host: s.host, scheme: scheme}
	return s, nil
}

// Close releases idle connections.
func (s *Store) Close() error {
	s.httpT.CloseIdleConnections()
	return nil
}

// Ping checks that the registry answers its API root with the configured
// credentials (for readiness probes).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	resp, err := s.call(ctx, "", http.MethodGet, s.endpoint("/v2/", ""), nil, nil, http.StatusOK)
	if err != nil {
		return fmt.Errorf("ocistore: registry %s: %w", s.host, err)
	}
	resp.Body.Close()
	return nil
}

// baseTransport is the innermost transport under go-containerregistry's
// authentication. It pins the registry's scheme (go-containerregistry's
// ping would otherwise fall back from HTTPS to HTTP for private
// addresses) and gives every attempt a fresh request body, because the
// bearer transport re-sends the same request after refreshing a token.
type baseTransport struct {
	inner  http.RoundTripper
	host   string
	scheme string
}

func (t *baseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.EqualFold(req.URL.Host, t.host) && req.URL.Scheme != t.scheme {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("ocistore: refusing %s to %s: the registry is configured for %s", req.URL.Scheme, t.host, t.scheme)
	}
	if req.GetBody == nil || req.Body == nil || req.Body == http.NoBody {
		return t.inner.RoundTrip(req)
	}
	body, err := req.GetBody()
	if err != nil {
		req.Body.Close()
		return nil, err
	}
	req.Body.Close()
	r := req.Clone(req.Context())
	r.Body = body
	return t.inner.RoundTrip(r)
}

// full maps a distributor repository name to the registry's.
func (s *Store) full(repo string) (string, error) {
	if !store.ValidRepository(repo) {
		return "", fmt.Errorf("ocistore: invalid repository name %q: %w", repo, store.ErrNotFound)
	}
	if s.prefix != "" {
		repo = s.prefix + "/" + repo
	}
	if len(repo) > 255 {
		return "", fmt.Errorf("ocistore: repository name %q too long with the prefix: %w", repo, store.ErrNotFound)
	}
	return repo, nil
}

// repository is full as a go-containerregistry name.
func (s *Store) repository(full string) (name.Repository, error) {
	var nameOpts []name.Option
	if s.opt.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	return name.NewRepository(s.host+"/"+full, nameOpts...)
}

// transport returns an authenticated transport for repository full ("":
// registry-wide calls such as the catalog), cached per repository so each
// keeps a token of its own scope.
func (s *Store) transport(ctx context.Context, full string) (http.RoundTripper, error) {
	s.mu.Lock()
	t := s.trans[full]
	s.mu.Unlock()
	if t != nil {
		return t, nil
	}
	scope := s.reg.Scope("")
	if full != "" {
		r, err := s.repository(full)
		if err != nil {
			return nil, fmt.Errorf("ocistore: %w", err)
		}
		scope = r.Scope(transport.PushScope)
	}
	// The handshake pings the registry; a concurrent duplicate is harmless.
	t, err := transport.NewWithContext(ctx, s.reg, s.auth, s.base, []string{scope})
	if err != nil {
		return nil, fmt.Errorf("ocistore: authenticating to %s: %w", s.host, err)
	}
	s.mu.Lock()
	if len(s.trans) >= maxTransports {
		clear(s.trans)
	}
	s.trans[full] = t
	s.mu.Unlock()
	return t, nil
}

// remoteOptions make go-containerregistry's remote calls use the cached
// transport for full.
func (s *Store) remoteOptions(ctx context.Context, full string) ([]remote.Option, error) {
	t, err := s.transport(ctx, full)
	if err != nil {
		return nil, err
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(t)}, nil
}

// endpoint is the absolute URL of path (and raw query) on the registry.
func (s *Store) endpoint(path, rawQuery string) string {
	u := url.URL{Scheme: s.scheme, Host: s.host, Path: path, RawQuery: rawQuery}
	return u.String()
}

// body is a request body that can be read more than once.
type body interface {
	Size() int64
	NewReader() io.Reader
}

// call sends one request for repository full and returns the response if
// its status is one of ok; otherwise the registry's error mapped onto the
// store's sentinel errors (the response is then closed).
func (s *Store) call(ctx context.Context, full, method, u string, b body, hdr http.Header, ok ...int) (*http.Response, error) {
	t, err := s.transport(ctx, full)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("ocistore: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if b != nil {
		req.ContentLength = b.Size()
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(b.NewReader()), nil }
		req.Body, _ = req.GetBody()
		if b.Size() == 0 {
			req.Body, req.GetBody = http.NoBody, nil
		}
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("ocistore: %s %s: %w", method, redact(req.URL), err)
	}
	if err := transport.CheckError(resp, ok...); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("ocistore: %s %s: %w", method, redact(req.URL), mapError(err))
	}
	return resp, nil
}

// redact drops the query (upload state tokens) from URLs in errors.
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	return c.String()
}

// rangeInvalid is the distribution spec's code for a chunk or upload
// state that does not start where the upload ends.
const rangeInvalid transport.ErrorCode = "RANGE_INVALID"

// mapError maps a registry error onto the store's sentinel errors, keeping
// the registry's message.
func mapError(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	for _, d := range te.Errors {
		switch d.Code {
		case transport.BlobUnknownErrorCode, transport.BlobUploadUnknownErrorCode,
			transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		case transport.DigestInvalidErrorCode:
			return fmt.Errorf("%w: %w", store.ErrDigestMismatch, err)
		case rangeInvalid:
			return fmt.Errorf("%w: %w", store.ErrInvalidOffset, err)
		case transport.UnsupportedErrorCode:
			return fmt.Errorf("%w: %w", store.ErrUnsupported, err)
		}
	}
	switch te.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %w", store.ErrInvalidOffset, err)
	case http.StatusMethodNotAllowed:
		return fmt.Errorf("%w: %w", store.ErrUnsupported, err)
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: %w", store.ErrTooLarge, err)
	}
	return err
}

// validDigest reports whether d is a well-formed sha256 or sha512 digest.
func validDigest(d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	a := d.Algorithm()
	return a == digest.SHA256 || a == digest.SHA512
}

// sameHost reports whether host names the registry (default ports aside).
func (s *Store) sameHost(host string) bool {
	strip := func(h string) string {
		if hn, port, err := net.SplitHostPort(h); err == nil && ((s.scheme == "https" && port == "443") || (s.scheme == "http" && port == "80")) {
			return hn
		}
		return h
	}
	return strings.EqualFold(strip(host), strip(s.host))
}
