package envoy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"sigs.k8s.io/yaml"
)

// GuardInput is the guard configuration as the renderers receive it: either a
// complete configuration file (JSON or YAML) or the handful of settings the
// CLI flags cover.
type GuardInput struct {
	// File is a guard configuration document (JSON or YAML). When set, the
	// flag fields below must be left empty.
	File []byte
	// VerifyKeys is the JWK Set bundles must be signed with.
	VerifyKeys []byte
	// InlineBundle is a signed bundle file embedded in the configuration.
	InlineBundle []byte
	// Channel makes the filter poll the distributor's bundle channel.
	Channel string
	// PollInterval between bundle polls (0 keeps the filter default).
	PollInterval time.Duration
	// Token authenticates bundle polls and audit uploads.
	Token string
	// Mode is enforce (default) or dry-run.
	Mode string
	// Scope must appear in the bundle manifest's scope.
	Scope string
	// ExpiryGrace keeps enforcing an expired bundle this long (0: fail closed).
	ExpiryGrace time.Duration
	// PeerCertificate reads the mTLS peer's SPIFFE ID.
	PeerCertificate bool
	// IstioPeerMetadata reads Istio's downstream peer metadata.
	IstioPeerMetadata bool
	// JWTAudiences and JWTTrustDomains enable JWT-SVID verification.
	// JWTTrustDomains maps a trust domain to its JWT bundle (JWK Set JSON).
	// Without JWTAudiences the audience is per service: the guarded
	// workload's own SPIFFE ID (jwtSvid.localAudience), so a token
	// captured at one service fails at every other.
	JWTAudiences    []string
	JWTTrustDomains map[string][]byte
	// TrustedForwarders are peers (SPIFFE IDs) that may relay a caller's
	// JWT-SVID (identity.trustedForwarders).
	TrustedForwarders []string
	// KeepCredentialHeaders go upstream after verification; by default
	// every verified credential header is removed.
	KeepCredentialHeaders []string
	// Paths is refuse (default), normalize or merge-slashes.
	Paths string
	// EndUser enables end-user access tokens (identity.endUser); JWTAuthn
	// and PseudonymKey are its jwtAuthn keys and pseudonym key.
	EndUser      bool
	JWTAuthn     []string
	PseudonymKey string
	// AuditSink posts decision batches to the distributor.
	AuditSink bool
	// LogAllows records allows too.
	LogAllows bool
	// Direction is inbound (default) or outbound (config.Direction).
	Direction string
}

// Callouts is where the filter's http callouts go on the target platform.
type Callouts struct {
	// Cluster is the Envoy cluster name of the distributor.
	Cluster string
	// Authority is the :authority of callouts (the distributor's host name).
	Authority string
}

func (in GuardInput) flagsSet() bool {
	return len(in.VerifyKeys) > 0 || len(in.InlineBundle) > 0 || in.Channel != "" || in.PollInterval != 0 ||
		in.Token != "" || in.Mode != "" || in.Scope != "" || in.ExpiryGrace != 0 || in.IstioPeerMetadata ||
		len(in.JWTAudiences) > 0 || len(in.JWTTrustDomains) > 0 || in.AuditSink || in.LogAllows ||
		len(in.TrustedForwarders) > 0 || len(in.KeepCredentialHeaders) > 0 || in.Paths != "" || in.Direction != "" || in.EndUser
}

// GuardConfig builds the guard configuration, points its distributor and
// audit callouts at the platform's cluster, validates it with config.Parse
// and returns the canonical JSON (defaults filled in) handed to the filter.
//
// A configuration file that names a different cluster than the platform gives
// the distributor is rejected: the callouts would fail at run time with
// "cluster not found" and the filter would deny everything.
func GuardConfig(in GuardInput, c Callouts) ([]byte, *config.Config, error) {
	var cfg config.Config
	if len(bytes.TrimSpace(in.File)) > 0 {
		if in.flagsSet() {
			return nil, nil, errors.New("guard config: use a configuration file or the guard flags, not both")
		}
		j, err := yaml.YAMLToJSON(in.File)
		if err != nil {
			return nil, nil, fmt.Errorf("guard config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, nil, fmt.Errorf("guard config: %w", err)
		}
	} else {
		cfg = fromFlags(in)
	}
	if d := cfg.Policy.Distributor; d != nil {
		if err := pointAt(&d.Cluster, &d.Authority, c, "policy.distributor"); err != nil {
			return nil, nil, err
		}
	}
	if s := cfg.Audit.Sink; s != nil {
		if err := pointAt(&s.Cluster, &s.Authority, c, "audit.sink"); err != nil {
			return nil, nil, err
		}
	}
	if j := cfg.Identity.JWTSVID; j != nil {
		for td, set := range j.TrustDomains {
			// A JSON configuration cannot carry an empty RawMessage: it arrives
			// as null, which the guard filter parses as a JWK Set and rejects
			// (failing closed). Refuse it here instead of shipping a deny-all.
			if t := bytes.TrimSpace(set); len(t) == 0 || string(t) == "null" {
				return nil, nil, fmt.Errorf("guard config: identity.jwtSvid.trustDomains[%s]: give the trust domain's JWT bundle (--jwt-trust-domain %s=JWKS_FILE); an empty bundle reaches the filter as null, which it rejects", td, td)
			}
		}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("guard config: %w", err)
	}
	parsed, err := config.Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	out, err := json.Marshal(parsed)
	if err != nil {
		return nil, nil, fmt.Errorf("guard config: %w", err)
	}
	return out, parsed, nil
}

func pointAt(cluster, authority *string, c Callouts, field string) error {
	switch {
	case *cluster == "":
		*cluster = c.Cluster
	case c.Cluster != "" && *cluster != c.Cluster:
		return fmt.Errorf("guard config: %s.cluster is %q but the distributor's Envoy cluster here is %q; leave it empty to have it filled in", field, *cluster, c.Cluster)
	}
	if *authority == "" {
		*authority = c.Authority
	}
	return nil
}

func fromFlags(in GuardInput) config.Config {
	cfg := config.Config{Mode: in.Mode, Direction: in.Direction}
	cfg.Policy.VerifyKeys = json.RawMessage(bytes.TrimSpace(in.VerifyKeys))
	cfg.Policy.Scope = in.Scope
	cfg.Policy.ExpiryGrace.Duration = in.ExpiryGrace
	if len(in.InlineBundle) > 0 {
		cfg.Policy.Inline = base64.StdEncoding.EncodeToString(in.InlineBundle)
	}
	if in.Channel != "" {
		cfg.Policy.Distributor = &config.Distributor{Channel: in.Channel, Token: in.Token,
			PollInterval: config.Duration{Duration: in.PollInterval}}
	}
	cfg.Identity.PeerCertificate = in.PeerCertificate
	cfg.Identity.IstioPeerMetadata = in.IstioPeerMetadata
	if len(in.JWTAudiences) > 0 || len(in.JWTTrustDomains) > 0 {
		tds := map[string]json.RawMessage{}
		for td, set := range in.JWTTrustDomains {
			tds[td] = json.RawMessage(bytes.TrimSpace(set))
		}
		cfg.Identity.JWTSVID = &config.JWTSVID{Audiences: in.JWTAudiences, TrustDomains: tds, LocalAudience: len(in.JWTAudiences) == 0}
	}
	cfg.Identity.TrustedForwarders = in.TrustedForwarders
	cfg.Identity.KeepCredentialHeaders = in.KeepCredentialHeaders
	if in.EndUser {
		cfg.Identity.EndUser = &config.EndUser{JWTAuthn: in.JWTAuthn, PseudonymKey: in.PseudonymKey}
	}
	cfg.Paths = in.Paths
	cfg.Audit.LogAllows = in.LogAllows
	if in.AuditSink {
		cfg.Audit.Sink = &config.AuditSink{Token: in.Token}
	}
	return cfg
}
