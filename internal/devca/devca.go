// Package devca is a small SPIFFE certificate authority for one trust domain,
// used by the dev proxy (`meshguard run`), the demo and tests. It mints
// X509-SVIDs (mTLS) and JWT-SVIDs with real keys, and hands out the matching
// X.509 and JWT bundles through go-spiffe types. It is not meant to replace
// SPIRE: keys live in memory or in a directory on disk.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files written by Save and read by Load.
const (
	caCertFile = "ca.pem"
	caKeyFile  = "ca.key"
	jwtKeyFile = "jwt.key"
	tdFile     = "trust-domain"
)

// CA issues SVIDs for one trust domain.
type CA struct {
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	jwtKey *ecdsa.PrivateKey
	jwtKID string
	now    func() time.Time
}

// New creates a CA with fresh P-256 keys for the trust domain.
func New(td spiffeid.TrustDomain) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate CA key: %w", err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate JWT key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"meshguard local CA"}, CommonName: td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("devca: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse CA: %w", err)
	}
	return newCA(td, cert, key, jwtKey)
}

func newCA(td spiffeid.TrustDomain, cert *x509.Certificate, key, jwtKey *ecdsa.PrivateKey) (*CA, error) {
	pub, err := x509.MarshalPKIXPublicKey(&jwtKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("devca: marshal JWT key: %w", err)
	}
	sum := sha256.Sum256(pub)
	return &CA{td: td, cert: cert, key: key, jwtKey: jwtKey, jwtKID: hex.EncodeToString(sum[:12]), now: time.Now}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("devca: crypto/rand failed: %v", err))
	}
	return n
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Certificate is the CA certificate (the X.509 trust anchor).
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// X509Bundle is the trust domain's X.509 bundle.
func (c *CA) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert})
}

// JWTBundle is the trust domain's JWT bundle (one ES256 key).
func (c *CA) JWTBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(c.td, map[string]crypto.PublicKey{c.jwtKID: &c.jwtKey.PublicKey})
}

// JWKS is the JWT bundle as a JWK Set document, the form the guard filter and
// policy bundles carry.
func (c *CA) JWKS() ([]byte, error) {
	b, err := c.JWTBundle().Marshal()
	if err != nil {
		return nil, fmt.Errorf("devca: marshal JWT bundle: %w", err)
	}
	return b, nil
}

// X509Options tune an issued X509-SVID.
type X509Options struct {
	// TTL of the certificate; default one hour.
	TTL time.Duration
	// DNSNames are added as DNS SANs (servers reached by host name).
	DNSNames []string
	// CA marks the certificate as a CA that may sign certificates (no
	// X509-SVID leaf is; IssueCertificate only, for verifier tests).
	CA bool
}

// IssueX509SVID mints an X509-SVID for id, usable for both TLS client and server auth.
func (c *CA) IssueX509SVID(id spiffeid.ID, opts X509Options) (*x509svid.SVID, error) {
	if !id.MemberOf(c.td) {
		return nil, fmt.Errorf("devca: %s is not in trust domain %s", id, c.td)
	}
	opts.CA = false
	leaf, key, err := c.issue([]*url.URL{id.URL()}, id.Path(), opts)
	if err != nil {
		return nil, fmt.Errorf("devca: SVID for %s: %w", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// IssueCertificate mints a leaf signed by the CA with exactly the given URI
// SANs, which need not make an X509-SVID (none, two, not a valid SPIFFE ID):
// tests use it to see what a verifier or filter does with such a peer.
func (c *CA) IssueCertificate(uris []string, opts X509Options) (tls.Certificate, error) {
	parsed := make([]*url.URL, len(uris))
	for i, u := range uris {
		p, err := url.Parse(u)
		if err != nil || p.String() != u {
			return tls.Certificate{}, fmt.Errorf("devca: URI SAN %q does not survive encoding unchanged", u)
		}
		parsed[i] = p
	}
	leaf, key, err := c.issue(parsed, "test", opts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("devca: certificate for %q: %w", uris, err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// issue signs a leaf with uris as its URI SANs.
func (c *CA) issue(uris []*url.URL, cn string, opts X509Options) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"SPIFFE"}, CommonName: cn},
		URIs:         uris,
		DNSNames:     opts.DNSNames,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if opts.CA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	return leaf, key, nil
}

// JWTOptions tune an issued JWT-SVID.
type JWTOptions struct {
	// TTL until exp; default five minutes.
	TTL time.Duration
	// Claims are extra private claims (e.g. "swversion" for version policy).
	Claims map[string]any
	// ID sets the jti claim.
	ID string
}

// IssueJWTSVID mints a JWT-SVID (ES256, kid set) for id with the audiences.
func (c *CA) IssueJWTSVID(id spiffeid.ID, audiences []string, opts JWTOptions) (string, error) {
	if !id.MemberOf(c.td) {
		return "", fmt.Errorf("devca: %s is not in trust domain %s", id, c.td)
	}
	if len(audiences) == 0 {
		return "", errors.New("devca: a JWT-SVID needs at least one audience")
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	now := c.now()
	b := jwt.NewBuilder().Subject(id.String()).Audience(audiences).IssuedAt(now).Expiration(now.Add(ttl))
	if opts.ID != "" {
		b = b.JwtID(opts.ID)
	}
	for k, v := range opts.Claims {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("devca: build JWT-SVID: %w", err)
	}
	key, err := jwk.FromRaw(c.jwtKey)
	if err != nil {
		return "", fmt.Errorf("devca: JWT key: %w", err)
	}
	if err := key.Set(jwk.KeyIDKey, c.jwtKID); err != nil {
		return "", fmt.Errorf("devca: set kid: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key))
	if err != nil {
		return "", fmt.Errorf("devca: sign JWT-SVID: %w", err)
	}
	return string(signed), nil
}

// Save writes the CA (certificate, keys, trust domain) to dir with private
// files at mode 0600, so separate processes can share one CA.
func (c *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	caKey, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		return fmt.Errorf("devca: marshal CA key: %w", err)
	}
	jwtKey, err := x509.MarshalECPrivateKey(c.jwtKey)
	if err != nil {
		return fmt.Errorf("devca: marshal JWT key: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{caCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}), 0o644},
		{caKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKey}), 0o600},
		{jwtKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: jwtKey}), 0o600},
		{tdFile, []byte(c.td.Name() + "\n"), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("devca: write %s: %w", f.name, err)
		}
	}
	return nil
}

// Load reads a CA written by Save.
func Load(dir string) (*CA, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("devca: %w", err)
		}
		return b, nil
	}
	tdRaw, err := read(tdFile)
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(string(trimNL(tdRaw)))
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", tdFile, err)
	}
	certPEM, err := read(caCertFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("devca: %s: no certificate", caCertFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", caCertFile, err)
	}
	key, err := readECKey(read, caKeyFile)
	if err != nil {
		return nil, err
	}
	jwtKey, err := readECKey(read, jwtKeyFile)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("devca: %s does not match %s", caKeyFile, caCertFile)
	}
	return newCA(td, cert, key, jwtKey)
}

func readECKey(read func(string) ([]byte, error), name string) (*ecdsa.PrivateKey, error) {
	raw, err := read(name)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("devca: %s: no EC private key", name)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: %s: %w", name, err)
	}
	return k, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// WriteSVID writes an SVID as PEM files (certificate chain and PKCS#8 key).
func WriteSVID(svid *x509svid.SVID, certFile, keyFile string) error {
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("devca: marshal SVID: %w", err)
	}
	if err := os.WriteFile(certFile, certs, 0o644); err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return fmt.Errorf("devca: %w", err)
	}
	return nil
}
