package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/internal/devca"
)

// Device is what a device's attestation token claims.
type Device struct {
	ID, Class, Vendor, Firmware string
}

// Step is one scripted request.
type Step struct {
	// Caller is the workload (SPIFFE ID path in grid.example) presenting an
	// X509-SVID; Version, when set, is carried as the swversion claim of a
	// JWT-SVID for the same workload.
	Caller  string
	Version string
	// Token, when set, is the SPIFFE ID path of the JWT-SVID sent instead
	// of the caller's own (a captured token); Audience, when set, replaces
	// the proxy's SPIFFE ID as its audience; Second adds a second
	// Authorization header with a JWT-SVID for this path.
	Token, Audience, Second string
	// URISANs, when set, replace the caller's X509-SVID with a certificate
	// from the same CA carrying exactly these URI SANs, which is no X509-SVID:
	// the proxy hands the guard the first one as presented, as Envoy does.
	URISANs []string
	// BeforeGuard marks a request the proxy refuses before the guard runs
	// (no decision record).
	BeforeGuard bool
	// Outbound sends the request through the caller's own outbound proxy
	// (a guard with direction outbound in front of the inverter control
	// API), as the caller's application would: plain HTTP, no credentials.
	Outbound bool
	// Device, when set, is the target device's attestation token (signed by
	// the device issuer) sent in x-device-token.
	Device *Device
	Method string
	Path   string
	Body   string
	// Want is the expected decision: allow, deny or dry-run; WantStatus the
	// HTTP status the caller sees.
	Want       string
	WantStatus int
	Note       string
}

// Devices of the scenario (what their attestation tokens claim).
var (
	inv42  = &Device{ID: "inv-0042", Class: "inverter", Vendor: "voltwerk", Firmware: "3.2.0"}
	inv7   = &Device{ID: "inv-0007", Class: "inverter", Vendor: "sunbridge", Firmware: "2.9.9"}
	inv99  = &Device{ID: "inv-0099", Class: "inverter", Vendor: "voltwerk", Firmware: "3.1.4"}
	reader = "/ns/metering/sa/meter-reader"
	bill   = "/ns/billing/sa/billing"
	ctl    = "/ns/der/sa/controller"
)

// Steps before the policy change.
var Steps = []Step{
	{Caller: reader, Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "allow", WantStatus: 200, Note: "meter reader reads meter data"},
	{Caller: bill, Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "dry-run", WantStatus: 200, Note: "trial deny rule hit in dry-run: allowed, recorded"},
	{Caller: bill, Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 4000}`, Want: "deny", WantStatus: 403, Note: "billing may not write to an inverter"},
	{Caller: ctl, Version: "2.3.1", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 4200}`, Want: "allow", WantStatus: 200, Note: "approved controller 2.3.1 writes a setpoint (audited)"},
	{Caller: ctl, Version: "2.4.1", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 4300}`, Want: "deny", WantStatus: 403, Note: "deny-listed controller build 2.4.1"},
	{Caller: ctl, Version: "1.9.0", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/control", Body: `{"command": "curtail"}`, Want: "deny", WantStatus: 403, Note: "legacy controller 1.9 below the approved range"},
	{Caller: reader, Device: inv7, Method: "GET", Path: "/v1/inverters/inv-0007/status", Want: "deny", WantStatus: 403, Note: "inverter firmware 2.9.9 is blocked"},
	{Caller: "/ns/scada/sa/legacy-scada", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "deny", WantStatus: 403, Note: "revoked (deregistered) workload"},
	{Caller: ctl, Version: "2.3.1", Device: inv99, Method: "POST", Path: "/v1/inverters/inv-0099/setpoint", Body: `{"watts": 1000}`, Want: "allow", WantStatus: 200, Note: "write 1 within the device's burst"},
	{Caller: ctl, Version: "2.3.1", Device: inv99, Method: "POST", Path: "/v1/inverters/inv-0099/setpoint", Body: `{"watts": 1100}`, Want: "allow", WantStatus: 200, Note: "write 2 within the device's burst"},
	{Caller: ctl, Version: "2.3.1", Device: inv99, Method: "POST", Path: "/v1/inverters/inv-0099/setpoint", Body: `{"watts": 1200}`, Want: "deny", WantStatus: 429, Note: "write 3 exceeds the per-device rate limit"},
	{Caller: ctl, Version: "2.3.1", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0099/setpoint", Body: `{"watts": 1300}`, Want: "deny", WantStatus: 403, Note: "inv-0042's token cannot write inv-0099 (nor spend its rate limit)"},
}

// StepsAfterChange run once revision 2 (the trialled rule enforced) decides.
var StepsAfterChange = []Step{
	{Caller: bill, Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "deny", WantStatus: 403, Note: "revision 2 enforces the trialled deny"},
	{Caller: reader, Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "allow", WantStatus: 200, Note: "meter reader unaffected"},
	{Caller: "/ns/metering/sa/meter%2Dreader", URISANs: []string{"spiffe://grid.example/ns/metering/sa/meter%2Dreader"}, Method: "GET", Path: "/v1/meters/mtr-0042/readings",
		Want: "deny", WantStatus: 403, Note: "forged peer: a percent-encoded URI SAN is no SPIFFE ID (decoded it would be the reader); the guard judges it as presented"},
	{Caller: reader + " +controller", URISANs: []string{"spiffe://grid.example" + reader, "spiffe://grid.example" + ctl}, Method: "GET", Path: "/v1/meters/mtr-0042/readings",
		Want: "deny", WantStatus: 403, BeforeGuard: true, Note: "two URI SANs: refused ahead of the guard, as the rendered RBAC filter does"},
	// Attackers (issue 13).
	{Caller: bill, Token: ctl, Version: "2.3.1", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 9000}`,
		Want: "deny", WantStatus: 403, Note: "billing's X509-SVID with a captured controller JWT-SVID: two callers, refused"},
	{Caller: "/ns/scada/sa/legacy-scada", Token: reader, Method: "GET", Path: "/v1/meters/mtr-0042/readings",
		Want: "deny", WantStatus: 403, Note: "revoked legacy-scada peer with the meter reader's JWT-SVID"},
	{Caller: ctl, Version: "2.3.1", Audience: "spiffe://grid.example/ns/billing/sa/billing-api", Device: inv42, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 9100}`,
		Want: "deny", WantStatus: 403, Note: "controller JWT-SVID issued for another service (per-service audience)"},
	{Caller: reader, Token: reader, Second: ctl, Method: "GET", Path: "/v1/meters/mtr-0042/readings",
		Want: "deny", WantStatus: 401, Note: "two Authorization headers: ambiguous credentials"},
	{Caller: reader, Method: "GET", Path: "/v1/meters/mtr-0042/..%2F..%2Finverters%2Finv-0042/readings",
		Want: "deny", WantStatus: 400, Note: "..%2F path: not canonical, refused"},
}

// StepsOutbound run last, through the controller's outbound guard: the
// caller's side refuses to send a control signal to an inverter whose
// registered firmware is not approved, before the request leaves.
var StepsOutbound = []Step{
	{Caller: ctl, Outbound: true, Method: "POST", Path: "/v1/inverters/inv-0042/setpoint", Body: `{"watts": 4100}`, Want: "allow", WantStatus: 200,
		Note: "controller's outbound guard: inv-0042 runs approved firmware 3.2.0 (device registry)"},
	{Caller: ctl, Outbound: true, Method: "POST", Path: "/v1/inverters/inv-0007/control", Body: `{"command": "curtail"}`, Want: "deny", WantStatus: 403,
		Note: "controller's outbound guard refuses a control signal to inv-0007 (registered firmware 2.9.9): it never leaves"},
}

// do runs one step and records what the caller saw.
func (e *env) do(ctx context.Context, s Step) (Outcome, error) {
	o := Outcome{Step: s}
	var body io.Reader
	if s.Body != "" {
		body = strings.NewReader(s.Body)
	}
	base := e.proxyURL
	if s.Outbound {
		base = e.outboundURL
	}
	req, err := http.NewRequestWithContext(ctx, s.Method, base+s.Path, body)
	if err != nil {
		return o, err
	}
	if s.Body != "" {
		req.Header.Set("content-type", "application/json")
	}
	if s.Version != "" || s.Token != "" {
		sub, aud := s.Caller, ProxyID
		if s.Token != "" {
			sub = s.Token
		}
		if s.Audience != "" {
			aud = s.Audience
		}
		claims := map[string]any{}
		if s.Version != "" {
			claims["swversion"] = s.Version
		}
		tok, err := e.ca.IssueJWTSVID(spiffeid.RequireFromPath(TrustDomain, sub), []string{aud}, devca.JWTOptions{Claims: claims})
		if err != nil {
			return o, err
		}
		req.Header.Set("authorization", "Bearer "+tok)
	}
	if s.Second != "" {
		tok, err := e.ca.IssueJWTSVID(spiffeid.RequireFromPath(TrustDomain, s.Second), []string{ProxyID}, devca.JWTOptions{})
		if err != nil {
			return o, err
		}
		req.Header.Add("authorization", "Bearer "+tok)
	}
	if d := s.Device; d != nil {
		tok, err := e.devices.IssueJWTSVID(spiffeid.RequireFromPath(e.devices.TrustDomain(), "/"+d.ID), []string{DeviceAudience}, devca.JWTOptions{
			Claims: map[string]any{"iss": DeviceIssuer, "ueid": d.ID, "devclass": d.Class, "oemid": d.Vendor, "swversion": d.Firmware},
		})
		if err != nil {
			return o, err
		}
		req.Header.Set("x-device-token", tok)
	}
	var c *http.Client
	if s.Outbound {
		c = &http.Client{Timeout: 15 * time.Second}
	} else if len(s.URISANs) > 0 {
		if c, err = e.certClient(s.URISANs); err != nil {
			return o, err
		}
	} else {
		c = e.client(s.Caller)
	}
	resp, err := c.Do(req)
	if err != nil {
		return o, fmt.Errorf("%s %s as %s: %w", s.Method, s.Path, s.Caller, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	o.Status = resp.StatusCode
	o.ID = resp.Header.Get(contract.DecisionHeader)
	if resp.StatusCode >= 400 {
		// The guard's deny body; rule ids and revisions of every decision
		// come from the audit trail afterwards.
		var d contract.Reply
		if json.Unmarshal(b, &d) == nil {
			o.Decision, o.Rule, o.Reason = d.Decision, d.Rule, d.Reason
			if o.ID == "" {
				o.ID = d.DecisionID
			}
		}
	}
	return o, nil
}

type auditIndex struct {
	list []contract.Record
	byID map[string]*contract.Record
}

// auditRecords fetches the decision records from the distributor.
func (e *env) auditRecords(ctx context.Context) (*auditIndex, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.distURL+contract.DecisionsPath+"?limit=10000", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	var res struct {
		Records []contract.Record `json:"records"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(b), &res); err != nil {
		return nil, 0, fmt.Errorf("decision query: %w (%s)", err, b)
	}
	idx := &auditIndex{list: res.Records, byID: map[string]*contract.Record{}}
	for i, r := range res.Records {
		if r.DecisionID != "" {
			idx.byID[r.DecisionID] = &res.Records[i]
		}
	}
	return idx, len(res.Records), nil
}

func (e *env) play(ctx context.Context) (*Report, error) {
	rep := &Report{}
	run := func(steps []Step) error {
		for _, s := range steps {
			o, err := e.do(ctx, s)
			if err != nil {
				return err
			}
			rep.Outcomes = append(rep.Outcomes, o)
		}
		return nil
	}
	if err := run(Steps); err != nil {
		return rep, err
	}
	if err := e.publish(ctx, 2, "policies-r2"); err != nil {
		return rep, err
	}
	// The filter polls every second; wait until every worker VM decides with
	// the new revision (several answers in a row, workers take turns).
	deadline := time.Now().Add(30 * time.Second)
	for inARow := 0; inARow < 6 && time.Now().Before(deadline); {
		o, err := e.do(ctx, StepsAfterChange[0])
		if err != nil {
			return rep, err
		}
		if o.Status == StepsAfterChange[0].WantStatus {
			inARow++
			continue
		}
		inARow = 0
		time.Sleep(200 * time.Millisecond)
	}
	if err := run(StepsAfterChange); err != nil {
		return rep, err
	}
	// The outbound proxy polls on its own: wait until the distributor saw
	// it take revision 2, so its steps are decided by that revision too.
	if err := e.waitServed(ctx, "controller-outbound~"+strings.TrimPrefix(e.outboundURL, "http://"), 2); err != nil {
		return rep, err
	}
	if err := run(StepsOutbound); err != nil {
		return rep, err
	}

	// Decision records reach the distributor in batches; then fill rules and
	// revisions from the audit trail and verify its hash chain.
	time.Sleep(3 * time.Second)
	recs, n, err := e.auditRecords(ctx)
	if err != nil {
		return rep, err
	}
	rep.Records = n
	used := map[int]bool{}
	for i := range rep.Outcomes {
		o := &rep.Outcomes[i]
		r, ok := recs.byID[o.ID]
		if !ok && o.Status < 400 {
			// Allowed requests carry no decision id to the caller: take the
			// first unused allow record of the same caller and request. Each
			// worker VM uploads its own batches, so log order across workers
			// is not request order; denies are matched by id instead.
			subject := "spiffe://" + TrustDomain.Name() + o.Step.Caller
			for j := range recs.list {
				c := &recs.list[j]
				allowed := c.Decision == contract.DecisionAllow || c.Decision == contract.DecisionDryRunDeny
				if !used[j] && allowed && c.Subject == subject && c.Method == o.Step.Method && c.Path == o.Step.Path {
					r, ok = c, true
					used[j] = true
					break
				}
			}
		}
		if !ok {
			continue
		}
		o.Decision = r.Decision
		if len(r.RuleIDs) > 0 {
			o.Rule = r.RuleIDs[0]
		}
		o.Revision = fmt.Sprint(r.BundleRevision)
	}
	// The demo's auditor holds the distributor to its own checkpoint key
	// (in production it is pinned out of band, not read from the data).
	if _, err := e.mg(ctx, "audit", "checkpoint", "--server", e.distURL, "--log-key", e.logKey(), "--sign"); err != nil {
		return rep, fmt.Errorf("audit checkpoint: %w", err)
	}
	out, err := e.mg(ctx, "audit", "verify", "--server", e.distURL, "--log-key", e.logKey())
	rep.AuditOutput = out
	rep.AuditOK = err == nil
	if err != nil {
		rep.AuditOutput = err.Error()
	}
	rep.Status, rep.StatusProblem = e.status(ctx)
	return rep, nil
}

// status is `meshguard status` as a person reads it, and what is wrong
// with it: the dev proxy must show up polling the channel's latest revision
// under its node id.
func (e *env) status(ctx context.Context) (string, string) {
	table, err := e.mg(ctx, "status", "--server", e.distURL)
	if err != nil {
		return table, err.Error()
	}
	js, err := e.mg(ctx, "status", "--server", e.distURL, "-o", "json")
	if err != nil {
		return table, err.Error()
	}
	var st server.Status
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		return table, "status -o json: " + err.Error()
	}
	node := "meshguard-run~" + strings.TrimPrefix(e.proxyURL, "https://")
	for _, ch := range st.Channels {
		for _, p := range ch.Pollers {
			if ch.Name == "grid" && ch.Latest != nil && p.Proxy == node && p.Served == ch.Latest.Revision {
				return table, ""
			}
		}
	}
	return table, fmt.Sprintf("status does not show %s polling channel grid's latest revision:\n%s", node, table)
}

// waitServed waits until meshguard status shows node polling channel grid
// with revision rev served (a poll after the switch).
func (e *env) waitServed(ctx context.Context, node string, rev uint64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		js, err := e.mg(ctx, "status", "--server", e.distURL, "-o", "json")
		if err != nil {
			return err
		}
		var st server.Status
		if err := json.Unmarshal([]byte(js), &st); err != nil {
			return fmt.Errorf("status -o json: %w", err)
		}
		for _, ch := range st.Channels {
			for _, p := range ch.Pollers {
				if ch.Name == "grid" && p.Proxy == node && p.Served >= rev {
					// Served is what the distributor sent; give the proxy's
					// poll callback a moment to install it.
					time.Sleep(1500 * time.Millisecond)
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never polled revision %d:\n%s", node, rev, js)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Check compares the outcomes with the expected decisions.
func (r *Report) Check() error {
	var bad []string
	all := AllSteps()
	for i, o := range r.Outcomes {
		if i >= len(all) {
			break
		}
		want := all[i]
		got := normalize(o)
		if o.Status != want.WantStatus || got != want.Want {
			bad = append(bad, fmt.Sprintf("step %d (%s): got %d %s, want %d %s", i+1, want.Note, o.Status, got, want.WantStatus, want.Want))
		}
	}
	if len(r.Outcomes) != len(all) {
		bad = append(bad, fmt.Sprintf("ran %d steps, want %d", len(r.Outcomes), len(all)))
	}
	if !r.AuditOK {
		bad = append(bad, "audit chain verification failed: "+r.AuditOutput)
	}
	if r.StatusProblem != "" {
		bad = append(bad, "meshguard status: "+r.StatusProblem)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w:\n  %s", errMismatch, strings.Join(bad, "\n  "))
	}
	return nil
}

// AllSteps are the scenario's steps in the order they run.
func AllSteps() []Step {
	return append(append(append([]Step{}, Steps...), StepsAfterChange...), StepsOutbound...)
}

func normalize(o Outcome) string {
	switch o.Decision {
	case "dry-run-deny":
		return "dry-run"
	case "":
		if o.Status < 400 {
			return "allow"
		}
		return "deny"
	}
	return o.Decision
}

// logKey is the distributor's checkpoint verifier key file.
func (e *env) logKey() string { return filepath.Join(e.work, "distributor", "checkpoint.key.pub") }
