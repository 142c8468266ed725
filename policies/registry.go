package policies

import (
	"errors"
	"fmt"
)

// ErrRegistryScope: an engine offered as registry-derived content holds
// something the registry may not say (see RegistryScope).
var ErrRegistryScope = errors.New("engine exceeds the registry's scope")

// ReasonRegistryAllow is the reason of a decision a registry DevicePolicy
// allowed (see DecideWith).
const ReasonRegistryAllow = "allowed by registry rule"

// RegistryScope reports whether e may be enforced as registry-derived
// content: DevicePolicy documents, VersionPolicy rules and Revocations
// only. Workload rules, trust domains (their JWT bundles), Issuers and
// the caller's-side tables (upstream version rules, device registries)
// are refused, whatever the image's counts claim: the tables themselves
// are inspected. The error wraps ErrRegistryScope and names what was
// found.
func (e *Engine) RegistryScope() error {
	var found []string
	for i := range e.rules {
		if e.rules[i].dev == nil {
			found = append(found, fmt.Sprintf("workload rule %s", e.rules[i].id))
			break
		}
	}
	if n := len(e.trustDomains); n > 0 {
		found = append(found, fmt.Sprintf("%d trust domains", n))
	}
	if n := len(e.issuers); n > 0 {
		found = append(found, fmt.Sprintf("%d issuers", n))
	}
	if n := len(e.up.rules); n > 0 {
		found = append(found, fmt.Sprintf("%d upstream version rules", n))
	}
	if n := len(e.up.registry); n > 0 {
		found = append(found, fmt.Sprintf("%d device registry entries", n))
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%w: it holds %v (allowed: DevicePolicy, VersionPolicy, Revocations)", ErrRegistryScope, found)
}

// SelectsDevice reports whether any DevicePolicy of e (enforced or
// dry-run) selects the device of r's device token.
func (e *Engine) SelectsDevice(r *Request) bool {
	if r.DeviceID == "" && r.DeviceClass == "" && r.DeviceVendor == "" && r.DeviceModel == "" && r.DeviceFirmware == "" {
		return false
	}
	byID, byClass := e.devLists(r)
	for _, l := range [3][]*cdevice{byID, byClass, e.devAny} {
		for _, c := range l {
			if c.selects(r) {
				return true
			}
		}
	}
	return false
}

// DecideWith decides r with the authors' engine e and the registry's
// engine reg (nil: e alone), which must satisfy RegistryScope. Either
// can deny; the registry can allow only what e leaves to it:
//
//   - e's decision is computed first. When reg is nil, it is the answer.
//   - reg's deny replaces e's allow (or default deny) when it names a rule:
//     a revocation, a failing version rule, a deny rule of a registry
//     DevicePolicy. reg's other refusals (its default deny, a device
//     binding against its own target templates) never deny: the registry
//     knows no workload rules and does not decide which requests target a
//     device.
//   - reg's allow replaces e's deny only when e's deny is a plain default
//     deny (no rule matched, no end-user refinement, no dry-run flag), the
//     request carries a device token with an id and no DevicePolicy of e
//     selects that device. The registry thus decides access only to
//     devices the authors' policies do not mention, and never for a
//     request without a device token.
func (e *Engine) DecideWith(reg *Engine, r *Request, d *Decision) {
	e.Decide(r, d)
	if reg == nil {
		return
	}
	var rd Decision
	reg.Decide(r, &rd)
	switch {
	case !rd.Allow && rd.NumRules > 0:
		if d.Allow || d.DefaultDeny {
			*d = rd // the registry's refusal (revocation, version, deny rule)
		}
	case rd.Allow && d.DefaultDeny && !d.DryRun && r.DeviceID != "" && !e.SelectsDevice(r):
		*d = rd
		d.Reason = ReasonRegistryAllow
	}
}
