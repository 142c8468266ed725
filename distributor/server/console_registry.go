package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/internal/contract"
)

// The console's read path of the registry (GET /ui/api/registry/...),
// behind the audit action. It is separate from /v1/registry/, which
// limits a caller to its organisation's namespace: auditors oversee every
// organisation, so they see every entry (with an organisation filter).
// It only reads the store; a credential is described (key type and
// thumbprint, or certificate subject and validity), never passed through.

// Bounds of the console's registry queries.
const (
	consoleRegistryPage = 50
	consoleRegistryMax  = 500
	// consoleHistoryMax is how many registry records an entry's history
	// shows; consoleHistoryScan how many registry records a workload's
	// history reads at most (workload ids are not indexed in the log).
	consoleHistoryMax  = 100
	consoleHistoryScan = 5000
)

var registryListParams = []string{"organisation", "class", "vendor", "prefix", "label", "after", "limit"}

// RegistryFilter selects entries in the console's list.
type RegistryFilter struct {
	Organisation, Class, Vendor, Prefix string
	Labels                              map[string]string
	// needles are the canonical JSON fragments an entry's spec must
	// contain (a cheap test before decoding it).
	needles [][]byte
}

// RegistryListPage is one page of the console's registry list.
type RegistryListPage struct {
	Kind  registry.Kind     `json:"kind"`
	Items []RegistrySummary `json:"items"`
	// Next is the after of the next page ("" on the last page).
	Next string `json:"next_page_token,omitempty"`
	// Orgs are the configured organisations (the filter's choices).
	Orgs []string `json:"organisations"`
}

// RegistrySummary is an entry's row in the list.
type RegistrySummary struct {
	ID           string            `json:"id"`
	Organisation string            `json:"organisation"`
	Generation   uint64            `json:"generation"`
	Updated      time.Time         `json:"updated"`
	Class        string            `json:"class,omitempty"`
	Vendor       string            `json:"vendor,omitempty"`
	Firmware     string            `json:"firmware,omitempty"`
	Versions     string            `json:"versions,omitempty"`
	Credential   string            `json:"credential,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// CredentialView describes a device's credential without its material.
type CredentialView struct {
	// Type is "jwk" or "x509" ("" when the entry has none or it does not parse).
	Type string `json:"type"`
	// KeyType is the JWK kty and curve ("EC P-256", "OKP Ed25519").
	KeyType string `json:"key_type,omitempty"`
	KeyID   string `json:"kid,omitempty"`
	// Thumbprint is the RFC 7638 SHA-256 thumbprint, base64url.
	Thumbprint string `json:"thumbprint,omitempty"`
	Subject    string `json:"subject,omitempty"`
	Issuer     string `json:"issuer,omitempty"`
	Serial     string `json:"serial,omitempty"`
	NotBefore  string `json:"not_before,omitempty"`
	NotAfter   string `json:"not_after,omitempty"`
	Expired    bool   `json:"expired,omitempty"`
	// Fingerprint is the certificate's SHA-256, hex.
	Fingerprint string `json:"fingerprint,omitempty"`
	Problem     string `json:"problem,omitempty"`
}

// RegistryEntryView is one entry for the console: the stored record
// (credential replaced by its description), its channels and its audit
// history.
type RegistryEntryView struct {
	Kind         registry.Kind   `json:"kind"`
	ID           string          `json:"id"`
	Registered   bool            `json:"registered"`
	Organisation string          `json:"organisation,omitempty"`
	Generation   uint64          `json:"generation,omitempty"`
	Created      *time.Time      `json:"created,omitempty"`
	Updated      *time.Time      `json:"updated,omitempty"`
	Spec         map[string]any  `json:"spec,omitempty"`
	Credential   *CredentialView `json:"credential,omitempty"`
	// Channels is which channels and revisions carry the entry: nil while
	// registry entries do not produce bundle revisions (ChannelsNote says so).
	Channels     []RegistryChannelRef `json:"channels"`
	ChannelsNote string               `json:"channels_note,omitempty"`
	History      RegistryHistory      `json:"history"`
}

// RegistryChannelRef is a channel revision that includes an entry.
type RegistryChannelRef struct {
	Channel  string `json:"channel"`
	Revision uint64 `json:"revision"`
}

// RegistryHistory is an entry's registry records in the decision log,
// newest first.
type RegistryHistory struct {
	Records []decisionlog.StoredRecord `json:"records"`
	// Complete is false when older records may exist beyond what was read.
	Complete bool `json:"complete"`
	// Scanned is how many registry records were read to find them.
	Scanned int `json:"scanned"`
	// Filter is the decision log query that lists them (the console's
	// link); Exact says it matches this entry's records only.
	Filter map[string]string `json:"filter"`
	Exact  bool              `json:"exact"`
}

func (s *Server) consoleRegistryRoutes(handle func(pattern, route string, h http.HandlerFunc)) {
	handle("GET /ui/api/registry/{kind}", "ui_registry_list", s.consoleRegistryList)
	handle("GET /ui/api/registry/{kind}/{id}", "ui_registry_entry", s.consoleRegistryEntry)
}

func parseRegistryFilter(q url.Values) (RegistryFilter, string, int, error) {
	f := RegistryFilter{Labels: map[string]string{}}
	for k, vs := range q {
		if !slices.Contains(registryListParams, k) {
			return f, "", 0, fmt.Errorf("unknown parameter %q (want %v)", k, registryListParams)
		}
		if k != "label" && len(vs) != 1 {
			return f, "", 0, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
		for _, v := range vs {
			if len(v) > registry.MaxIDLen+registry.MaxLabelLen+1 || strings.ContainsAny(v, "\x00") {
				return f, "", 0, fmt.Errorf("parameter %q: at most %d bytes, no NUL", k, registry.MaxIDLen)
			}
		}
	}
	if len(q["label"]) > registry.MaxLabels {
		return f, "", 0, fmt.Errorf("more than %d label filters", registry.MaxLabels)
	}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return f, "", 0, fmt.Errorf("label=%q: want key=value", l)
		}
		if old, dup := f.Labels[k]; dup && old != v {
			return f, "", 0, fmt.Errorf("label %q filtered with two values", k)
		}
		f.Labels[k] = v
	}
	f.Organisation, f.Class, f.Vendor, f.Prefix = q.Get("organisation"), q.Get("class"), q.Get("vendor"), q.Get("prefix")
	limit := consoleRegistryPage
	if v := q.Get("limit"); v != "" {
		n, err := intParam(q, "limit", consoleRegistryMax)
		if err != nil {
			return f, "", 0, err
		}
		limit = int(n)
	}
	// A matching entry's spec contains each wanted value as a JSON string.
	for _, v := range []string{f.Class, f.Vendor} {
		if n := quoted(v); n != nil {
			f.needles = append(f.needles, n)
		}
	}
	for _, v := range f.Labels {
		if n := quoted(v); n != nil {
			f.needles = append(f.needles, n)
		}
	}
	return f, q.Get("after"), limit, nil
}

func containsAll(b []byte, needles [][]byte) bool {
	for _, n := range needles {
		if !bytes.Contains(b, n) {
			return false
		}
	}
	return true
}

// quotedPart is a part of a JSON string (unquoted) that every encoder
// writes as is, or nil.
func quotedPart(v string) []byte {
	q := quoted(v)
	if q == nil {
		return nil
	}
	return q[1 : len(q)-1]
}

// quoted is v as every JSON encoder writes it, for a substring test that
// holds however a store spaces or escapes its JSON: only for values of
// characters no encoder escapes (nil otherwise, and for "": no test).
func quoted(v string) []byte {
	if v == "" {
		return nil
	}
	for _, c := range []byte(v) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:=~ -", c) >= 0) {
			return nil
		}
	}
	return []byte(`"` + v + `"`)
}

// match reports whether a record passes the filter: the organisation and
// the substring test first, then the decoded fields.
func (f RegistryFilter) match(r registry.Record) bool {
	if f.Organisation != "" && r.Organisation != f.Organisation {
		return false
	}
	if !containsAll(r.Spec, f.needles) {
		return false
	}
	if f.Class == "" && f.Vendor == "" && len(f.Labels) == 0 {
		return true
	}
	var v struct {
		Class  string            `json:"class"`
		Vendor string            `json:"vendor"`
		Labels map[string]string `json:"labels"`
	}
	if json.Unmarshal(r.Spec, &v) != nil {
		return false
	}
	if (f.Class != "" && v.Class != f.Class) || (f.Vendor != "" && v.Vendor != f.Vendor) {
		return false
	}
	for k, want := range f.Labels {
		if got, ok := v.Labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// ConsoleRegistryList is a page of entries of kind matching f after the
// id after, sorted by id, across organisations.
func (s *Server) ConsoleRegistryList(ctx context.Context, k registry.Kind, f RegistryFilter, after string, limit int) (RegistryListPage, error) {
	st := s.registry.Store()
	p := RegistryListPage{Kind: k, Items: []RegistrySummary{}, Orgs: []string{}}
	for _, o := range s.cfg.Registry.Organisations {
		p.Orgs = append(p.Orgs, o.Name)
	}
	sort.Strings(p.Orgs)
	var items []registry.Record
	take := func(r registry.Record) bool {
		if !f.match(r) {
			return true
		}
		if len(items) == limit {
			p.Next = items[len(items)-1].ID
			return false
		}
		items = append(items, r)
		return true
	}
	start := after
	if f.Prefix != "" && after < f.Prefix {
		// Start at the prefix, not at the first id: the id equal to the
		// prefix sorts first among the matches.
		rec, err := st.Get(ctx, k, f.Prefix)
		switch {
		case err == nil:
			take(rec)
		case !errors.Is(err, registry.ErrNotFound):
			return p, err
		}
		start = f.Prefix
	}
	err := st.Scan(ctx, k, start, func(r registry.Record) bool {
		if !strings.HasPrefix(r.ID, f.Prefix) {
			return false // ids are in order: past the prefix nothing more matches
		}
		return take(r)
	})
	if err != nil {
		return p, err
	}
	for _, r := range items {
		p.Items = append(p.Items, summarise(r))
	}
	return p, nil
}

func summarise(r registry.Record) RegistrySummary {
	s := RegistrySummary{ID: r.ID, Organisation: r.Organisation, Generation: r.Generation, Updated: r.Updated}
	if r.Kind == registry.KindDevice {
		var d registry.Device
		if json.Unmarshal(r.Spec, &d) == nil {
			s.Class, s.Vendor, s.Firmware, s.Labels = d.Class, d.Vendor, d.Firmware, d.Labels
			c := describeCredential(d.Credential, time.Now())
			s.Credential = c.Type
			switch {
			case c.Problem != "":
				s.Credential += " (unreadable)"
			case c.Type == "jwk":
				s.Credential = c.KeyType + " key " + c.Thumbprint
			case c.Type == "x509":
				s.Credential = "certificate " + c.Subject + " until " + c.NotAfter
			}
		}
		return s
	}
	var w registry.Workload
	if json.Unmarshal(r.Spec, &w) == nil {
		s.Labels = w.Labels
		if w.Versions != nil {
			s.Versions = w.Versions.Range
		}
	}
	return s
}

// describeCredential names a credential by its public facts only.
func describeCredential(c registry.Credential, now time.Time) CredentialView {
	switch {
	case len(c.JWK) > 0:
		v := CredentialView{Type: "jwk"}
		k, err := c.PublicKey()
		if err != nil {
			v.Problem = err.Error()
			return v
		}
		v.KeyType = k.KeyType().String()
		if crv, ok := k.Get("crv"); ok {
			v.KeyType += " " + fmt.Sprint(crv)
		}
		v.KeyID = k.KeyID()
		if tp, err := k.Thumbprint(crypto.SHA256); err == nil {
			v.Thumbprint = base64.RawURLEncoding.EncodeToString(tp)
		}
		return v
	case c.X509 != "":
		v := CredentialView{Type: "x509"}
		cert, err := c.Certificate()
		if err != nil {
			v.Problem = err.Error()
			return v
		}
		fillCert(&v, cert, now)
		return v
	}
	return CredentialView{Problem: "no credential"}
}

func fillCert(v *CredentialView, cert *x509.Certificate, now time.Time) {
	sum := sha256.Sum256(cert.Raw)
	v.Subject, v.Issuer, v.Serial = cert.Subject.String(), cert.Issuer.String(), cert.SerialNumber.Text(16)
	v.NotBefore, v.NotAfter = cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339)
	v.Expired = now.After(cert.NotAfter)
	v.Fingerprint = hex.EncodeToString(sum[:])
	if k, err := jwk.FromRaw(cert.PublicKey); err == nil {
		v.KeyType = k.KeyType().String()
		if crv, ok := k.Get("crv"); ok {
			v.KeyType += " " + fmt.Sprint(crv)
		}
	}
}

// ConsoleRegistryEntry is one entry with its audit history; Registered
// is false for an entry deregistered (or never registered) whose history
// has records. It returns registry.ErrNotFound when there is neither.
func (s *Server) ConsoleRegistryEntry(ctx context.Context, k registry.Kind, id string) (RegistryEntryView, error) {
	v := RegistryEntryView{Kind: k, ID: id,
		ChannelsNote: "Registry entries do not produce bundle revisions yet: no channel or revision carries this entry from the registry (proxies get it only through the authors' bundles)."}
	rec, err := s.registry.Store().Get(ctx, k, id)
	switch {
	case err == nil:
		v.Registered, v.Organisation, v.Generation = true, rec.Organisation, rec.Generation
		v.Created, v.Updated = &rec.Created, &rec.Updated
		if json.Unmarshal(rec.Spec, &v.Spec) != nil {
			v.Spec = map[string]any{"unreadable": string(rec.Spec)}
		}
		if k == registry.KindDevice {
			var d registry.Device
			if json.Unmarshal(rec.Spec, &d) == nil {
				c := describeCredential(d.Credential, time.Now())
				v.Credential = &c
			}
			delete(v.Spec, "credential")
		}
	case !errors.Is(err, registry.ErrNotFound):
		return v, err
	}
	h, err := s.registryHistory(ctx, k, id)
	if err != nil {
		return v, err
	}
	v.History = h
	if !v.Registered && len(h.Records) == 0 {
		return v, registry.ErrNotFound
	}
	return v, nil
}

// registryHistory finds an entry's registry records: a device's by the
// indexed device column, a workload's by reading the newest registry
// records (at most consoleHistoryScan).
func (s *Server) registryHistory(ctx context.Context, k registry.Kind, id string) (RegistryHistory, error) {
	kind := strings.TrimSuffix(string(k), "s")
	f := decisionlog.Filter{Decision: contract.DecisionRegistry}
	h := RegistryHistory{Records: []decisionlog.StoredRecord{}, Filter: map[string]string{"decision": contract.DecisionRegistry}}
	if k == registry.KindDevice {
		f.Device, h.Filter["device"], h.Exact = id, id, true
	}
	// A cheap test before decoding: the id's path segments as any record
	// spells them ("/" may be escaped).
	var needles [][]byte
	for _, seg := range strings.Split(id, "/") {
		if n := quotedPart(seg); n != nil {
			needles = append(needles, n)
		}
	}
	var before uint64
	for {
		page, err := s.search.Search(ctx, f, decisionlog.PageRequest{Before: before, Limit: decisionlog.MaxPageSize})
		if err != nil {
			return h, err
		}
		for _, sr := range page.Records {
			h.Scanned++
			var r struct {
				Kind string `json:"registry_kind"`
				ID   string `json:"registry_id"`
			}
			if !containsAll(sr.Record, needles) {
				continue
			}
			if json.Unmarshal(sr.Record, &r) != nil || r.Kind != kind || r.ID != id {
				continue
			}
			if len(h.Records) == consoleHistoryMax {
				return h, nil
			}
			h.Records = append(h.Records, sr)
		}
		if page.Next == 0 {
			h.Complete = true
			return h, nil
		}
		if h.Scanned >= consoleHistoryScan {
			return h, nil
		}
		before = page.Next
	}
}

func consoleKind(w http.ResponseWriter, r *http.Request) (registry.Kind, bool) {
	k, err := registry.ParseKind(r.PathValue("kind"))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return "", false
	}
	return k, true
}

func (s *Server) consoleRegistryList(w http.ResponseWriter, r *http.Request) {
	k, ok := consoleKind(w, r)
	if !ok {
		return
	}
	f, after, limit, err := parseRegistryFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := s.ConsoleRegistryList(r.Context(), k, f, after, limit)
	s.answer(w, r, p, err)
}

func (s *Server) consoleRegistryEntry(w http.ResponseWriter, r *http.Request) {
	k, ok := consoleKind(w, r)
	if !ok {
		return
	}
	if len(r.URL.RawQuery) > 0 {
		writeError(w, http.StatusBadRequest, "this endpoint takes no parameters")
		return
	}
	id := r.PathValue("id")
	if id == "" || len(id) > registry.MaxIDLen {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id: want 1 to %d bytes", registry.MaxIDLen))
		return
	}
	v, err := s.ConsoleRegistryEntry(r.Context(), k, id)
	if errors.Is(err, registry.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no %s %q is registered, and the decision log has no registry record of it", strings.TrimSuffix(string(k), "s"), id))
		return
	}
	s.answer(w, r, v, err)
}
