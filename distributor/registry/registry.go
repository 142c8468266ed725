package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Organisation is a configured owner of registry entries: the workloads
// whose SPIFFE IDs are in its trust domains or under its SPIFFE ID
// prefixes, and the devices whose ids start with one of its device
// prefixes. Which callers act for it is the distributor's concern
// (members: allowlist entries, see distributor/server config).
type Organisation struct {
	Name string `yaml:"name" json:"name"`
	// Members are the callers acting for the organisation (allowlist
	// entries: spiffe://td/path, spiffe://td/*, token:NAME, loopback).
	Members        []string `yaml:"members" json:"-"`
	TrustDomains   []string `yaml:"trust_domains" json:"trust_domains,omitempty"`
	SPIFFEPrefixes []string `yaml:"spiffe_prefixes" json:"spiffe_prefixes,omitempty"`
	DevicePrefixes []string `yaml:"device_prefixes" json:"device_prefixes,omitempty"`
}

// Validate checks an organisation's configuration.
func (o Organisation) Validate() error {
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("registry organisation %q: want a name [a-z0-9][a-z0-9._-]*", o.Name)
	}
	if len(o.Members) == 0 {
		return fmt.Errorf("registry organisation %s: no members (callers acting for it)", o.Name)
	}
	if len(o.TrustDomains)+len(o.SPIFFEPrefixes)+len(o.DevicePrefixes) == 0 {
		return fmt.Errorf("registry organisation %s: owns nothing (give trust_domains, spiffe_prefixes or device_prefixes)", o.Name)
	}
	for _, td := range o.TrustDomains {
		if !validSPIFFEID("spiffe://"+td+"/x") || strings.Contains(td, "/") {
			return fmt.Errorf("registry organisation %s: trust domain %q: want a lower-case trust domain name", o.Name, td)
		}
	}
	for _, p := range o.SPIFFEPrefixes {
		if !validSPIFFEID(strings.TrimSuffix(p, "/")) {
			return fmt.Errorf("registry organisation %s: SPIFFE ID prefix %q: want spiffe://td/path", o.Name, p)
		}
	}
	for _, p := range o.DevicePrefixes {
		if p == "" || !deviceIDRE.MatchString(p) {
			return fmt.Errorf("registry organisation %s: device prefix %q: want [a-z0-9][a-z0-9._:-]*", o.Name, p)
		}
	}
	return nil
}

// OwnsWorkload reports whether a SPIFFE ID is in the organisation's
// namespace. A prefix matches whole path segments.
func (o Organisation) OwnsWorkload(id string) bool {
	td := TrustDomain(id)
	for _, t := range o.TrustDomains {
		if t == td {
			return true
		}
	}
	for _, p := range o.SPIFFEPrefixes {
		p = strings.TrimSuffix(p, "/")
		if id == p || strings.HasPrefix(id, p+"/") {
			return true
		}
	}
	return false
}

// OwnsDevice reports whether a device id is in the organisation's namespace.
func (o Organisation) OwnsDevice(id string) bool {
	for _, p := range o.DevicePrefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

func (o Organisation) owns(k Kind, id string) bool {
	if k == KindWorkload {
		return o.OwnsWorkload(id)
	}
	return o.OwnsDevice(id)
}

// Caller is who asks: the organisation it acts for and its name for audit.
type Caller struct {
	Org string
	Who string
}

// Op is what a change did.
type Op string

// Change operations.
const (
	OpCreate Op = "create"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Change is one registry change, handed to the Service's hook after it is
// stored: before is nil on create, after nil on delete.
type Change struct {
	Op            Op
	Kind          Kind
	ID            string
	Org           string
	Who           string
	Before, After *Record
}

// Errors of the Service beyond the store's.
var (
	// ErrForbidden: the entry is outside the caller's organisation.
	ErrForbidden = errors.New("registry: entry belongs to another organisation")
	// ErrPreconditionRequired: an update without the generation it replaces.
	ErrPreconditionRequired = errors.New("registry: If-Match with the entry's ETag is required")
	// ErrUnknownKind: not workloads or devices.
	ErrUnknownKind = errors.New("registry: unknown resource kind (want workloads or devices)")
)

// Options configure a Service.
type Options struct {
	Organisations []Organisation
	// OnChange runs after each stored change, in the order of changes
	// (the Service serialises writes): it records the change (the audit
	// trail). When it fails the store change is undone and the request
	// fails, so no change goes unrecorded.
	OnChange func(Change) error
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service is the registry: validation, ownership and the store.
type Service struct {
	store Store
	orgs  map[string]Organisation
	hook  func(Change) error
	now   func() time.Time
	mu    sync.Mutex // serialises writes so hooks see changes in order
}

// New returns a Service over store.
func New(store Store, opts Options) (*Service, error) {
	s := &Service{store: store, orgs: map[string]Organisation{}, hook: opts.OnChange, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	for _, o := range opts.Organisations {
		if err := o.Validate(); err != nil {
			return nil, err
		}
		if _, dup := s.orgs[o.Name]; dup {
			return nil, fmt.Errorf("registry organisation %s: configured twice", o.Name)
		}
		s.orgs[o.Name] = o
	}
	return s, nil
}

// Store is the service's store.
func (s *Service) Store() Store { return s.store }

// Organisation returns a configured organisation.
func (s *Service) Organisation(name string) (Organisation, bool) {
	o, ok := s.orgs[name]
	return o, ok
}

// ParseKind checks a kind path segment.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case KindWorkload, KindDevice:
		return Kind(s), nil
	}
	return "", ErrUnknownKind
}

// decodeStrict decodes exactly one JSON value, refusing unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Fields: []FieldError{{Field: "body", Message: jsonMessage(err)}}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &ValidationError{Fields: []FieldError{{Field: "body", Message: "trailing data after the JSON object"}}}
	}
	return nil
}

func jsonMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s: want %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// parse decodes and validates an entry, returning its id and canonical JSON.
func parse(k Kind, body []byte, org string) (id string, spec []byte, err error) {
	var v interface{ Validate() error }
	switch k {
	case KindWorkload:
		w := &Workload{}
		if err := decodeStrict(body, w); err != nil {
			return "", nil, err
		}
		if w.Organisation == "" {
			w.Organisation = org
		}
		id, v = w.SPIFFEID, w
	case KindDevice:
		d := &Device{}
		if err := decodeStrict(body, d); err != nil {
			return "", nil, err
		}
		if d.Organisation == "" {
			d.Organisation = org
		}
		id, v = d.ID, d
	default:
		return "", nil, ErrUnknownKind
	}
	if err := v.Validate(); err != nil {
		return "", nil, err
	}
	spec, err = json.Marshal(v)
	return id, spec, err
}

func (s *Service) org(c Caller) (Organisation, error) {
	o, ok := s.orgs[c.Org]
	if !ok {
		return Organisation{}, fmt.Errorf("%w: the caller acts for no organisation", ErrForbidden)
	}
	return o, nil
}

// authorise checks that the caller's organisation owns the id: by its
// namespace, not by a lookup, so a refusal tells nothing about whether
// another organisation registered it.
func (s *Service) authorise(c Caller, k Kind, id string) (Organisation, error) {
	o, err := s.org(c)
	if err != nil {
		return o, err
	}
	if !o.owns(k, id) {
		return o, fmt.Errorf("%w: %s %q is outside organisation %s", ErrForbidden, strings.TrimSuffix(string(k), "s"), id, o.Name)
	}
	return o, nil
}

func specOrg(spec []byte) string {
	var v struct {
		Organisation string `json:"organisation"`
	}
	_ = json.Unmarshal(spec, &v)
	return v.Organisation
}

// Create registers an entry.
func (s *Service) Create(ctx context.Context, c Caller, k Kind, body []byte) (Record, error) {
	id, spec, err := parse(k, body, c.Org)
	if err != nil {
		return Record{}, err
	}
	o, err := s.authorise(c, k, id)
	if err != nil {
		return Record{}, err
	}
	if specOrg(spec) != o.Name {
		return Record{}, fmt.Errorf("%w: organisation %q is not the caller's (%s)", ErrForbidden, specOrg(spec), o.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UTC()
	rec := Record{Kind: k, ID: id, Organisation: o.Name, Generation: 1, Created: now, Updated: now, Spec: spec}
	if err := s.store.Put(ctx, rec, 0); err != nil {
		return Record{}, err
	}
	if err := s.emit(Change{Op: OpCreate, Kind: k, ID: id, Org: o.Name, Who: c.Who, After: &rec}); err != nil {
		return Record{}, s.undo(ctx, err, func() error { return s.store.Delete(ctx, k, id, rec.Generation) })
	}
	return rec, nil
}

// Get returns an entry of the caller's organisation.
func (s *Service) Get(ctx context.Context, c Caller, k Kind, id string) (Record, error) {
	if _, err := s.authorise(c, k, id); err != nil {
		return Record{}, err
	}
	rec, err := s.store.Get(ctx, k, id)
	if err != nil {
		return Record{}, err
	}
	if rec.Organisation != c.Org {
		return Record{}, ErrForbidden
	}
	return rec, nil
}

// Update replaces an entry whose generation is prev (0: 428).
func (s *Service) Update(ctx context.Context, c Caller, k Kind, id string, prev uint64, body []byte) (Record, error) {
	if _, err := s.authorise(c, k, id); err != nil {
		return Record{}, err
	}
	if prev == 0 {
		return Record{}, ErrPreconditionRequired
	}
	bid, spec, err := parse(k, body, c.Org)
	if err != nil {
		return Record{}, err
	}
	if bid != id {
		return Record{}, &ValidationError{Fields: []FieldError{{Field: idField(k), Message: fmt.Sprintf("%q differs from the entry's id %q in the path (an id cannot change: deregister and register)", bid, id)}}}
	}
	if specOrg(spec) != c.Org {
		return Record{}, fmt.Errorf("%w: organisation %q is not the caller's (%s)", ErrForbidden, specOrg(spec), c.Org)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.store.Get(ctx, k, id)
	if err != nil {
		return Record{}, err
	}
	if old.Organisation != c.Org {
		return Record{}, ErrForbidden
	}
	if old.Generation != prev {
		return Record{}, ErrConflict
	}
	rec := old
	rec.Generation++
	rec.Updated = s.now().UTC()
	rec.Spec = spec
	if err := s.store.Put(ctx, rec, prev); err != nil {
		return Record{}, err
	}
	if err := s.emit(Change{Op: OpUpdate, Kind: k, ID: id, Org: c.Org, Who: c.Who, Before: &old, After: &rec}); err != nil {
		return Record{}, s.undo(ctx, err, func() error { return s.store.Put(ctx, old, rec.Generation) })
	}
	return rec, nil
}

// Delete deregisters an entry (prev 0: whatever its generation).
func (s *Service) Delete(ctx context.Context, c Caller, k Kind, id string, prev uint64) (Record, error) {
	if _, err := s.authorise(c, k, id); err != nil {
		return Record{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.store.Get(ctx, k, id)
	if err != nil {
		return Record{}, err
	}
	if old.Organisation != c.Org {
		return Record{}, ErrForbidden
	}
	if prev != 0 && old.Generation != prev {
		return Record{}, ErrConflict
	}
	if err := s.store.Delete(ctx, k, id, old.Generation); err != nil {
		return Record{}, err
	}
	if err := s.emit(Change{Op: OpDelete, Kind: k, ID: id, Org: c.Org, Who: c.Who, Before: &old}); err != nil {
		return Record{}, s.undo(ctx, err, func() error { return s.store.Put(ctx, old, 0) })
	}
	return old, nil
}

func (s *Service) emit(ch Change) error {
	if s.hook == nil {
		return nil
	}
	if err := s.hook(ch); err != nil {
		return fmt.Errorf("registry: recording the change: %w", err)
	}
	return nil
}

// undo reverts a stored change whose recording failed.
func (s *Service) undo(_ context.Context, err error, revert func() error) error {
	if rerr := revert(); rerr != nil {
		return fmt.Errorf("%w (and undoing the change failed: %v)", err, rerr)
	}
	return err
}

func idField(k Kind) string {
	if k == KindWorkload {
		return "spiffe_id"
	}
	return "id"
}

// Filter selects entries in List.
type Filter struct {
	// Prefix of the id.
	Prefix string
	// Class and Vendor of devices.
	Class, Vendor string
	// Labels that must all be present with these values.
	Labels map[string]string
}

// Page is one page of a list.
type Page struct {
	Items []Record `json:"items"`
	// Next is the id to continue after ("" on the last page).
	Next string `json:"next_page_token,omitempty"`
}

// List returns the caller's organisation's entries matching f, sorted by
// id, at most limit after the id after.
func (s *Service) List(ctx context.Context, c Caller, k Kind, f Filter, after string, limit int) (Page, error) {
	if _, err := s.org(c); err != nil {
		return Page{}, err
	}
	p := Page{Items: []Record{}}
	err := s.store.Scan(ctx, k, after, func(r Record) bool {
		if !strings.HasPrefix(r.ID, f.Prefix) {
			// Ids are in order: past the prefix nothing more matches.
			return r.ID < f.Prefix
		}
		if r.Organisation != c.Org || !f.match(r) {
			return true
		}
		if len(p.Items) == limit {
			p.Next = p.Items[len(p.Items)-1].ID
			return false
		}
		p.Items = append(p.Items, r)
		return true
	})
	if err != nil {
		return Page{}, err
	}
	return p, nil
}

func (f Filter) match(r Record) bool {
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
