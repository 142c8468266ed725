package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/host/localca"
)

// Step is one scripted request.
type Step struct {
	// Caller is the workload (SPIFFE ID path in grid.example) presenting an
	// X509-SVID; Version, when set, is carried as the swversion claim of a
	// JWT-SVID for the same workload.
	Caller  string
	Version string
	Device  string
	Method  string
	Path    string
	Body    string
	// Want is the expected decision: allow, deny or dry-run; WantStatus the
	// HTTP status the caller sees.
	Want       string
	WantStatus int
	Note       string
}

// Steps before the policy change.
var Steps = []Step{
	{Caller: "/ns/metering/sa/meter-reader", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "allow", WantStatus: 200, Note: "allowed read of meter data"},
	{Caller: "/ns/billing/sa/billing", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "allow", WantStatus: 200, Note: "billing reads meter data"},
	{Caller: "/ns/billing/sa/billing", Method: "POST", Path: "/v1/der/inv-0007/setpoint", Body: `{"watts": 4000}`, Device: "inv-0007", Want: "deny", WantStatus: 403, Note: "billing may not write to a DER"},
	{Caller: "/ns/der/sa/der-controller", Version: "2.3.1", Method: "POST", Path: "/v1/der/inv-0007/setpoint", Body: `{"watts": 4200}`, Device: "inv-0007", Want: "allow", WantStatus: 200, Note: "approved controller writes a setpoint"},
	{Caller: "/ns/der/sa/der-controller", Version: "2.4.1", Method: "POST", Path: "/v1/der/inv-0007/setpoint", Body: `{"watts": 4300}`, Device: "inv-0007", Want: "deny", WantStatus: 403, Note: "deny-listed build 2.4.1"},
	{Caller: "/ns/der/sa/der-controller", Version: "1.9.0", Method: "POST", Path: "/v1/der/inv-0007/control", Body: `{"command": "curtail"}`, Device: "inv-0007", Want: "deny", WantStatus: 403, Note: "legacy controller below the approved range"},
	{Caller: "/ns/scada/sa/legacy-scada", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "deny", WantStatus: 403, Note: "revoked workload"},
	{Caller: "/ns/der/sa/der-controller", Version: "2.3.1", Method: "POST", Path: "/v1/der/inv-0009/setpoint", Body: `{"watts": 1000}`, Device: "inv-0009", Want: "allow", WantStatus: 200, Note: "write 1 within the device budget"},
	{Caller: "/ns/der/sa/der-controller", Version: "2.3.1", Method: "POST", Path: "/v1/der/inv-0009/setpoint", Body: `{"watts": 1100}`, Device: "inv-0009", Want: "allow", WantStatus: 200, Note: "write 2 within the device budget"},
	{Caller: "/ns/der/sa/der-controller", Version: "2.3.1", Method: "POST", Path: "/v1/der/inv-0009/setpoint", Body: `{"watts": 1200}`, Device: "inv-0009", Want: "deny", WantStatus: 429, Note: "write 3 exceeds the per-device rate limit"},
	{Caller: "/ns/billing/sa/billing", Method: "GET", Path: "/v1/der/inv-0007/status", Device: "inv-0007", Want: "dry-run", WantStatus: 200, Note: "dry-run rule would deny billing reading DER status"},
}

// StepsAfterChange run after revision 2 is published (billing loses access to
// meter data; the dry-run rule is enforced).
var StepsAfterChange = []Step{
	{Caller: "/ns/billing/sa/billing", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "deny", WantStatus: 403, Note: "revision 2 revokes billing's read access"},
	{Caller: "/ns/metering/sa/meter-reader", Method: "GET", Path: "/v1/meters/mtr-0042/readings", Want: "allow", WantStatus: 200, Note: "meter reader unaffected"},
}

// do runs one step and records what the caller saw.
func (e *env) do(ctx context.Context, s Step) (Outcome, error) {
	o := Outcome{Step: s}
	var body io.Reader
	if s.Body != "" {
		body = strings.NewReader(s.Body)
	}
	req, err := http.NewRequestWithContext(ctx, s.Method, e.proxyURL+s.Path, body)
	if err != nil {
		return o, err
	}
	if s.Body != "" {
		req.Header.Set("content-type", "application/json")
	}
	if s.Version != "" {
		tok, err := e.ca.IssueJWTSVID(spiffeid.RequireFromPath(TrustDomain, s.Caller), []string{Audience}, localca.JWTOptions{Claims: map[string]any{"swversion": s.Version}})
		if err != nil {
			return o, err
		}
		req.Header.Set("authorization", "Bearer "+tok)
	}
	resp, err := e.client(s.Caller).Do(req)
	if err != nil {
		return o, fmt.Errorf("%s %s as %s: %w", s.Method, s.Path, s.Caller, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	o.Status = resp.StatusCode
	o.ID = resp.Header.Get("x-meshguard-decision")
	if resp.StatusCode >= 400 {
		var d struct {
			Decision string   `json:"decision"`
			Rule     string   `json:"rule"`
			Rules    []string `json:"rule_ids"`
			Reason   string   `json:"reason"`
			Revision any      `json:"bundle_revision"`
			ID       string   `json:"decision_id"`
		}
		if json.Unmarshal(b, &d) == nil {
			o.Decision, o.Rule, o.Reason = d.Decision, d.Rule, d.Reason
			if o.Rule == "" && len(d.Rules) > 0 {
				o.Rule = d.Rules[0]
			}
			if d.Revision != nil {
				o.Revision = fmt.Sprint(d.Revision)
			}
			if o.ID == "" {
				o.ID = d.ID
			}
		}
	}
	return o, nil
}

// auditRecords fetches decision records by id from the distributor.
func (e *env) auditRecords(ctx context.Context) (map[string]map[string]any, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.distURL+"/v1/decisions?limit=10000", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	var recs []map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(b), &recs); err != nil {
		var wrapped struct {
			Records []map[string]any `json:"records"`
		}
		if err2 := json.Unmarshal(b, &wrapped); err2 != nil {
			return nil, 0, fmt.Errorf("decision query: %w (%s)", err, b)
		}
		recs = wrapped.Records
	}
	out := map[string]map[string]any{}
	for _, r := range recs {
		if id, ok := r["decision_id"].(string); ok {
			out[id] = r
		}
	}
	return out, len(recs), nil
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
	// The filter polls every second; wait until the new revision decides.
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := e.do(ctx, StepsAfterChange[0])
		if err != nil {
			return rep, err
		}
		if o.Status == StepsAfterChange[0].WantStatus || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := run(StepsAfterChange); err != nil {
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
	for i := range rep.Outcomes {
		o := &rep.Outcomes[i]
		r, ok := recs[o.ID]
		if !ok {
			continue
		}
		if d, ok := r["decision"].(string); ok {
			o.Decision = d
		}
		if ids, ok := r["rule_ids"].([]any); ok && len(ids) > 0 {
			o.Rule = fmt.Sprint(ids[0])
		}
		if rv, ok := r["bundle_revision"]; ok {
			o.Revision = fmt.Sprint(rv)
		}
	}
	out, err := e.mg(ctx, "audit", "verify", "--server", e.distURL)
	rep.AuditOutput = out
	rep.AuditOK = err == nil
	if err != nil {
		rep.AuditOutput = err.Error()
	}
	return rep, nil
}

// Check compares the outcomes with the expected decisions.
func (r *Report) Check() error {
	var bad []string
	all := append(append([]Step{}, Steps...), StepsAfterChange...)
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
	if len(bad) > 0 {
		return fmt.Errorf("%w:\n  %s", errMismatch, strings.Join(bad, "\n  "))
	}
	return nil
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
