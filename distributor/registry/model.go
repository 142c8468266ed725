// Package registry is the distributor's registry of workloads and devices:
// the resources the domain systems register, update and deregister at
// runtime through /v1/registry/ (see http.go and openapi.json), kept in a
// Store behind a small interface (the filesystem store here; another
// backend implements the same interface), each entry owned by one
// organisation.
package registry

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/policies"
)

// Kind is a registry resource kind.
type Kind string

// Resource kinds.
const (
	KindWorkload Kind = "workloads"
	KindDevice   Kind = "devices"
)

// Limits on one entry, so that a registry of 100k devices stays bounded.
const (
	MaxIDLen        = 255
	MaxLabels       = 64
	MaxLabelLen     = 128
	MaxListLen      = 64
	MaxDeniedBuilds = 256
	MaxRangeLen     = 256
	MaxCredentialB  = 16 << 10
)

// Workload is a registered workload.
type Workload struct {
	// SPIFFEID is the workload's exact SPIFFE ID (its registry id).
	SPIFFEID string `json:"spiffe_id"`
	// Organisation owns the entry (set from the caller when empty).
	Organisation string `json:"organisation,omitempty"`
	// Versions are the approved software versions.
	Versions *Versions `json:"versions,omitempty"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `json:"labels,omitempty"`
}

// Versions is a semver range with deny-listed builds.
type Versions struct {
	// Range is a semver range (policies/README.md, Versions); "" is any.
	Range string `json:"range,omitempty"`
	// Denied are exact versions (with build metadata, if any) refused even
	// inside Range.
	Denied []string `json:"denied,omitempty"`
	// Source is where the proxy reads the presented version: a JWT claim
	// name ("claim:swversion") or a header ("header:x-sw-version");
	// default claim:swversion.
	Source string `json:"source,omitempty"`
}

// Device is a registered device.
type Device struct {
	// ID is the device id (its registry id), lower-case.
	ID           string `json:"id"`
	Class        string `json:"class"`
	Vendor       string `json:"vendor"`
	Organisation string `json:"organisation,omitempty"`
	// Firmware is the approved firmware semver range ("" is any).
	Firmware   string     `json:"firmware,omitempty"`
	Credential Credential `json:"credential"`
	// Readers and Writers are the SPIFFE ID patterns that may read and
	// write the device.
	Readers []string `json:"readers,omitempty"`
	Writers []string `json:"writers,omitempty"`
	// WriteLimit bounds writes to the device (optional).
	WriteLimit *WriteLimit `json:"write_limit,omitempty"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `json:"labels,omitempty"`
}

// Credential is a device's registered key: exactly one of a public JWK or
// an X.509 certificate (PEM).
type Credential struct {
	JWK  json.RawMessage `json:"jwk,omitempty"`
	X509 string          `json:"x509,omitempty"`
}

// WriteLimit is a token bucket for writes to one device.
type WriteLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// FieldError is one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every invalid field of a request (400).
type ValidationError struct {
	Fields []FieldError `json:"fields"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid entry: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (e *ValidationError) err() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

var (
	// spiffeRE is an exact SPIFFE ID: lower-case trust domain, path
	// segments of unreserved characters, no dot segments.
	spiffeRE = regexp.MustCompile(`^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~-]+)+$`)
	// spiffePatternRE also accepts * and ** segments (policies/README.md).
	spiffePatternRE = regexp.MustCompile(`^spiffe://[a-z0-9._-]+(/([A-Za-z0-9._~-]+|\*|\*\*))+$`)
	deviceIDRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._:-]*$`)
	nameRE          = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	labelKeyRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	sourceRE        = regexp.MustCompile(`^(claim|header):[A-Za-z0-9._-]+$`)
)

func validSPIFFEID(s string) bool {
	return len(s) <= MaxIDLen && spiffeRE.MatchString(s) && !hasDotSegment(s)
}

func hasDotSegment(s string) bool {
	for _, seg := range strings.Split(strings.TrimPrefix(s, "spiffe://"), "/")[1:] {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// TrustDomain is the trust domain of a SPIFFE ID.
func TrustDomain(id string) string {
	td, _, _ := strings.Cut(strings.TrimPrefix(id, "spiffe://"), "/")
	return td
}

func checkRange(v *ValidationError, field, r string) {
	if r == "" {
		return
	}
	if len(r) > MaxRangeLen {
		v.add(field, "longer than %d bytes", MaxRangeLen)
		return
	}
	if err := policies.CheckRange(r); err != nil {
		v.add(field, "%v", err)
	}
}

func checkLabels(v *ValidationError, labels map[string]string) {
	if len(labels) > MaxLabels {
		v.add("labels", "more than %d labels", MaxLabels)
		return
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(k) > MaxLabelLen || !labelKeyRE.MatchString(k) {
			v.add("labels", "key %q: want letters, digits, . _ / - (at most %d bytes)", k, MaxLabelLen)
		}
		if len(labels[k]) > MaxLabelLen || !utf8.ValidString(labels[k]) || strings.ContainsAny(labels[k], "\x00\r\n") {
			v.add("labels."+k, "value: at most %d bytes of UTF-8 text on one line", MaxLabelLen)
		}
	}
}

// Validate checks a workload entry (every field error at once).
func (w *Workload) Validate() error {
	v := &ValidationError{}
	if !validSPIFFEID(w.SPIFFEID) {
		v.add("spiffe_id", "want an exact SPIFFE ID spiffe://<trust domain>/<path> (lower-case trust domain, no dot segments, at most %d bytes)", MaxIDLen)
	}
	if w.Organisation != "" && !nameRE.MatchString(w.Organisation) {
		v.add("organisation", "want a name [a-z0-9][a-z0-9._-]*")
	}
	if w.Versions != nil {
		checkRange(v, "versions.range", w.Versions.Range)
		if len(w.Versions.Denied) > MaxDeniedBuilds {
			v.add("versions.denied", "more than %d builds", MaxDeniedBuilds)
		}
		for i, d := range w.Versions.Denied {
			if _, err := semver.StrictNewVersion(d); err != nil {
				v.add(fmt.Sprintf("versions.denied[%d]", i), "not a strict semver version: %q", d)
			}
		}
		if s := w.Versions.Source; s != "" && !sourceRE.MatchString(s) {
			v.add("versions.source", "want claim:NAME or header:NAME")
		}
	}
	checkLabels(v, w.Labels)
	return v.err()
}

// Validate checks a device entry (every field error at once).
func (d *Device) Validate() error {
	v := &ValidationError{}
	if len(d.ID) > MaxIDLen || !deviceIDRE.MatchString(d.ID) {
		v.add("id", "want [a-z0-9][a-z0-9._:-]* (lower-case, at most %d bytes)", MaxIDLen)
	}
	for f, s := range map[string]string{"class": d.Class, "vendor": d.Vendor} {
		if s == "" || len(s) > MaxLabelLen || !nameRE.MatchString(s) {
			v.add(f, "required: want [a-z0-9][a-z0-9._-]* (at most %d bytes)", MaxLabelLen)
		}
	}
	if d.Organisation != "" && !nameRE.MatchString(d.Organisation) {
		v.add("organisation", "want a name [a-z0-9][a-z0-9._-]*")
	}
	checkRange(v, "firmware", d.Firmware)
	d.Credential.check(v)
	for field, list := range map[string][]string{"readers": d.Readers, "writers": d.Writers} {
		if len(list) > MaxListLen {
			v.add(field, "more than %d entries", MaxListLen)
			continue
		}
		for i, p := range list {
			if len(p) > MaxIDLen || !spiffePatternRE.MatchString(p) || hasDotSegment(p) {
				v.add(fmt.Sprintf("%s[%d]", field, i), "want a SPIFFE ID pattern spiffe://<trust domain>/<segments> (segments may be * or **)")
			}
		}
	}
	if wl := d.WriteLimit; wl != nil {
		if !(wl.PerSecond > 0 && wl.PerSecond <= 1e6) {
			v.add("write_limit.per_second", "want a positive number up to 1e6")
		}
		if wl.Burst < 1 || wl.Burst > 1e6 {
			v.add("write_limit.burst", "want a positive integer up to 1e6")
		}
	}
	checkLabels(v, d.Labels)
	return v.err()
}

func (c *Credential) check(v *ValidationError) {
	switch {
	case len(c.JWK) > 0 && c.X509 != "":
		v.add("credential", "give exactly one of jwk and x509")
	case len(c.JWK) > 0:
		if len(c.JWK) > MaxCredentialB {
			v.add("credential.jwk", "larger than %d bytes", MaxCredentialB)
			return
		}
		if _, err := c.PublicKey(); err != nil {
			v.add("credential.jwk", "%v", err)
		}
	case c.X509 != "":
		if len(c.X509) > MaxCredentialB {
			v.add("credential.x509", "larger than %d bytes", MaxCredentialB)
			return
		}
		if _, err := c.Certificate(); err != nil {
			v.add("credential.x509", "%v", err)
		}
	default:
		v.add("credential", "required: a public key as JWK (jwk) or an X.509 certificate in PEM (x509)")
	}
}

// PublicKey parses the JWK credential: a public EC P-256 or Ed25519 key
// (private keys are refused: the registry must never hold one).
func (c *Credential) PublicKey() (jwk.Key, error) {
	if len(c.JWK) == 0 {
		cert, err := c.Certificate()
		if err != nil {
			return nil, err
		}
		return jwk.FromRaw(cert.PublicKey)
	}
	k, err := jwk.ParseKey(c.JWK)
	if err != nil {
		return nil, fmt.Errorf("not a JWK: %w", err)
	}
	switch k.KeyType().String() {
	case "EC", "OKP":
	default:
		return nil, fmt.Errorf("key type %s: want EC (P-256) or OKP (Ed25519)", k.KeyType())
	}
	if _, priv := k.(jwk.ECDSAPrivateKey); priv {
		return nil, fmt.Errorf("a private key: register the public key only")
	}
	if _, priv := k.(jwk.OKPPrivateKey); priv {
		return nil, fmt.Errorf("a private key: register the public key only")
	}
	if ec, ok := k.(jwk.ECDSAPublicKey); ok && ec.Crv().String() != "P-256" {
		return nil, fmt.Errorf("curve %s: want P-256", ec.Crv())
	}
	if okp, ok := k.(jwk.OKPPublicKey); ok && okp.Crv().String() != "Ed25519" {
		return nil, fmt.Errorf("curve %s: want Ed25519", okp.Crv())
	}
	return k, nil
}

// Certificate parses the X.509 credential: exactly one PEM certificate.
func (c *Credential) Certificate() (*x509.Certificate, error) {
	blk, rest := pem.Decode([]byte(c.X509))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("want one PEM CERTIFICATE block")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("want exactly one PEM certificate, found trailing data")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	return cert, nil
}
