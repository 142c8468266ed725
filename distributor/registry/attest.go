package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Device token claims: IETF EAT (RFC 9711) names, the guard's defaults
// (identity.device.claims).
const (
	ClaimDeviceID = "ueid"
	ClaimClass    = "hwmodel"
	ClaimVendor   = "oemid"
	ClaimFirmware = "swversion"
)

// AttestTyp is the typ header a device's attestation JWS must carry, so
// a signature the device made for anything else cannot be replayed here.
const AttestTyp = "meshguard-attest+jws"

// Attestation errors (every refusal wraps ErrAttestation).
var (
	ErrAttestation = errors.New("attestation refused")
	errNonce       = fmt.Errorf("%w: unknown, used or expired nonce", ErrAttestation)
)

// AttestOptions configure an Attestor.
type AttestOptions struct {
	// KeyFile holds the ES256 private JWK that signs device tokens; a
	// missing file is generated (with its public JWK Set in KeyFile.pub).
	KeyFile string
	// Issuer (iss) and Audience (aud) of the tokens.
	Issuer   string
	Audience []string
	// TokenLifetime is a token's validity; NonceLifetime a nonce's.
	TokenLifetime, NonceLifetime time.Duration
	// MaxNonces bounds outstanding nonces (default 100000).
	MaxNonces int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// AttestEvent is one attestation, issued or refused, for the audit trail.
type AttestEvent struct {
	DeviceID string
	Who      string
	Org      string
	Firmware string
	// Err is why it was refused (nil: a token was issued, JTI names it).
	Err error
	JTI string
}

// Attestor issues short-lived device tokens to registered devices that
// prove possession of their registered key over a single-use nonce.
type Attestor struct {
	svc  *Service
	o    AttestOptions
	key  jwk.Key
	pubs jwk.Set

	mu     sync.Mutex
	nonces map[string]nonce
	// perDevice are each device's outstanding nonces, oldest first, at
	// most MaxDeviceNonces: asking for nonces of someone else's device
	// evicts only that device's older ones and cannot fill the table.
	perDevice map[string][]string
}

// MaxDeviceNonces bounds one device's outstanding nonces.
const MaxDeviceNonces = 4

type nonce struct {
	device  string
	expires time.Time
}

// NewAttestor loads (or creates) the token key.
func NewAttestor(svc *Service, o AttestOptions) (*Attestor, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxNonces <= 0 {
		o.MaxNonces = 100000
	}
	if o.Issuer == "" || len(o.Audience) == 0 || o.TokenLifetime <= 0 || o.NonceLifetime <= 0 {
		return nil, errors.New("registry attestation: issuer, audience, token_lifetime and nonce_lifetime are required")
	}
	key, err := loadOrCreateTokenKey(o.KeyFile)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return &Attestor{svc: svc, o: o, key: key, pubs: set, nonces: map[string]nonce{}, perDevice: map[string][]string{}}, nil
}

// Keys is the JWK Set that verifies device tokens (the guard's
// identity.device.issuers entry for Issuer).
func (a *Attestor) Keys() jwk.Set { return a.pubs }

func loadOrCreateTokenKey(path string) (jwk.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := jwk.ParseKey(b)
		if err != nil {
			return nil, fmt.Errorf("device token key %s: %w", path, err)
		}
		if _, ok := k.(jwk.ECDSAPrivateKey); !ok {
			return nil, fmt.Errorf("device token key %s: want an EC P-256 private JWK", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("device token key: %w", err)
	}
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	if err := jwk.AssignKeyID(k); err != nil {
		return nil, err
	}
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256)
	kb, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	pub, _ := k.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	pb, _ := json.Marshal(set)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("device token key: %w", err)
	}
	if err := writeAtomic(filepath.Dir(path), filepath.Base(path), kb); err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Dir(path), filepath.Base(path)+".pub", pb); err != nil {
		return nil, err
	}
	return k, nil
}

// Nonce hands out a single-use nonce for a registered device.
func (a *Attestor) Nonce(ctx context.Context, deviceID string) (string, time.Time, error) {
	rec, err := a.svc.store.Get(ctx, KindDevice, deviceID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: device %q is not registered", ErrAttestation, deviceID)
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	n := base64.RawURLEncoding.EncodeToString(b[:])
	now := a.o.Now()
	exp := now.Add(a.o.NonceLifetime)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.nonces) >= a.o.MaxNonces {
		for k, v := range a.nonces {
			if !now.Before(v.expires) {
				a.drop(k, v.device)
			}
		}
		if len(a.nonces) >= a.o.MaxNonces {
			return "", time.Time{}, fmt.Errorf("%w: too many outstanding nonces; retry shortly", ErrAttestation)
		}
	}
	if q := a.perDevice[rec.ID]; len(q) >= MaxDeviceNonces {
		a.drop(q[0], rec.ID)
	}
	a.nonces[n] = nonce{device: rec.ID, expires: exp}
	a.perDevice[rec.ID] = append(a.perDevice[rec.ID], n)
	return n, exp, nil
}

// drop forgets a nonce (a.mu held).
func (a *Attestor) drop(n, device string) {
	delete(a.nonces, n)
	q := a.perDevice[device]
	for i, v := range q {
		if v == n {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(a.perDevice, device)
	} else {
		a.perDevice[device] = q
	}
}

// take consumes a nonce: whatever happens next, it is used.
func (a *Attestor) take(n string) (nonce, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.nonces[n]
	if ok {
		a.drop(n, v.device)
	}
	return v, ok
}

// AttestPayload is what the device signs.
type AttestPayload struct {
	DeviceID string `json:"device_id"`
	Nonce    string `json:"nonce"`
	// Firmware is the device's running firmware version; it must be in
	// the registered approved range and goes into the token.
	Firmware string `json:"firmware"`
}

// Attest checks a compact JWS over an AttestPayload and returns a device
// token. ev describes the outcome for the audit trail either way.
func (a *Attestor) Attest(ctx context.Context, compact []byte) (token string, exp time.Time, ev AttestEvent, err error) {
	refuse := func(format string, args ...any) (string, time.Time, AttestEvent, error) {
		ev.Err = fmt.Errorf("%w: "+format, append([]any{ErrAttestation}, args...)...)
		return "", time.Time{}, ev, ev.Err
	}
	msg, err := jws.Parse(compact)
	if err != nil || len(msg.Signatures()) != 1 {
		return refuse("not a compact JWS with one signature")
	}
	var p AttestPayload
	dec := json.NewDecoder(strings.NewReader(string(msg.Payload())))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || p.DeviceID == "" || p.Nonce == "" {
		return refuse("payload: want {device_id, nonce, firmware}")
	}
	ev.DeviceID, ev.Firmware = p.DeviceID, p.Firmware
	// The nonce is spent before any check, so a failed attempt cannot be
	// retried with it.
	n, ok := a.take(p.Nonce)
	if !ok || !a.o.Now().Before(n.expires) {
		ev.Err = errNonce
		return "", time.Time{}, ev, ev.Err
	}
	if n.device != p.DeviceID {
		return refuse("the nonce was issued to another device")
	}
	rec, err := a.svc.store.Get(ctx, KindDevice, p.DeviceID)
	if err != nil {
		return refuse("device %q is not registered", p.DeviceID)
	}
	ev.Org = rec.Organisation
	var d Device
	if err := json.Unmarshal(rec.Spec, &d); err != nil {
		return refuse("registered entry unreadable")
	}
	key, err := d.Credential.PublicKey()
	if err != nil {
		return refuse("registered credential unusable: %v", err)
	}
	alg := jwa.ES256
	if key.KeyType().String() == "OKP" {
		alg = jwa.EdDSA
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Algorithm() != alg {
		return refuse("alg %s: the registered key signs %s", h.Algorithm(), alg)
	}
	if h.Type() != AttestTyp {
		return refuse("typ %q: want %s", h.Type(), AttestTyp)
	}
	if _, err := jws.Verify(compact, jws.WithKey(alg, key)); err != nil {
		return refuse("signature does not verify with the registered key")
	}
	v, err := semver.StrictNewVersion(p.Firmware)
	if err != nil {
		return refuse("firmware %q is not a version", p.Firmware)
	}
	if d.Firmware != "" {
		c, err := semver.NewConstraint(d.Firmware)
		if err != nil || !c.Check(v) {
			return refuse("firmware %s is outside the approved range %q", p.Firmware, d.Firmware)
		}
	}
	now := a.o.Now()
	exp = now.Add(a.o.TokenLifetime).Truncate(time.Second)
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	ev.JTI = base64.RawURLEncoding.EncodeToString(jti[:])
	tok := jwt.New()
	for k, val := range map[string]any{jwt.IssuerKey: a.o.Issuer, jwt.AudienceKey: a.o.Audience, jwt.SubjectKey: d.ID,
		jwt.IssuedAtKey: now.Truncate(time.Second), jwt.ExpirationKey: exp, jwt.JwtIDKey: ev.JTI,
		ClaimDeviceID: d.ID, ClaimClass: d.Class, ClaimVendor: d.Vendor, ClaimFirmware: p.Firmware} {
		if err := tok.Set(k, val); err != nil {
			return refuse("token: %v", err)
		}
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, a.key))
	if err != nil {
		ev.Err = fmt.Errorf("signing the device token: %w", err)
		return "", time.Time{}, ev, ev.Err
	}
	return string(signed), exp, ev, nil
}
