package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/internal/contract"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/registry"
)

// registryOrg is an organisation and the allowlist of its members.
type registryOrg struct {
	name    string
	members *auth.Policy
}

// openRegistry opens the registry store under <data>/registry and the
// organisations' member lists.
func (s *Server) openRegistry(tokens map[string]string) error {
	st, err := registry.OpenFS(filepath.Join(s.cfg.Data, "registry"))
	if err != nil {
		return err
	}
	for _, o := range s.cfg.Registry.Organisations {
		p, err := auth.NewPolicy(map[auth.Action][]string{auth.ActionRegistry: o.Members}, tokens)
		if err != nil {
			return fmt.Errorf("config: registry organisation %s members: %w", o.Name, err)
		}
		s.regOrgs = append(s.regOrgs, registryOrg{name: o.Name, members: p})
	}
	if s.registry, err = registry.New(st, registry.Options{Organisations: s.cfg.Registry.Organisations, OnChange: s.registryChanged}); err != nil {
		return err
	}
	ac := s.cfg.Registry.Attestation
	if ac.KeyFile == "" {
		ac.KeyFile = filepath.Join(s.cfg.Data, "attestation.key")
	}
	s.attestor, err = registry.NewAttestor(s.registry, registry.AttestOptions{KeyFile: ac.KeyFile, Issuer: ac.Issuer, Audience: ac.Audiences,
		TokenLifetime: ac.TokenLifetime, NonceLifetime: ac.NonceLifetime})
	return err
}

// recordAttestation writes an attestation, issued or refused, to the
// decision log (decision registry, registry_op attest or attest-refused).
func (s *Server) recordAttestation(r *http.Request, ev registry.AttestEvent) error {
	ch := registry.Change{Op: "attest", Kind: registry.KindDevice, ID: ev.DeviceID, Org: ev.Org, Who: identityOf(r).Principal()}
	rec, err := registryRecord(ch, time.Now())
	if err != nil {
		return err
	}
	reason := "attest device " + ev.DeviceID + ": token " + ev.JTI + " firmware " + ev.Firmware
	if ev.Err != nil {
		rec[contract.FieldRegistryOp], _ = json.Marshal("attest-refused")
		reason = "attest device " + ev.DeviceID + " refused: " + ev.Err.Error()
	} else {
		rec[contract.FieldJTI], _ = json.Marshal(ev.JTI)
		rec[contract.FieldFirmware], _ = json.Marshal(ev.Firmware)
	}
	rec[contract.FieldReason], _ = json.Marshal(reason)
	if _, err := s.dlog.Append([]decisionlog.Record{rec}); err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	return nil
}

// registryCaller is the organisation a registry request acts for: the one
// whose members include the caller. A caller in several is refused, so
// no configuration mistake lets one act across organisations silently.
func (s *Server) registryCaller(r *http.Request) (registry.Caller, error) {
	id := identityOf(r)
	var found []string
	for _, o := range s.regOrgs {
		if o.members.Allowed(auth.ActionRegistry, id) {
			found = append(found, o.name)
		}
	}
	switch len(found) {
	case 0:
		return registry.Caller{}, fmt.Errorf("%s is a member of no registry organisation", id)
	case 1:
		return registry.Caller{Org: found[0], Who: id.Principal()}, nil
	}
	return registry.Caller{}, errors.New(id.String() + " is a member of several registry organisations " + fmt.Sprint(found) + ": fix registry.organisations")
}

// registryChanged is the registry's change hook: the change becomes a
// record of the decision log (decision "registry"), stamped with the
// caller as its uploader.
func (s *Server) registryChanged(ch registry.Change) error {
	rec, err := registryRecord(ch, time.Now())
	if err != nil {
		return err
	}
	if _, err := s.dlog.Append([]decisionlog.Record{rec}); err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	s.log.Info("registry change", "op", ch.Op, "kind", ch.Kind, "id", ch.ID, "organisation", ch.Org, "by", ch.Who)
	if s.regPub != nil {
		// Published before the API answers: a 2xx means proxies can fetch
		// the change (a failure undoes it).
		if err := s.regPub.changed(context.Background(), ch); err != nil {
			return fmt.Errorf("registry bundle: %w", err)
		}
	}
	return nil
}

// registryRecord is a change's decision log record.
func registryRecord(ch registry.Change, now time.Time) (decisionlog.Record, error) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	kind := strings.TrimSuffix(string(ch.Kind), "s")
	fields := map[string]any{
		contract.FieldTime:         now.UTC().Format(time.RFC3339Nano),
		contract.FieldDecisionID:   hex.EncodeToString(id[:]),
		contract.FieldDecision:     contract.DecisionRegistry,
		contract.FieldRuleIDs:      []string{},
		contract.FieldReason:       fmt.Sprintf("%s %s %s", ch.Op, kind, ch.ID),
		contract.FieldSubject:      ch.Who,
		contract.FieldOrganisation: ch.Org,
		contract.FieldRegistryOp:   string(ch.Op),
		contract.FieldRegistryKind: kind,
		contract.FieldRegistryID:   ch.ID,
		contract.FieldBefore:       ch.Before,
		contract.FieldAfter:        ch.After,
	}
	if ch.Kind == registry.KindDevice {
		fields[contract.FieldDeviceID] = ch.ID
	}
	rec := decisionlog.Record{}
	for k, v := range fields {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("registry record: %w", err)
		}
		rec[k] = b
	}
	decisionlog.Stamp([]decisionlog.Record{rec}, ch.Who, now)
	return rec, nil
}

func (s *Server) registryRoutes() {
	max := int64(s.cfg.Registry.MaxEntryBytes)
	if max == 0 {
		max = 64 << 10
	}
	h := registry.Handler(s.registry, registry.HandlerOptions{Caller: s.registryCaller, MaxBody: max, Logger: s.log})
	s.handle(registry.Path+"/", "registry", fixed(auth.ActionRegistry), max, h.ServeHTTP)
	nonceH, attestH, keysH := registry.AttestHandlers(s.attestor, s.recordAttestation)
	ac := s.cfg.Registry.Attestation
	lim := auth.NewLimiter(ac.Rate, ac.Burst)
	limited := func(route string, h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if ok, wait := lim.Allow(identityOf(r).Key(), 1); !ok {
				s.m.rejected.WithLabelValues(route, "rate_limited").Inc()
				w.Header().Set("Retry-After", retryAfter(wait))
				s.refuse(w, r, route, http.StatusTooManyRequests, "attestation rate limit exceeded; retry in "+wait.Round(time.Millisecond).String())
				return
			}
			h(w, r)
		}
	}
	s.handle("POST "+registry.AttestNoncePath, "registry_attest_nonce", fixed(auth.ActionAttest), 4<<10, limited("registry_attest_nonce", nonceH))
	s.handle("POST "+registry.AttestPath, "registry_attest", fixed(auth.ActionAttest), 16<<10, limited("registry_attest", attestH))
	s.handle("GET "+registry.AttestKeysPath, "registry_attest_keys", nil, 0, keysH)
}
