package envoy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/internal/enumflag"
)

// ReadFunc reads a file a flag names (what says which flag, for errors).
// The CLI's reads "-" as stdin.
type ReadFunc func(what, path string) ([]byte, error)

// GuardFlags are the guard-configuration flags of every renderer
// (meshguard render istio|kuma|envoy); Input turns them into a GuardInput.
type GuardFlags struct {
	configFile, verifyKeys, inlineBundle, tokenFile string
	channel, mode, scope, paths, direction          string
	pollInterval, expiryGrace                       time.Duration
	peerCert, istioPeer, audit, logAllows           bool
	jwtAudiences, jwtTrustDomains                   []string
	forwarders, keepCredentials                     []string
	endUser                                         bool
	jwtAuthn                                        []string
	pseudonymKeyFile                                string
}

// AddFlags registers the guard flags on fs.
func (g *GuardFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&g.configFile, "config", "", "guard configuration file (JSON or YAML, filters/guard/config); replaces the guard flags below")
	fs.StringVar(&g.verifyKeys, "verify-keys", "", "public JWK Set (verify.jwk) that bundles must be signed with; private keys are refused")
	fs.StringVar(&g.inlineBundle, "inline-bundle", "", "signed policy bundle file to embed in the configuration")
	fs.StringVar(&g.channel, "channel", "", "bundle channel to poll on the distributor")
	fs.DurationVar(&g.pollInterval, "poll-interval", 0, "bundle poll interval (default 10s)")
	fs.StringVar(&g.tokenFile, "token-file", "", "file holding the bearer token for bundle polls and audit uploads")
	enumflag.Var(fs, &g.mode, "mode", "", "", []string{config.ModeEnforce, config.ModeDryRun}, "enforce (default) or dry-run")
	fs.StringVar(&g.scope, "scope", "", "scope the bundle manifest must list")
	fs.DurationVar(&g.expiryGrace, "expiry-grace", 0, "keep enforcing an expired bundle this long (max 168h) instead of failing closed at expiry")
	fs.BoolVar(&g.peerCert, "peer-certificate", true, "identify callers by their mTLS peer SPIFFE ID")
	fs.BoolVar(&g.istioPeer, "istio-peer-metadata", false, "read Istio's downstream peer metadata")
	fs.StringSliceVar(&g.jwtAudiences, "jwt-audience", nil, "accept JWT-SVIDs for this audience (repeatable); default: the guarded workload's own SPIFFE ID, one audience per service")
	fs.StringSliceVar(&g.jwtTrustDomains, "jwt-trust-domain", nil, "accept JWT-SVIDs from trust domain NAME=JWKS_FILE (its JWT bundle) (repeatable)")
	fs.StringSliceVar(&g.forwarders, "trusted-forwarder", nil, "SPIFFE ID of a peer (e.g. the ingress gateway) that may relay a caller's JWT-SVID (repeatable)")
	fs.StringSliceVar(&g.keepCredentials, "keep-credential-header", nil, "verified credential header to forward upstream (repeatable); by default the guard removes them")
	enumflag.Var(fs, &g.direction, "direction", "", "", []string{config.DirectionInbound, config.DirectionOutbound},
		"where the guard runs: inbound (default, decides on callers) or outbound (the caller's side: decides on the upstream's and target device's versions; no caller identity)")
	enumflag.Var(fs, &g.paths, "paths", "", "", []string{config.PathsRefuse, config.PathsNormalize, config.PathsMergeSlashes}, "non-canonical request paths: refuse (default, 400), normalize (RFC 3986) or merge-slashes (normalize and merge //)")
	fs.BoolVar(&g.endUser, "end-user", false, "verify end-user access tokens with the bundle's Issuers (gateways)")
	fs.StringSliceVar(&g.jwtAuthn, "end-user-jwt-authn", nil, "take end-user claims that Istio's RequestAuthentication verified, from jwt_authn's metadata under this payload key (the issuer URL for Istio; repeatable; implies --end-user)")
	fs.StringVar(&g.pseudonymKeyFile, "end-user-pseudonym-key-file", "", "file holding a base64 key (>= 32 bytes): audit records name end users by HMAC-SHA256 pseudonym (implies --end-user)")
	fs.BoolVar(&g.audit, "audit", false, "post decision records to the distributor")
	fs.BoolVar(&g.logAllows, "log-allows", false, "record allows too, not only denies")
}

// Input reads the files the flags name.
func (g *GuardFlags) Input(read ReadFunc) (GuardInput, error) {
	var in GuardInput
	var err error
	file := func(what, path string) []byte {
		if path == "" || err != nil {
			return nil
		}
		var b []byte
		b, err = read(what, path)
		return b
	}
	in.File = file("--config", g.configFile)
	in.VerifyKeys = file("--verify-keys", g.verifyKeys)
	in.InlineBundle = file("--inline-bundle", g.inlineBundle)
	in.Token = strings.TrimSpace(string(file("--token-file", g.tokenFile)))
	in.Channel, in.Mode, in.Scope, in.PollInterval, in.ExpiryGrace = g.channel, g.mode, g.scope, g.pollInterval, g.expiryGrace
	in.IstioPeerMetadata, in.AuditSink, in.LogAllows = g.istioPeer, g.audit, g.logAllows
	in.JWTAudiences = g.jwtAudiences
	in.EndUser = g.endUser || len(g.jwtAuthn) > 0 || g.pseudonymKeyFile != ""
	in.JWTAuthn = g.jwtAuthn
	in.PseudonymKey = strings.TrimSpace(string(file("--end-user-pseudonym-key-file", g.pseudonymKeyFile)))
	in.TrustedForwarders, in.KeepCredentialHeaders, in.Paths = g.forwarders, g.keepCredentials, g.paths
	for _, td := range g.jwtTrustDomains {
		if in.JWTTrustDomains == nil {
			in.JWTTrustDomains = map[string][]byte{}
		}
		name, path, withFile := strings.Cut(td, "=")
		in.JWTTrustDomains[name] = nil
		if withFile {
			in.JWTTrustDomains[name] = file("--jwt-trust-domain "+name, path)
		}
	}
	in.Direction = g.direction
	// An outbound guard has no caller to identify (config refuses one).
	in.PeerCertificate = g.peerCert && g.configFile == "" && g.direction != config.DirectionOutbound
	return in, err
}

// RenderFlags are the flags all three renderers share: the guard
// configuration, the VM environment, the distributor and its CA, the
// module's sha256 (or the file to compute it from) and fail-open.
type RenderFlags struct {
	Guard                      GuardFlags
	Env                        []string
	Distributor, DistributorCA string
	SHA256, Module             string
	FailOpen                   bool
}

// AddFlags registers the shared flags on fs; a renderer may refine a
// flag's usage text after.
func (r *RenderFlags) AddFlags(fs *pflag.FlagSet) {
	r.Guard.AddFlags(fs)
	fs.StringSliceVar(&r.Env, "env", nil, "VM environment NAME=VALUE (repeatable)")
	fs.StringVar(&r.Distributor, "distributor", "", "distributor http(s)://HOST[:PORT] for bundle polls, audit uploads and remote modules")
	fs.StringVar(&r.DistributorCA, "distributor-ca", "", "CA file inside the proxy verifying the distributor")
	fs.StringVar(&r.SHA256, "sha256", "", "sha256 of the .wasm file (sha256:<hex> or <hex>)")
	fs.StringVar(&r.Module, "module", "", "local .wasm file: computes --sha256")
	fs.BoolVar(&r.FailOpen, "fail-open", false, "let traffic through when the Wasm VM fails (default fail closed)")
}

// EnvMap parses --env.
func (r *RenderFlags) EnvMap() (map[string]string, error) { return ParseEnv(r.Env) }

// ModuleFile reads --module (nil when not given).
func (r *RenderFlags) ModuleFile(read ReadFunc) ([]byte, error) {
	if r.Module == "" {
		return nil, nil
	}
	return read("--module", r.Module)
}

// FileSHA256 is --sha256, computed from --module when given (and checked
// against --sha256 when both are).
func (r *RenderFlags) FileSHA256(read ReadFunc) (string, error) {
	b, err := r.ModuleFile(read)
	if err != nil || b == nil {
		return r.SHA256, err
	}
	return FileSHA256(b, r.SHA256)
}

// ParseEnv reads NAME=VALUE pairs.
func ParseEnv(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", p)
		}
		out[k] = v
	}
	return out, nil
}

// FileSHA256 is the hex sha256 of a module file, checked against given
// (hex or sha256:hex) when that is set.
func FileSHA256(module []byte, given string) (string, error) {
	h := sha256.Sum256(module)
	sum := hex.EncodeToString(h[:])
	if given != "" {
		g, err := NormaliseSHA256(given)
		if err != nil {
			return "", err
		}
		if g != sum {
			return "", fmt.Errorf("--sha256 %s does not match the module file's %s", g, sum)
		}
	}
	return sum, nil
}

// StandaloneFlags are the flags of `meshguard render envoy`.
type StandaloneFlags struct {
	RenderFlags
	s Standalone
}

// AddFlags registers them on fs.
func (f *StandaloneFlags) AddFlags(fs *pflag.FlagSet) {
	f.RenderFlags.AddFlags(fs)
	fs.StringVar(&f.s.Filter.Module.URL, "module-url", "", "http(s) URL of the .wasm")
	fs.StringVar(&f.s.Filter.Module.LocalFile, "local-module", "", "absolute path of the .wasm on the Envoy host")
	fs.StringVar(&f.s.Filter.PluginName, "plugin-name", DefaultPluginName, "plugin name")
	fs.StringVar(&f.s.Filter.RootID, "root-id", "", "plugin root id")
	fs.StringVar(&f.s.Filter.VMID, "vm-id", DefaultVMID, "VM id")
	fs.StringSliceVar(&f.s.Filter.HostEnv, "host-env", nil, "host environment variable exposed to the VM (repeatable)")
}

// Standalone translates the flags, reading the files they name.
func (f *StandaloneFlags) Standalone(read ReadFunc) (Standalone, error) {
	s := f.s
	var err error
	if s.Guard, err = f.Guard.Input(read); err != nil {
		return s, err
	}
	if s.Filter.Env, err = f.EnvMap(); err != nil {
		return s, err
	}
	if s.Filter.Module.SHA256, err = f.FileSHA256(read); err != nil {
		return s, err
	}
	s.Filter.FailOpen = f.FailOpen
	if f.Distributor != "" {
		up, err := ParseUpstream(f.Distributor)
		if err != nil {
			return s, err
		}
		up.CAFile = f.DistributorCA
		s.Distributor = &up
	}
	return s, nil
}
