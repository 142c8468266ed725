package policies

import "fmt"

// Explanation says how Decide reached a decision: which access rules the
// request reached (their subject and path matched) and why each did or did
// not match, why each candidate DevicePolicy did or did not select the
// device, and which version rules were checked against which version.
type Explanation struct {
	Path           string              `json:"path"` // "ok" or why the path is not canonical
	Caller         string              `json:"caller,omitempty"`
	Peer           string              `json:"peer,omitempty"`
	TargetDevice   string              `json:"targetDevice,omitempty"`
	Write          bool                `json:"write"`
	DevicePolicies []DeviceExplanation `json:"devicePolicies,omitempty"`
	VersionRules   []VersionCheck      `json:"versionRules,omitempty"`
	Rules          []RuleCheck         `json:"rules,omitempty"`
}

// DeviceExplanation is one DevicePolicy that could select the device.
type DeviceExplanation struct {
	Policy   string `json:"policy"`
	Selected bool   `json:"selected"`
	Why      string `json:"why,omitempty"` // why it did not select the device
}

// VersionCheck is one version rule checked against the version its source
// gave.
type VersionCheck struct {
	Rule    string `json:"rule"`
	Version string `json:"version"`
	DryRun  bool   `json:"dryRun,omitempty"`
	Result  string `json:"result"` // "ok" or the reason it failed
}

// RuleCheck is one access rule whose subject and path matched the request.
type RuleCheck struct {
	Rule    string `json:"rule"`
	Effect  string `json:"effect"`
	DryRun  bool   `json:"dryRun,omitempty"`
	Matched bool   `json:"matched"`
	Why     string `json:"why,omitempty"` // why it did not match
}

// tracer records what an explained decision looked at.
type tracer struct {
	e *Engine
	x *Explanation
}

func (t *tracer) rule(st *state, i int32, why int) {
	r := &t.e.rules[i]
	for k := range t.x.Rules {
		if t.x.Rules[k].Rule == r.id {
			return // reached through two patterns
		}
	}
	c := RuleCheck{Rule: r.id, Effect: r.effect.String(), DryRun: r.dryRun, Matched: why == matchOK}
	switch why {
	case matchMethod:
		c.Why = fmt.Sprintf("method %q is not one the rule names", st.req.Method)
	case matchAccess:
		kind := "read"
		if st.write {
			kind = "write"
		}
		c.Why = fmt.Sprintf("the rule is for access: %s and the request is a %s", r.access, kind)
	case matchHeader:
		c.Why = "a header condition does not hold"
	case matchNoUser:
		c.Why = "the rule has end-user conditions and the request carries no verified end-user token"
	case matchUser:
		c.Why = "the end-user token's issuer or a claim condition does not match"
	case matchScope:
		c.Why = fmt.Sprintf("the end-user token does not grant every scope of %q", r.user.scopeText)
	case matchWorkloadWrite:
		c.Why = "a device write is allowed only by a DevicePolicy write rule, never by a WorkloadPolicy allow"
	}
	t.x.Rules = append(t.x.Rules, c)
}

func (t *tracer) version(i int32, s, reason string) {
	v := &t.e.versions[i]
	for _, c := range t.x.VersionRules {
		if c.Rule == v.id {
			return // reached through two identities
		}
	}
	c := VersionCheck{Rule: v.id, Version: s, DryRun: v.dryRun, Result: "ok"}
	if reason != "" {
		c.Result = reason
	}
	t.x.VersionRules = append(t.x.VersionRules, c)
}

func (t *tracer) device(c *cdevice, selected bool) {
	t.x.DevicePolicies = append(t.x.DevicePolicies, DeviceExplanation{Policy: c.name, Selected: selected})
}

// Explain decides req as Decide does and says how. It allocates; use it
// for tooling (`policy eval --explain`), not on the request path.
func (e *Engine) Explain(req *Request, d *Decision) *Explanation {
	x := &Explanation{Path: "ok", Caller: req.SPIFFEID, Peer: req.PeerID}
	if x.Caller == "" {
		x.Caller = req.PeerID
	}
	if err := checkPath(req.Path); err != nil {
		x.Path = err.Error()
	}
	e.decide(req, d, &tracer{e: e, x: x})
	x.TargetDevice, x.Write = d.TargetDevice, d.Write
	// Every device policy that could select the device, also those the
	// decision never reached, with the first selector field that failed.
	seen := map[string]bool{}
	for _, dp := range x.DevicePolicies {
		seen[dp.Policy] = true
	}
	hasToken := req.DeviceID != "" || req.DeviceClass != "" || req.DeviceVendor != "" || req.DeviceModel != "" || req.DeviceFirmware != ""
	for _, c := range e.devices {
		if !seen[c.name] && hasToken {
			x.DevicePolicies = append(x.DevicePolicies, DeviceExplanation{Policy: c.name})
		}
	}
	for k := range x.DevicePolicies {
		dp := &x.DevicePolicies[k]
		if dp.Selected {
			continue
		}
		for _, c := range e.devices {
			if c.name == dp.Policy {
				dp.Why = c.whyNot(req)
				break
			}
		}
		if dp.Why == "" {
			dp.Why = "the decision was reached before device policies were evaluated (" + d.Reason + ")"
		}
	}
	return x
}

// whyNot names the first selector field that does not match r ("" when
// the policy selects r).
func (c *cdevice) whyNot(r *Request) string {
	if c.ids != nil {
		if !hasID(c.ids, r.DeviceID) {
			return fmt.Sprintf("device id %q is not one of the policy's ids", r.DeviceID)
		}
	}
	switch {
	case len(c.classes) > 0 && !in(c.classes, r.DeviceClass):
		return fmt.Sprintf("device class %q is not in %q", r.DeviceClass, c.classes)
	case len(c.vendors) > 0 && !in(c.vendors, r.DeviceVendor):
		return fmt.Sprintf("device vendor %q is not in %q", r.DeviceVendor, c.vendors)
	case len(c.models) > 0 && !in(c.models, r.DeviceModel):
		return fmt.Sprintf("device model %q is not in %q", r.DeviceModel, c.models)
	}
	if c.hasFW {
		v, ok := parseVersion(r.DeviceFirmware)
		if !ok {
			return fmt.Sprintf("device firmware %q is not a valid semantic version", r.DeviceFirmware)
		}
		if !c.firmware.contains(v) {
			return fmt.Sprintf("device firmware %q is outside the policy's firmware range", r.DeviceFirmware)
		}
	}
	return ""
}
