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
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
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
	// Limits are request size and rate limits.
	Limits LimitsConfig `yaml:"limits"`
	// Storage selects the module/OCI storage backend.
	Storage StorageConfig `yaml:"storage"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
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
	// AutoChannels lets a publish create an unconfigured channel.
	AutoChannels bool `yaml:"auto_channels"`
	// MaxWait caps ?wait= long polls.
	MaxWait time.Duration `yaml:"max_wait"`
	// Channels are named channels with an optional required scope.
	Channels map[string]ChannelConfig `yaml:"channels"`
}

// ChannelConfig configures one channel.
type ChannelConfig struct {
	Scope  string `yaml:"scope"`
	Retain int    `yaml:"retain"`
}

// DecisionsConfig configures the decision log.
type DecisionsConfig struct {
	SegmentBytes ByteSize `yaml:"segment_bytes"`
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
	ModuleBytes    ByteSize `yaml:"module_bytes"`
	// IngestRate is decision records per second per identity (0: unlimited).
	IngestRate float64 `yaml:"ingest_rate"`
	// IngestBurst is the bucket size in records.
	IngestBurst int `yaml:"ingest_burst"`
}

// StorageConfig selects where modules and OCI blobs live. "filesystem"
// keeps them under the data directory; "oci" proxies to an external
// registry (see distributor/store).
type StorageConfig struct {
	Backend string         `yaml:"backend"`
	OCI     map[string]any `yaml:"oci"`
	// AllowDelete enables DELETE of manifests, tags and blobs on /v2/.
	AllowDelete bool `yaml:"allow_delete"`
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
	for name := range c.Bundles.Channels {
		if !bundles.ValidChannel(name) {
			return fmt.Errorf("config: channel %q: name must match [a-z0-9][a-z0-9._-]{0,62}", name)
		}
	}
	if c.Storage.Backend != "" && c.Storage.Backend != "filesystem" && c.Storage.Backend != "oci" {
		return fmt.Errorf("config: storage.backend %q: want filesystem or oci", c.Storage.Backend)
	}
	if c.Limits.IngestRate > 0 && c.Limits.IngestBurst < 1 {
		return errors.New("config: limits.ingest_burst must be at least 1 with an ingest_rate")
	}
	return nil
}
