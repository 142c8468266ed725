//go:build !wasip1

package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a policy file; a Warning does not make the set
// invalid.
type Error struct {
	Pos     Pos
	Msg     string
	Warning bool
}

func (e *Error) Error() string {
	if e.Warning {
		return e.Pos.String() + ": warning: " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// ErrorList is every problem found, sorted by position.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// err returns nil for an empty list so callers can return it as error.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	l.sort()
	return l
}

// Load parses and checks policy files (name → content) and returns the set,
// or an ErrorList with every problem found.
func Load(files map[string][]byte) (*Set, error) { return LoadProgress(files, nil) }

// LoadProgress is Load reporting progress (nil: none).
func LoadProgress(files map[string][]byte, progress Progress) (*Set, error) {
	s, errs := ParseProgress(files, progress)
	errs = append(errs, CheckProgress(s, progress)...)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// CompileFiles loads, checks and compiles policy files in one step (what a
// verified bundle's files go through).
func CompileFiles(files map[string][]byte) (*Engine, error) {
	s, err := Load(files)
	if err != nil {
		return nil, err
	}
	return Compile(s)
}

// ReadPaths reads policy files: each path is a .yaml/.yml file or a
// directory searched recursively. Keys are the paths as given (joined).
func ReadPaths(paths ...string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			ext := filepath.Ext(path)
			if path != p && ext != ".yaml" && ext != ".yml" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files[path] = b
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading policies: %w", err)
		}
	}
	if len(files) == 0 {
		return nil, errors.New("no policy files (.yaml, .yml) found")
	}
	return files, nil
}

// Parse decodes policy files without the semantic checks. Files are
// processed in name order so rule order is deterministic.
func Parse(files map[string][]byte) (*Set, ErrorList) { return ParseProgress(files, nil) }

// ParseProgress is Parse reporting progress per file (nil: none).
func ParseProgress(files map[string][]byte, progress Progress) (*Set, ErrorList) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	p := &parser{set: &Set{}}
	for i, n := range names {
		if progress != nil {
			progress("parse", i, len(names))
		}
		p.file(n, files[n])
	}
	p.errs.sort()
	return p.set, p.errs
}

type parser struct {
	set  *Set
	errs ErrorList
	name string
}

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.name, Line: n.Line, Col: n.Column} }

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, &Error{Pos: p.pos(n), Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) file(name string, data []byte) {
	p.name = name
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			return
		}
		if err != nil {
			line := 1
			msg := err.Error()
			// yaml.v3 reports "yaml: line N: msg".
			if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
				if i := strings.Index(rest, ":"); i > 0 {
					if l, e := strconv.Atoi(rest[:i]); e == nil {
						line, msg = l, strings.TrimSpace(rest[i+1:])
					}
				}
			}
			p.errs = append(p.errs, &Error{Pos: Pos{File: name, Line: line, Col: 1}, Msg: "invalid YAML: " + msg})
			return
		}
		if len(doc.Content) == 0 {
			continue
		}
		p.document(doc.Content[0])
	}
}

// fields checks n is a mapping with only the allowed keys and returns them.
func (p *parser) fields(n *yaml.Node, what string, allowed ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping", what)
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !contains(allowed, k.Value) {
			p.errorf(k, "unknown field %q in %s (allowed: %s)", k.Value, what, strings.Join(allowed, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errorf(k, "duplicate field %q in %s", k.Value, what)
			continue
		}
		out[k.Value] = v
	}
	return out
}

func (p *parser) require(f map[string]*yaml.Node, parent *yaml.Node, what string, keys ...string) {
	for _, k := range keys {
		if _, ok := f[k]; !ok {
			p.errorf(parent, "%s: missing required field %q", what, k)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) str(n *yaml.Node, what string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, "%s must be a string", what)
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	if n == nil {
		return false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.errorf(n, "%s must be true or false", what)
		return false
	}
	return n.Value == "true"
}

func (p *parser) seq(n *yaml.Node, what string) []*yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s must be a list", what)
		return nil
	}
	return n.Content
}

func (p *parser) strs(n *yaml.Node, what string) []string {
	var out []string
	for _, e := range p.seq(n, what) {
		if s := p.str(e, what+" entry"); s != "" {
			out = append(out, s)
		} else if e.Kind == yaml.ScalarNode {
			p.errorf(e, "%s entry must not be empty", what)
		}
	}
	return out
}

func (p *parser) patterns(n *yaml.Node, what string) []Pattern {
	var out []Pattern
	for _, e := range p.seq(n, what) {
		s := p.str(e, what+" entry")
		if s == "" {
			if e.Kind == yaml.ScalarNode {
				p.errorf(e, "%s entry must not be empty", what)
			}
			continue
		}
		out = append(out, Pattern{Text: s, Pos: p.pos(e)})
	}
	return out
}

func (p *parser) meta(n *yaml.Node) Meta {
	f := p.fields(n, "metadata", "name", "dryRun")
	p.require(f, n, "metadata", "name")
	m := Meta{Name: p.str(f["name"], "metadata.name"), DryRun: p.boolean(f["dryRun"], "metadata.dryRun"), Pos: p.pos(n)}
	if f["name"] != nil && m.Name == "" {
		p.errorf(f["name"], "metadata.name must not be empty")
	}
	if strings.ContainsAny(m.Name, "/ \t") {
		p.errorf(f["name"], "metadata.name %q must not contain '/' or spaces", m.Name)
	}
	return m
}

func (p *parser) document(n *yaml.Node) {
	f := p.fields(n, "document", "apiVersion", "kind", "metadata", "spec")
	p.require(f, n, "document", "apiVersion", "kind", "metadata")
	if v := f["apiVersion"]; v != nil {
		if s := p.str(v, "apiVersion"); s != APIVersion && s != "" {
			p.errorf(v, "unsupported apiVersion %q (want %s)", s, APIVersion)
		}
	}
	if f["kind"] == nil || f["metadata"] == nil {
		return
	}
	kind := p.str(f["kind"], "kind")
	meta := p.meta(f["metadata"])
	spec := f["spec"]
	if spec == nil {
		p.errorf(n, "document: missing required field %q", "spec")
		return
	}
	switch kind {
	case KindWorkloadPolicy:
		w := &WorkloadPolicy{Meta: meta}
		sf := p.fields(spec, "WorkloadPolicy spec", "rules")
		for _, r := range p.seq(sf["rules"], "rules") {
			w.Rules = append(w.Rules, p.accessRule(r, meta, false))
		}
		p.set.Workloads = append(p.set.Workloads, w)
	case KindDevicePolicy:
		p.devicePolicy(spec, meta)
	case KindVersionPolicy:
		v := &VersionPolicy{Meta: meta}
		sf := p.fields(spec, "VersionPolicy spec", "rules")
		for _, r := range p.seq(sf["rules"], "rules") {
			v.Rules = append(v.Rules, p.versionRule(r, meta))
		}
		p.set.Versions = append(p.set.Versions, v)
	case KindRevocations:
		sf := p.fields(spec, "Revocations spec", "spiffeIDs", "deviceIDs", "jtis")
		r := &Revocations{Meta: meta, SPIFFEIDs: p.patterns(sf["spiffeIDs"], "spiffeIDs"),
			DeviceIDs: p.patterns(sf["deviceIDs"], "deviceIDs"), JTIs: p.patterns(sf["jtis"], "jtis")}
		p.set.Revocations = append(p.set.Revocations, r)
	case KindTrustDomain:
		sf := p.fields(spec, "TrustDomain spec", "jwks")
		td := &TrustDomain{Meta: meta}
		if j := sf["jwks"]; j != nil {
			td.JWKS = p.jwks(j)
		}
		p.set.TrustDomains = append(p.set.TrustDomains, td)
	case KindIssuer:
		p.issuer(spec, meta)
	case KindPolicyTest:
		p.policyTest(spec, meta)
	case KindUpstreamVersionPolicy:
		p.upstreamPolicy(spec, meta)
	case KindDeviceRegistry:
		p.deviceRegistry(spec, meta)
	case "":
	default:
		p.errorf(f["kind"], "unknown kind %q (want one of %s, %s, %s, %s, %s, %s, %s, %s, %s)", kind,
			KindWorkloadPolicy, KindVersionPolicy, KindDevicePolicy, KindRevocations, KindTrustDomain, KindIssuer, KindPolicyTest,
			KindUpstreamVersionPolicy, KindDeviceRegistry)
	}
}

// jwks accepts a JSON string or a YAML mapping and stores canonical JSON.
func (p *parser) jwks(n *yaml.Node) []byte {
	var v any
	if n.Kind == yaml.ScalarNode {
		if err := json.Unmarshal([]byte(n.Value), &v); err != nil {
			p.errorf(n, "jwks: invalid JSON: %v", err)
			return nil
		}
	} else if err := n.Decode(&v); err != nil {
		p.errorf(n, "jwks: %v", err)
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		p.errorf(n, "jwks must be a JWK set object with \"keys\"")
		return nil
	}
	if _, ok := m["keys"].([]any); !ok {
		p.errorf(n, "jwks must have a \"keys\" list")
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		p.errorf(n, "jwks: %v", err)
		return nil
	}
	return b
}

var accessFields = []string{"name", "id", "effect", "dryRun", "audit", "subjects", "trustDomains", "paths", "methods", "headers", "rateLimit",
	"issuers", "scopes", "claims"}

func (p *parser) accessRule(n *yaml.Node, meta Meta, device bool) *AccessRule {
	allowed := accessFields
	if device {
		allowed = append(append([]string{}, accessFields...), "access")
	}
	f := p.fields(n, "rule", allowed...)
	p.require(f, n, "rule", "name", "effect")
	r := &AccessRule{Name: p.str(f["name"], "name"), ID: p.str(f["id"], "id"), Pos: p.pos(n),
		DryRun: meta.DryRun || p.boolean(f["dryRun"], "dryRun"), Audit: p.boolean(f["audit"], "audit"),
		Subjects: p.patterns(f["subjects"], "subjects"), TrustDomains: p.patterns(f["trustDomains"], "trustDomains"),
		Paths: p.patterns(f["paths"], "paths")}
	if r.ID == "" {
		r.ID = meta.Name + "/" + r.Name
	}
	if e := f["effect"]; e != nil {
		switch s := p.str(e, "effect"); s {
		case "allow":
			r.Effect = Allow
		case "deny":
			r.Effect = Deny
		default:
			p.errorf(e, "effect must be allow or deny, not %q", s)
		}
	}
	for _, m := range p.seq(f["methods"], "methods") {
		s := strings.ToUpper(p.str(m, "method"))
		if methodBit(s) == 0 {
			p.errorf(m, "unknown HTTP method %q", m.Value)
			continue
		}
		r.Methods = append(r.Methods, s)
	}
	for _, h := range p.seq(f["headers"], "headers") {
		hf := p.fields(h, "header condition", "name", "equals", "present")
		p.require(hf, h, "header condition", "name")
		hm := HeaderMatch{Name: strings.ToLower(p.str(hf["name"], "header name")), Pos: p.pos(h)}
		if hf["equals"] != nil {
			hm.Equals = p.str(hf["equals"], "equals")
		}
		if hf["present"] != nil {
			hm.Present = p.boolean(hf["present"], "present")
			if !hm.Present {
				p.errorf(hf["present"], "present: false is not supported; use a deny rule with present: true")
			}
		}
		if (hf["equals"] == nil) == (hf["present"] == nil) {
			p.errorf(h, "header condition needs exactly one of equals or present")
		}
		r.Headers = append(r.Headers, hm)
	}
	r.Issuers = p.patterns(f["issuers"], "issuers")
	for _, is := range r.Issuers {
		if !issuerURL(is.Text) {
			p.errs = append(p.errs, &Error{Pos: is.Pos, Msg: fmt.Sprintf("issuers: %q is not an https URL without query or fragment", is.Text)})
		}
	}
	for _, sc := range p.seq(f["scopes"], "scopes") {
		v := p.str(sc, "scope")
		if !scopeToken(v) {
			p.errorf(sc, "scope %q is not an RFC 6749 scope-token (printable ASCII without space, quote or backslash)", v)
			continue
		}
		if contains(r.Scopes, v) {
			p.errorf(sc, "scope %q given twice", v)
			continue
		}
		r.Scopes = append(r.Scopes, v)
	}
	for _, c := range p.seq(f["claims"], "claims") {
		r.Claims = append(r.Claims, p.claimCondition(c))
	}
	if rl := f["rateLimit"]; rl != nil {
		r.RateLimit = p.callerLimit(rl)
		if r.Effect == Deny {
			p.errorf(rl, "rateLimit applies to allow rules only (a deny rule never lets a request through)")
		}
	}
	if a := f["access"]; a != nil {
		switch s := p.str(a, "access"); s {
		case "read":
			r.Access = AccessRead
		case "write":
			r.Access = AccessWrite
		default:
			p.errorf(a, "access must be read or write, not %q", s)
		}
	} else if device {
		p.errorf(n, "rule: missing required field %q", "access")
	}
	return r
}

func (p *parser) versionRule(n *yaml.Node, meta Meta) *VersionRule {
	f := p.fields(n, "version rule", "name", "id", "dryRun", "subjects", "trustDomains", "deviceClasses", "source", "allowed", "denied")
	p.require(f, n, "version rule", "name", "source")
	r := &VersionRule{Name: p.str(f["name"], "name"), ID: p.str(f["id"], "id"), Pos: p.pos(n),
		DryRun: meta.DryRun || p.boolean(f["dryRun"], "dryRun"), Subjects: p.patterns(f["subjects"], "subjects"),
		TrustDomains: p.patterns(f["trustDomains"], "trustDomains"), DeviceClasses: p.strs(f["deviceClasses"], "deviceClasses"),
		Denied: p.patterns(f["denied"], "denied")}
	if r.ID == "" {
		r.ID = meta.Name + "/" + r.Name
	}
	if a := f["allowed"]; a != nil {
		r.Allowed = p.allowed(a)
	}
	if s := f["source"]; s != nil {
		sf := p.fields(s, "version source", "jwtClaim", "deviceFirmware", "peerLabel", "header")
		r.Source = VersionSource{JWTClaim: p.str(sf["jwtClaim"], "jwtClaim"), Header: strings.ToLower(p.str(sf["header"], "header")),
			DeviceFirmware: p.boolean(sf["deviceFirmware"], "deviceFirmware"), Pos: p.pos(s)}
		if l := sf["peerLabel"]; l != nil {
			if v := p.str(l, "peerLabel"); v != "version" {
				p.errorf(l, "peerLabel must be \"version\" (the Istio peer version label)")
			}
			r.Source.PeerLabel = true
		}
		if len(sf) != 1 {
			p.errorf(s, "version source needs exactly one of jwtClaim, deviceFirmware, peerLabel, header")
		}
	}
	if len(r.Subjects) == 0 && len(r.TrustDomains) == 0 && len(r.DeviceClasses) == 0 {
		p.errorf(n, "version rule %q must name subjects, trustDomains or deviceClasses", r.Name)
	}
	return r
}

// allowed reads a version rule's allowed: one range, or a non-empty list
// of ranges and {range, until} entries.
func (p *parser) allowed(n *yaml.Node) []AllowedRange {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		if s := p.str(n, "allowed"); s != "" {
			return []AllowedRange{{Range: s, Pos: p.pos(n)}}
		} else if n.Kind == yaml.ScalarNode {
			p.errorf(n, "allowed must not be empty (omit it to allow any version)")
		}
		return nil
	}
	if len(n.Content) == 0 {
		p.errorf(n, "allowed must not be an empty list (omit it to allow any version)")
		return nil
	}
	var out []AllowedRange
	for _, e := range n.Content {
		if e.Kind == yaml.AliasNode {
			e = e.Alias
		}
		if e.Kind != yaml.MappingNode {
			if s := p.str(e, "allowed entry"); s != "" {
				out = append(out, AllowedRange{Range: s, Pos: p.pos(e)})
			} else if e.Kind == yaml.ScalarNode {
				p.errorf(e, "allowed entry must not be empty")
			}
			continue
		}
		ef := p.fields(e, "allowed entry", "range", "until")
		p.require(ef, e, "allowed entry", "range")
		a := AllowedRange{Pos: p.pos(e)}
		if rn := ef["range"]; rn != nil {
			a.Range, a.Pos = p.str(rn, "range"), p.pos(rn)
			if a.Range == "" && rn.Kind == yaml.ScalarNode {
				p.errorf(rn, "range must not be empty")
			}
		}
		if un := ef["until"]; un != nil {
			a.UntilPos = p.pos(un)
			if s := p.str(un, "until"); s != "" || un.Kind == yaml.ScalarNode {
				t, err := ParseInstant(s)
				if err != nil {
					p.errorf(un, "until %q: %v", s, err)
				}
				a.Until = t
			}
		}
		if a.Range != "" {
			out = append(out, a)
		}
	}
	return out
}

// callerLimit reads an access rule's rateLimit.
func (p *parser) callerLimit(n *yaml.Node) *CallerRateLimit {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "rateLimit must be a mapping {per, requests, period[, burst]}")
		return nil
	}
	f := p.fields(n, "rateLimit", "per", "requests", "period", "burst")
	p.require(f, n, "rateLimit", "per", "requests", "period")
	l := &CallerRateLimit{Pos: p.pos(n)}
	if v := f["per"]; v != nil {
		switch l.Per = p.str(v, "per"); l.Per {
		case PerWorkload, PerDevice, PerUser:
		default:
			p.errorf(v, "per must be workload, device or user, not %q", l.Per)
		}
	}
	count := func(k string) uint32 {
		v := f[k]
		if v == nil {
			return 0
		}
		x, err := strconv.ParseUint(v.Value, 10, 32)
		if err != nil || v.Kind != yaml.ScalarNode || v.Tag != "!!int" || x == 0 || x > maxLimitRequests || v.Value[0] == '0' {
			p.errorf(v, "%s must be an integer from 1 to %d", k, maxLimitRequests)
			return 0
		}
		return uint32(x)
	}
	l.Requests, l.Burst = count("requests"), count("burst")
	if f["burst"] == nil {
		l.Burst = l.Requests
	}
	if v := f["period"]; v != nil && v.Kind != yaml.ScalarNode {
		p.errorf(v, "period must be a string")
	} else if v != nil {
		d, err := parsePeriod(v.Value)
		if err != nil {
			p.errorf(v, "period: %v", err)
		}
		l.Period = d
	}
	return l
}

// parsePeriod reads a rate limit period: a positive integer without
// leading zeros and one unit ms, s, m or h, from 1ms to 24h.
func parsePeriod(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a period like 500ms, 30s, 1m or 1h (an integer and one unit: ms, s, m, h) from 1ms to 24h", s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || s[0] == '0' || i > 9 {
		return 0, bad
	}
	n, _ := strconv.Atoi(s[:i])
	unit := map[string]time.Duration{"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[s[i:]]
	if unit == 0 {
		return 0, bad
	}
	d := time.Duration(n) * unit
	if d < minLimitPeriod || d > maxLimitPeriod {
		return 0, bad
	}
	return d, nil
}

func (p *parser) devicePolicy(spec *yaml.Node, meta Meta) {
	d := &DevicePolicy{Meta: meta}
	sf := p.fields(spec, "DevicePolicy spec", "devices", "target", "controlPaths", "writeRateLimit", "rules")
	p.require(sf, spec, "DevicePolicy spec", "devices")
	if dn := sf["devices"]; dn != nil {
		df := p.fields(dn, "devices", "ids", "classes", "vendors", "models", "firmware")
		d.Devices = DeviceSelector{Classes: p.strs(df["classes"], "classes"), Vendors: p.strs(df["vendors"], "vendors"),
			Models: p.strs(df["models"], "models"), Firmware: p.str(df["firmware"], "firmware"), Pos: p.pos(dn)}
		for _, id := range p.patterns(df["ids"], "ids") {
			d.Devices.IDs = append(d.Devices.IDs, asciiLower(id.Text))
			if len(id.Text) > MaxDeviceIDLen {
				p.errs = append(p.errs, &Error{Pos: id.Pos, Msg: fmt.Sprintf("device id %q is longer than %d bytes", id.Text, MaxDeviceIDLen)})
			}
			if looksLFDI(id.Text) != lfdiOK {
				if looksLFDI(id.Text) == lfdiBad {
					p.errs = append(p.errs, &Error{Pos: id.Pos, Msg: fmt.Sprintf("device id %q looks like an IEEE 2030.5 LFDI but is not 40 hex characters", id.Text)})
				}
			}
		}
		if len(df) == 0 {
			p.errorf(dn, "devices must select something (ids, classes, vendors, models or firmware)")
		}
	}
	if tn := sf["target"]; tn != nil {
		tf := p.fields(tn, "target", "paths", "header")
		t := &DeviceTarget{Paths: p.patterns(tf["paths"], "target.paths"), Pos: p.pos(tn)}
		if h := tf["header"]; h != nil {
			t.Header = strings.ToLower(p.str(h, "target.header"))
			if !validHeaderName(t.Header) {
				p.errorf(h, "target.header %q is not a valid HTTP header name", t.Header)
			}
		}
		if len(t.Paths) == 0 && t.Header == "" {
			p.errorf(tn, "target needs paths (templates with one {param} segment naming the device) or a header")
		}
		d.Target = t
	}
	d.ControlPaths = p.patterns(sf["controlPaths"], "controlPaths")
	if rl := sf["writeRateLimit"]; rl != nil {
		rf := p.fields(rl, "writeRateLimit", "perSecond", "burst")
		p.require(rf, rl, "writeRateLimit", "perSecond", "burst")
		lim := &RateLimit{}
		if v := rf["perSecond"]; v != nil {
			x, err := strconv.ParseFloat(v.Value, 64)
			if err != nil || x <= 0 || v.Kind != yaml.ScalarNode {
				p.errorf(v, "perSecond must be a positive number")
			}
			lim.PerSecond = x
		}
		if v := rf["burst"]; v != nil {
			x, err := strconv.ParseUint(v.Value, 10, 32)
			if err != nil || x == 0 || v.Kind != yaml.ScalarNode {
				p.errorf(v, "burst must be a positive integer")
			}
			lim.Burst = uint32(x)
		}
		d.WriteLimit = lim
	}
	for _, r := range p.seq(sf["rules"], "rules") {
		d.Rules = append(d.Rules, p.accessRule(r, meta, true))
	}
	p.set.Devices = append(p.set.Devices, d)
}

const (
	lfdiNotLFDI = iota
	lfdiOK
	lfdiBad
)

// looksLFDI classifies ids that are all hex of length ≥ 32: those must be
// exactly 40 chars (an LFDI); other ids are free-form.
func looksLFDI(s string) int {
	if len(s) < 32 {
		return lfdiNotLFDI
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return lfdiNotLFDI
		}
	}
	if len(s) == 40 {
		return lfdiOK
	}
	return lfdiBad
}

func (p *parser) policyTest(spec *yaml.Node, meta Meta) {
	t := &PolicyTest{Meta: meta}
	sf := p.fields(spec, "PolicyTest spec", "cases")
	for _, c := range p.seq(sf["cases"], "cases") {
		cf := p.fields(c, "test case", "name", "input", "expect")
		p.require(cf, c, "test case", "name", "input", "expect")
		tc := &TestCase{Name: p.str(cf["name"], "name"), Pos: p.pos(c)}
		if in := cf["input"]; in != nil {
			tc.Input = p.input(in)
		}
		if ex := cf["expect"]; ex != nil {
			ef := p.fields(ex, "expect", "allow", "rule", "reason", "audit", "dryRun", "dryRunRule", "write", "rateLimit", "callerLimit", "dryRunCallerLimit")
			b := func(k string) *bool {
				if ef[k] == nil {
					return nil
				}
				v := p.boolean(ef[k], k)
				return &v
			}
			tc.Expect.Allow, tc.Expect.Audit, tc.Expect.DryRun, tc.Expect.Write = b("allow"), b("audit"), b("dryRun"), b("write")
			str := func(k string) *string {
				if ef[k] == nil {
					return nil
				}
				s := p.str(ef[k], k)
				return &s
			}
			tc.Expect.Rule, tc.Expect.Reason, tc.Expect.DryRunRule = str("rule"), str("reason"), str("dryRunRule")
			tc.Expect.CallerLimit, tc.Expect.DryRunCallerLimit = str("callerLimit"), str("dryRunCallerLimit")
			if rl := ef["rateLimit"]; rl != nil {
				rf := p.fields(rl, "rateLimit", "perSecond", "burst")
				lim := &RateLimit{}
				lim.PerSecond, _ = strconv.ParseFloat(p.str(rf["perSecond"], "perSecond"), 64)
				b, _ := strconv.ParseUint(p.str(rf["burst"], "burst"), 10, 32)
				lim.Burst = uint32(b)
				tc.Expect.RateLimit = lim
			}
		}
		t.Cases = append(t.Cases, tc)
	}
	p.set.Tests = append(p.set.Tests, t)
}

// strMap reads a mapping of strings; with fold (header names) two names
// equal but for case are an error, as two equal names always are.
func (p *parser) strMap(n *yaml.Node, what string, fold bool) map[string]string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping", what)
		return nil
	}
	m := map[string]string{}
	seen := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := p.str(n.Content[i], what+" name")
		key := k
		if fold {
			key = strings.ToLower(k)
		}
		if prev, dup := seen[key]; dup {
			p.errorf(n.Content[i], "%s %q given twice (as %q and %q)", what, k, prev, k)
			continue
		}
		seen[key] = k
		m[k] = p.str(n.Content[i+1], what+" value")
	}
	return m
}

// validHeaderName reports whether s is an RFC 9110 token (a header name).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func (p *parser) input(n *yaml.Node) Input {
	f := p.fields(n, "input", "spiffeID", "peerID", "forwarded", "trustDomain", "jti", "claims", "device", "targetDevice",
		"peerVersion", "method", "path", "headers", "user", "now")
	in := Input{SPIFFEID: p.str(f["spiffeID"], "spiffeID"), PeerID: p.str(f["peerID"], "peerID"),
		Forwarded: p.boolean(f["forwarded"], "forwarded"), TrustDomain: p.str(f["trustDomain"], "trustDomain"),
		JTI: p.str(f["jti"], "jti"), Claims: p.strMap(f["claims"], "claims", false), Target: p.str(f["targetDevice"], "targetDevice"),
		PeerVersion: p.str(f["peerVersion"], "peerVersion"), Method: p.str(f["method"], "method"), Path: p.str(f["path"], "path"),
		Headers: p.strMap(f["headers"], "headers", true)}
	p.require(f, n, "input", "method", "path")
	if u := f["user"]; u != nil {
		in.User = p.userClaims(u)
	}
	if nn := f["now"]; nn != nil {
		in.Now = p.str(nn, "now")
		if _, err := ParseInstant(in.Now); err != nil {
			p.errorf(nn, "now %q: %v", in.Now, err)
		}
	}
	if f["path"] != nil && !strings.HasPrefix(in.Path, "/") {
		p.errorf(f["path"], "input path %q must start with /", in.Path)
	}
	if d := f["device"]; d != nil {
		df := p.fields(d, "device", "id", "class", "vendor", "model", "firmware")
		in.Device = &InputDevice{ID: p.str(df["id"], "id"), Class: p.str(df["class"], "class"), Vendor: p.str(df["vendor"], "vendor"),
			Model: p.str(df["model"], "model"), Firmware: p.str(df["firmware"], "firmware")}
	}
	return in
}
