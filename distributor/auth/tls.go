package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshguard/meshguard/internal/svidtls"
)

// SVIDConfig says where an X509-SVID and the trust bundle come from: either
// PEM files or a SPIFFE Workload API socket.
type SVIDConfig struct {
	// CertFile and KeyFile hold the X509-SVID (chain PEM, PKCS#8 key PEM).
	CertFile string `yaml:"cert" json:"cert"`
	KeyFile  string `yaml:"key" json:"key"`
	// BundleFile holds the trust domain's CA certificates (PEM).
	BundleFile string `yaml:"bundle" json:"bundle"`
	// TrustDomain of BundleFile; defaults to the SVID's trust domain.
	TrustDomain string `yaml:"trust_domain" json:"trust_domain"`
	// WorkloadSocket is a Workload API address such as unix:///run/spire/agent.sock.
	WorkloadSocket string `yaml:"workload_socket" json:"workload_socket"`
}

// Enabled reports whether any SVID source is configured.
func (c SVIDConfig) Enabled() bool { return c.CertFile != "" || c.WorkloadSocket != "" }

// Source provides the SVID and trust bundles for TLS.
type Source struct {
	SVID    x509svid.Source
	Bundles x509bundle.Source
	// ID is the SPIFFE ID of the SVID at start.
	ID     spiffeid.ID
	closer func() error
}

// Close releases a Workload API connection.
func (s *Source) Close() error {
	if s.closer != nil {
		return s.closer()
	}
	return nil
}

// NewSource opens the configured SVID source. With a Workload API socket it
// waits (bounded by ctx) for the first SVID; the source then follows
// rotations pushed by the agent.
func NewSource(ctx context.Context, c SVIDConfig) (*Source, error) {
	switch {
	case c.WorkloadSocket != "" && c.CertFile != "":
		return nil, errors.New("auth: configure either SVID files or a Workload API socket, not both")
	case c.WorkloadSocket != "":
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(c.WorkloadSocket)))
		if err != nil {
			return nil, fmt.Errorf("auth: workload API %s: %w", c.WorkloadSocket, err)
		}
		svid, err := src.GetX509SVID()
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("auth: workload API %s: %w", c.WorkloadSocket, err)
		}
		return &Source{SVID: src, Bundles: src, ID: svid.ID, closer: src.Close}, nil
	case c.CertFile != "":
		if c.KeyFile == "" || c.BundleFile == "" {
			return nil, errors.New("auth: SVID files need cert, key and bundle")
		}
		fs, err := newFileSource(c)
		if err != nil {
			return nil, err
		}
		return &Source{SVID: fs, Bundles: fs, ID: fs.svid.ID}, nil
	}
	return nil, errors.New("auth: no SVID source configured")
}

// ServerTLS is the server side: the SVID as server certificate; client
// certificates are verified as X509-SVIDs against the trust bundle.
// requireClient rejects handshakes without one; otherwise a client may
// instead authenticate with a bearer token.
func (s *Source) ServerTLS(requireClient bool) *tls.Config {
	return svidtls.Server(s.SVID, svidtls.X509SVID(s.Bundles), requireClient)
}

// ClientTLS is the client side: present the SVID and accept a server whose
// SVID matches authorizer.
func (s *Source) ClientTLS(authorizer tlsconfig.Authorizer) *tls.Config {
	return tlsconfig.MTLSClientConfig(s.SVID, s.Bundles, authorizer)
}

// ClientOptions are the CLI's TLS flags.
type ClientOptions struct {
	CA, Cert, Key  string // PEM files
	WorkloadSocket string
	// ServerID is the server's expected SPIFFE ID; without it any member of
	// the trust domain is accepted.
	ServerID string
	// TrustDomain of CA when no client SVID names it.
	TrustDomain string
	// Insecure skips server verification (tests and demos only).
	Insecure bool
}

// ClientTLSConfig builds a client TLS config from CLI options: SPIFFE
// verification of the server when a trust domain is known (from the server
// ID, the trust domain or the client SVID), otherwise Web PKI against CA.
func ClientTLSConfig(ctx context.Context, o ClientOptions) (*tls.Config, func() error, error) {
	noop := func() error { return nil }
	var authorizer tlsconfig.Authorizer
	var td spiffeid.TrustDomain
	if o.ServerID != "" {
		id, err := spiffeid.FromString(o.ServerID)
		if err != nil {
			return nil, noop, fmt.Errorf("server ID: %w", err)
		}
		authorizer, td = tlsconfig.AuthorizeID(id), id.TrustDomain()
	}
	if o.TrustDomain != "" {
		t, err := spiffeid.TrustDomainFromString(o.TrustDomain)
		if err != nil {
			return nil, noop, fmt.Errorf("trust domain: %w", err)
		}
		td = t
	}
	if o.WorkloadSocket != "" {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		src, err := NewSource(ctx, SVIDConfig{WorkloadSocket: o.WorkloadSocket})
		if err != nil {
			return nil, noop, err
		}
		if authorizer == nil {
			if td.IsZero() {
				td = src.ID.TrustDomain()
			}
			authorizer = tlsconfig.AuthorizeMemberOf(td)
		}
		return src.ClientTLS(authorizer), src.Close, nil
	}
	var svid *x509svid.SVID
	if o.Cert != "" || o.Key != "" {
		var err error
		if svid, err = x509svid.Load(o.Cert, o.Key); err != nil {
			// Not an SVID: a plain client certificate.
			cert, cerr := tls.LoadX509KeyPair(o.Cert, o.Key)
			if cerr != nil {
				return nil, noop, fmt.Errorf("client certificate: %w", cerr)
			}
			cfg, err := webPKI(o)
			if err != nil {
				return nil, noop, err
			}
			cfg.Certificates = []tls.Certificate{cert}
			return cfg, noop, nil
		}
		if td.IsZero() {
			td = svid.ID.TrustDomain()
		}
	}
	if td.IsZero() || o.CA == "" || o.Insecure {
		cfg, err := webPKI(o)
		return cfg, noop, err
	}
	b, err := x509bundle.Load(td, o.CA)
	if err != nil {
		return nil, noop, fmt.Errorf("CA bundle: %w", err)
	}
	if authorizer == nil {
		authorizer = tlsconfig.AuthorizeMemberOf(td)
	}
	if svid != nil {
		return tlsconfig.MTLSClientConfig(svid, b, authorizer), noop, nil
	}
	return tlsconfig.TLSClientConfig(b, authorizer), noop, nil
}

func webPKI(o ClientOptions) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.Insecure} //nolint:gosec // explicit flag
	if o.CA != "" {
		pem, err := os.ReadFile(o.CA)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA %s: no certificates", o.CA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
