// Package server wires the distributor: the policy bundle registry, the
// decision log, the module and OCI endpoints, access control, limits,
// metrics, health and graceful shutdown, behind one HTTP(S) listener.
package server

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/policies/bundle"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/distributor/store/ocistore"
)

// DefaultConfigYAML is the embedded default configuration. With only a data
// directory and --insecure-http on a loopback address it runs a demo
// distributor where loopback clients may do everything.
//
//go:embed default.yaml
var DefaultConfigYAML []byte

// Config is the distributor configuration (YAML; see default.yaml).
type Config struct {
	// Listen is the listen address (host:port).
	Listen string `yaml:"listen"`
	// Data is the data directory (bundles/, decisions/, modules and OCI storage).
	Data string `yaml:"data"`
	// InsecureHTTP serves plain HTTP; only on loopback unless ForceInsecure.
	InsecureHTTP  bool `yaml:"insecure_http"`
	ForceInsecure bool `yaml:"force_insecure"`
	// TLS is the server's SVID source and client certificate policy.
	TLS TLSConfig `yaml:"tls"`
	// Keys is a JWK Set file with the bundle verification (public) keys.
	Keys string `yaml:"keys"`
	// Bundles configures the registry.
	Bundles BundlesConfig `yaml:"bundles"`
	// Decisions configures the decision log.
	Decisions DecisionsConfig `yaml:"decisions"`
	// Tokens are the bearer tokens: a file and/or an environment variable,
	// both holding "name:secret" entries.
	Tokens TokensConfig `yaml:"tokens"`
	// Allow maps each action (read, publish, push, ingest, audit, metrics) to
	// its allowlist: anonymous, loopback, spiffe://td/id, spiffe://td/path/*,
	// token:NAME.
	Allow map[auth.Action][]string `yaml:"allow"`
	// XFCC takes callers' SPIFFE IDs from the x-forwarded-client-cert header
	// of the sidecar in front of the distributor (off by default).
	XFCC auth.XFCCConfig `yaml:"xfcc"`
	// Limits are request size and rate limits.
	Limits LimitsConfig `yaml:"limits"`
	// Storage selects the module/OCI storage backend.
	Storage StorageConfig `yaml:"storage"`
	// State selects where bundle channels live (filesystem under Data, or
	// PostgreSQL shared by replicas).
	State StateConfig `yaml:"state"`
	// Registry configures the workload and device registry (/v1/registry/).
	Registry RegistryConfig `yaml:"registry"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// StateConfig is the state backend: "filesystem" (default, DATA/bundles)
// or "postgres" (one database every replica shares).
type StateConfig struct {
	Backend  string         `yaml:"backend"`
	Postgres PostgresConfig `yaml:"postgres"`
}

// PostgresConfig is the database of state backend postgres.
type PostgresConfig struct {
	// URL is a libpq URL or key=value string; keep the password out of it
	// with PasswordFile.
	URL string `yaml:"url"`
	// PasswordFile holds the password (a mounted Secret).
	PasswordFile string `yaml:"password_file"`
	// SSLMode is disable, allow, prefer, require, verify-ca or verify-full
	// (overrides the URL's).
	SSLMode string `yaml:"sslmode"`
	// CAFile verifies the server's certificate (verify-ca, verify-full).
	CAFile string `yaml:"ca_file"`
	// MaxConns bounds the connection pool (0: 10).
	MaxConns int `yaml:"max_conns"`
}

func (c StateConfig) validate() error {
	switch c.Backend {
	case "", "filesystem":
		if c.Postgres != (PostgresConfig{}) {
			return errors.New("config: state.postgres is set but state.backend is not postgres")
		}
	case "postgres":
		p := c.Postgres
		if strings.TrimSpace(p.URL) == "" {
			return errors.New("config: state.postgres.url is required with state.backend postgres (postgres://user@host:5432/db)")
		}
		switch p.SSLMode {
		case "", "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
		default:
			return fmt.Errorf("config: state.postgres.sslmode %q: want disable, allow, prefer, require, verify-ca or verify-full", p.SSLMode)
		}
		if p.CAFile != "" && p.SSLMode == "disable" {
			return errors.New("config: state.postgres.ca_file is for TLS, but state.postgres.sslmode is disable")
		}
		if p.MaxConns < 0 || p.MaxConns > 1000 {
			return fmt.Errorf("config: state.postgres.max_conns %d: want 0 (default 10) to 1000", p.MaxConns)
		}
	default:
		return fmt.Errorf("config: state.backend %q: want filesystem or postgres", c.Backend)
	}
	return nil
}

// RegistryConfig configures the registry of workloads and devices.
type RegistryConfig struct {
	// Organisations own registry entries; each caller of the registry API
	// acts for the one organisation whose members include it.
	Organisations []registry.Organisation `yaml:"organisations"`
	// MaxEntryBytes bounds one registry request body.
	MaxEntryBytes ByteSize `yaml:"max_entry_bytes"`
	// Attestation issues device tokens to registered devices.
	Attestation AttestationConfig `yaml:"attestation"`
	// Bundles publishes the registry's entries as registry bundles.
	Bundles RegistryBundlesConfig `yaml:"bundles"`
	// DeviceClasses give each device class the paths its readers and
	// writers reach; a class without one gets no access rules.
	DeviceClasses map[string]registry.DeviceAccess `yaml:"device_classes"`
}

// RegistryBundlesConfig configures registry bundles: every registry
// change publishes a new revision to <channel>.registry of every
// configured channel, signed by the registry key (policies/README.md,
// "Registry-derived content").
type RegistryBundlesConfig struct {
	// KeyFile is the registry's private signing JWK; "" is
	// <data>/registry-bundle.key, generated at first start (public JWK Set
	// in <file>.pub: the guard's policy.registryKeys).
	KeyFile string `yaml:"key_file"`
	// Lifetime of a registry bundle (0: 7 days); it is published again
	// when half of it has passed.
	Lifetime time.Duration `yaml:"lifetime"`
	// Disabled publishes no registry bundles (none are published either
	// while no organisation is configured).
	Disabled bool `yaml:"disabled"`
}

// AttestationConfig configures device attestation (/v1/registry/attest).
type AttestationConfig struct {
	// KeyFile is the ES256 private JWK signing device tokens; "" is
	// <data>/attestation.key, generated at first start (public JWK Set in
	// <file>.pub and at /v1/registry/attest/jwks.json).
	KeyFile string `yaml:"key_file"`
	// Issuer and Audiences of the tokens (the guard's
	// identity.device.issuers and audiences).
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	// TokenLifetime is how long a device token is valid, NonceLifetime a nonce.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
	NonceLifetime time.Duration `yaml:"nonce_lifetime"`
	// Rate bounds nonce and attestation requests per caller per second
	// (0: unlimited), Burst its bucket: every attempt is a decision log
	// record, so a flood of bad attempts must not grow the log freely.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// TLSConfig is the server TLS configuration.
type TLSConfig struct {
	auth.SVIDConfig `yaml:",inline"`
	// RequireClientCert rejects TLS clients without an X509-SVID (then
	// bearer tokens alone are not enough).
	RequireClientCert bool `yaml:"require_client_cert"`
}

// BundlesConfig configures the bundle registry.
type BundlesConfig struct {
	// Retain is how many revisions each channel keeps (latest always kept).
	Retain int `yaml:"retain"`
	// AutoChannels lets a publish create an unconfigured channel (off by
	// default: a channel is an environment and gets configured).
	AutoChannels bool `yaml:"auto_channels"`
	// MaxWait caps ?wait= long polls.
	MaxWait time.Duration `yaml:"max_wait"`
	// Channels are named channels with an optional required scope.
	Channels map[string]ChannelConfig `yaml:"channels"`
	// ExpiryWarning is how long before a channel's latest bundle expires
	// /readyz and the log start warning (0: 7 days).
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
	// Pollers bounds the table of which proxy last polled which revision
	// (0: 4096 entries); the least recently seen are dropped first.
	Pollers int `yaml:"pollers"`
}

// ChannelConfig configures one channel.
type ChannelConfig struct {
	// Scope every bundle published to the channel must carry (default:
	// the channel's name), so a bundle signed for one environment cannot
	// be replayed into another.
	Scope  string `yaml:"scope"`
	Retain int    `yaml:"retain"`
	// Allow gives the channel its own read and publish allowlists, which
	// replace the global ones for this channel.
	Allow map[auth.Action][]string `yaml:"allow"`
}

// RepositoryConfig gives a module repository (or "prefix/*") its own read
// and push allowlists, which replace the global ones there.
type RepositoryConfig struct {
	Allow map[auth.Action][]string `yaml:"allow"`
}

// DecisionsConfig configures the decision log.
type DecisionsConfig struct {
	SegmentBytes ByteSize `yaml:"segment_bytes"`
	// MaxRecordBytes bounds one decision record's JSON.
	MaxRecordBytes ByteSize `yaml:"max_record_bytes"`
	// Retention drops whole segments whose records all arrived longer ago
	// (0: keep everything); RetainBytes drops the oldest segments beyond
	// that total size (0: no size bound). The current segment always stays.
	Retention   time.Duration `yaml:"retention"`
	RetainBytes ByteSize      `yaml:"retain_bytes"`
	// LogName is the checkpoint origin and the signing key's name.
	LogName string `yaml:"log_name"`
	// CheckpointKey is the file holding the log's own Ed25519 signed-note
	// key (never a bundle key); "" is <data>/checkpoint.key. A missing file
	// is generated at start, with the verifier key in <file>.pub.
	CheckpointKey string `yaml:"checkpoint_key"`
	// CheckpointInterval is how often a checkpoint is signed when the log
	// grew (also on POST /v1/decisions/checkpoint and at shutdown).
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// ProxyBindings, when set, bind uploaders to the proxies they post
	// for: every record of an upload must name (in its proxy field) a
	// proxy its authenticated uploader may claim, or the upload is
	// refused (403); anonymous uploads are refused. Empty: any uploader
	// the ingest allowlist admits may post for any proxy.
	ProxyBindings []auth.ProxyBinding `yaml:"proxy_bindings"`
}

// TokensConfig names where bearer tokens come from.
type TokensConfig struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// LimitsConfig holds per-route body limits and the ingest rate limit.
type LimitsConfig struct {
	BundleBytes    ByteSize `yaml:"bundle_bytes"`
	DecisionsBytes ByteSize `yaml:"decisions_bytes"`
	// ModuleBytes bounds a module blob and what a module layer inflates to.
	ModuleBytes ByteSize `yaml:"module_bytes"`
	// ModuleCacheBytes bounds unpacked modules held in memory for
	// /modules/ (larger ones are served from files).
	ModuleCacheBytes ByteSize `yaml:"module_cache_bytes"`
	// IngestRate is decision records per second per identity (0: unlimited).
	IngestRate float64 `yaml:"ingest_rate"`
	// IngestBurst is the bucket size in records.
	IngestBurst int `yaml:"ingest_burst"`
	// IngestBytesRate is decision upload bytes per second per identity (0:
	// unlimited), IngestBytesBurst its bucket (at least decisions_bytes).
	IngestBytesRate  ByteSize `yaml:"ingest_bytes_rate"`
	IngestBytesBurst ByteSize `yaml:"ingest_bytes_burst"`
	// MinFreeBytes is the data directory's free-space watermark: below it
	// writes (ingest, publish, pushes) answer 507.
	MinFreeBytes ByteSize `yaml:"min_free_bytes"`
	// BodyTimeout is how long a request body may take to start; after it
	// the body must keep BodyMinRate (bytes per second) on average, or the
	// request ends with 408 and its connection is closed (0: no limit).
	BodyTimeout time.Duration `yaml:"body_timeout"`
	BodyMinRate ByteSize      `yaml:"body_min_rate"`
	// MaxConnections caps open client connections; past it new ones are
	// closed at once (0: three quarters of the file descriptor limit).
	MaxConnections int `yaml:"max_connections"`
	// Concurrency are per-class budgets of requests in progress.
	Concurrency ConcurrencyConfig `yaml:"concurrency"`
}

// ConcurrencyConfig bounds the requests of each class in progress at once
// (0: unbounded); a request beyond its class's budget waits up to
// QueueTimeout, then answers 503 with Retry-After. Pulls have their own
// budget so that downloads never starve ingest and long-poll wake-ups.
type ConcurrencyConfig struct {
	Pull         int           `yaml:"pull"`
	Push         int           `yaml:"push"`
	Ingest       int           `yaml:"ingest"`
	Poll         int           `yaml:"poll"`
	QueueTimeout time.Duration `yaml:"queue_timeout"`
}

// StorageConfig selects where modules and OCI blobs live. "filesystem"
// keeps them under the data directory; "oci" keeps them in an external
// registry that several distributor replicas can share (see
// distributor/store/ocistore).
type StorageConfig struct {
	Backend string `yaml:"backend"`
	// OCI is the external registry of backend oci.
	OCI OCIStorageConfig `yaml:"oci"`
	// AllowDelete enables DELETE of manifests, tags and blobs on /v2/.
	AllowDelete bool `yaml:"allow_delete"`
	// Repositories are per-repository allowlists (name or "prefix/*").
	Repositories map[string]RepositoryConfig `yaml:"repositories"`
	// MaxUploads bounds the open chunked upload sessions (filesystem).
	MaxUploads int `yaml:"max_uploads"`
	// UploadTTL purges upload sessions idle for longer (filesystem).
	UploadTTL time.Duration `yaml:"upload_ttl"`
	// ScrubInterval re-hashes every stored blob this often, quarantining
	// corrupted ones (filesystem; 0: never, beyond the check on first read).
	ScrubInterval time.Duration `yaml:"scrub_interval"`
}

// OCIStorageConfig is the external registry of storage backend oci.
type OCIStorageConfig struct {
	// Registry is host[:port], optionally followed by the prefix every
	// repository is stored under: "harbor.example.com/meshguard".
	Registry string `yaml:"registry"`
	// Prefix is that prefix given separately.
	Prefix string `yaml:"prefix"`
	// Insecure talks plain HTTP to the registry (no TLS at all; test
	// registries only). It never skips certificate checks: use CAFile.
	Insecure bool `yaml:"insecure"`
	// CAFile adds PEM CA certificates for the registry's TLS.
	CAFile string `yaml:"ca_file"`
	// Username with Password or PasswordFile (re-read on use); TokenFile
	// holds a bearer token instead. With none, credentials come from the
	// Docker config (DOCKER_CONFIG) or the registry is used anonymously.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	TokenFile    string `yaml:"token_file"`
	// Timeout bounds each registry request other than blob transfers
	// (0: 60s).
	Timeout time.Duration `yaml:"timeout"`
}

// credentials are the registry credentials.
func (c OCIStorageConfig) credentials() ocistore.Credentials {
	return ocistore.Credentials{Username: c.Username, Password: c.Password, PasswordFile: c.PasswordFile, TokenFile: c.TokenFile}
}

// options checks the section and turns it into ocistore options (without
// credentials, which read files).
func (c OCIStorageConfig) options() (ocistore.Options, error) {
	reg := strings.TrimSpace(c.Registry)
	if reg == "" {
		return ocistore.Options{}, errors.New("config: storage.oci.registry is required with storage.backend oci (host[:port][/prefix])")
	}
	if strings.Contains(reg, "://") {
		return ocistore.Options{}, fmt.Errorf("config: storage.oci.registry %q: want host[:port][/prefix] without a scheme (plain HTTP is storage.oci.insecure)", reg)
	}
	host, prefix, _ := strings.Cut(reg, "/")
	if prefix != "" && c.Prefix != "" {
		return ocistore.Options{}, fmt.Errorf("config: storage.oci.registry %q has a path and storage.oci.prefix is %q: give the prefix once", reg, c.Prefix)
	}
	if prefix == "" {
		prefix = c.Prefix
	}
	if prefix = strings.Trim(prefix, "/"); prefix != "" && !store.ValidRepository(prefix) {
		return ocistore.Options{}, fmt.Errorf("config: storage.oci.prefix %q: want a repository path (lower-case letters, digits, . _ - and /)", prefix)
	}
	if c.Insecure && c.CAFile != "" {
		return ocistore.Options{}, errors.New("config: storage.oci.ca_file is for TLS, but storage.oci.insecure talks plain HTTP")
	}
	if c.Timeout < 0 {
		return ocistore.Options{}, errors.New("config: storage.oci.timeout must not be negative")
	}
	if err := c.credentials().Validate(); err != nil {
		return ocistore.Options{}, fmt.Errorf("config: storage.oci: %w", err)
	}
	return ocistore.Options{Registry: host, Prefix: prefix, PlainHTTP: c.Insecure, CAFile: c.CAFile, Timeout: c.Timeout}, nil
}

// ByteSize is a size in bytes; YAML accepts integers or strings such as
// "16MiB", "512KiB", "1GiB", "100MB".
type ByteSize int64

// UnmarshalYAML parses a byte size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// ParseByteSize parses "123", "16MiB", "10MB", "4KiB".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suf string
		mul int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("bad byte size %q", s)
	}
	return ByteSize(n * mul), nil
}

// DefaultConfig is the embedded default configuration.
func DefaultConfig() Config {
	var c Config
	if err := decodeStrict(DefaultConfigYAML, &c); err != nil {
		panic(fmt.Sprintf("server: embedded default config: %v", err))
	}
	return c
}

// LoadConfig reads a YAML file over the defaults. Unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	// An allow section in the file replaces the default one entirely.
	var probe struct {
		Allow map[string]any `yaml:"allow"`
	}
	_ = yaml.Unmarshal(b, &probe)
	if probe.Allow != nil {
		c.Allow = nil
	}
	if err := decodeStrict(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func decodeStrict(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Data == "" {
		return errors.New("config: data directory is required (--data)")
	}
	if c.Listen == "" {
		return errors.New("config: listen address is required (--listen)")
	}
	for name, ch := range c.Bundles.Channels {
		if !bundles.ValidChannel(name) {
			return fmt.Errorf("config: channel %q: name must match [a-z0-9][a-z0-9._-]{0,62}", name)
		}
		for a := range ch.Allow {
			if a != auth.ActionRead && a != auth.ActionPublish {
				return fmt.Errorf("config: bundles.channels.%s.allow: %q is not a channel action (read, publish)", name, a)
			}
		}
	}
	for name, rc := range c.Storage.Repositories {
		if !store.ValidRepository(strings.TrimSuffix(name, "/*")) {
			return fmt.Errorf("config: storage.repositories: %q is not a repository name or prefix/*", name)
		}
		for a := range rc.Allow {
			if a != auth.ActionRead && a != auth.ActionPush {
				return fmt.Errorf("config: storage.repositories.%s.allow: %q is not a repository action (read, push)", name, a)
			}
		}
	}
	switch c.Storage.Backend {
	case "", "filesystem":
		if c.Storage.OCI != (OCIStorageConfig{}) {
			return errors.New("config: storage.oci is set but storage.backend is not oci")
		}
	case "oci":
		if _, err := c.Storage.OCI.options(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("config: storage.backend %q: want filesystem or oci", c.Storage.Backend)
	}
	if err := c.State.validate(); err != nil {
		return err
	}
	for class, a := range c.Registry.DeviceClasses {
		if err := a.Validate(class); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	if c.Registry.Bundles.Lifetime < 0 {
		return fmt.Errorf("config: registry.bundles.lifetime %s is negative", c.Registry.Bundles.Lifetime)
	}
	for name, ch := range c.Bundles.Channels {
		if strings.HasSuffix(name, bundle.RegistrySuffix) || strings.HasSuffix(ch.Scope, bundle.RegistrySuffix) {
			return fmt.Errorf("config: bundles.channels.%s: names and scopes ending %s are the registry's (its bundles go to <channel>%s)", name, bundle.RegistrySuffix, bundle.RegistrySuffix)
		}
	}
	if c.Registry.MaxEntryBytes < 0 || c.Registry.MaxEntryBytes > 16<<20 {
		return fmt.Errorf("config: registry.max_entry_bytes %d: want 0 (default 64KiB) to 16MiB", c.Registry.MaxEntryBytes)
	}
	if a := c.Registry.Attestation; a.TokenLifetime <= 0 || a.TokenLifetime > 24*time.Hour || a.NonceLifetime <= 0 || a.NonceLifetime > time.Hour || a.Issuer == "" || len(a.Audiences) == 0 {
		return errors.New("config: registry.attestation: issuer, audiences, token_lifetime (up to 24h) and nonce_lifetime (up to 1h) are required")
	}
	if a := c.Registry.Attestation; a.Rate < 0 || (a.Rate > 0 && a.Burst < 1) {
		return errors.New("config: registry.attestation: rate must not be negative, and burst at least 1 with a rate")
	}
	if c.Bundles.Pollers < 0 || c.Bundles.Pollers > 1<<20 {
		return fmt.Errorf("config: bundles.pollers %d: want 0 (default 4096) to %d", c.Bundles.Pollers, 1<<20)
	}
	if c.Limits.IngestRate > 0 && c.Limits.IngestBurst < 1 {
		return errors.New("config: limits.ingest_burst must be at least 1 with an ingest_rate")
	}
	if n := c.Decisions.LogName; n == "" || strings.ContainsAny(n, "+ \t\r\n") || !utf8.ValidString(n) {
		return fmt.Errorf("config: decisions.log_name %q: want a non-empty name without '+' or spaces (it is the checkpoint origin and key name)", n)
	}
	if c.Decisions.CheckpointInterval < 0 {
		return fmt.Errorf("config: decisions.checkpoint_interval %s is negative", c.Decisions.CheckpointInterval)
	}
	if c.Limits.IngestBytesRate > 0 && c.Limits.IngestBytesBurst < c.Limits.DecisionsBytes {
		return fmt.Errorf("config: limits.ingest_bytes_burst (%d) must be at least limits.decisions_bytes (%d), or no full upload could pass", c.Limits.IngestBytesBurst, c.Limits.DecisionsBytes)
	}
	return nil
}
