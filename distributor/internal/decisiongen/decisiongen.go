// Package decisiongen makes realistic guard decision records for tests and
// benchmarks of the decision log and the console: grid workloads calling
// inverter and meter APIs through twenty sidecars, rules that allow, deny
// and dry-run-deny, three bundle revisions, the odd error. Record i is the
// same on every run.
package decisiongen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// Subjects are the SPIFFE IDs of the calling workloads.
var Subjects = []string{
	"spiffe://grid.example/ns/grid/sa/scada",
	"spiffe://grid.example/ns/grid/sa/historian",
	"spiffe://grid.example/ns/grid/sa/meter-reader",
	"spiffe://grid.example/ns/grid/sa/inverter-ctl",
	"spiffe://grid.example/ns/grid/sa/dispatch",
}

// Rule names by decision.
const (
	RuleTelemetry = "read-telemetry"
	RuleSetpoint  = "write-setpoint"
	RuleMeterRead = "meter-read"
	RuleRevoked   = "revoked-device"
	RuleVersion   = "min-firmware"
	RuleDryRun    = "dry-run-setpoint-limit"
)

// Fields is what Record puts in record i, for tests that check filters.
type Fields struct {
	Time     time.Time
	Decision string
	Rules    []string
	Revision uint64
	Subject  string
	Device   string
	Method   string
	Path     string
	Proxy    string
}

// Of returns the fields of record i, dated base + i*step.
func Of(i int, base time.Time, step time.Duration) Fields {
	r := rand.New(rand.NewPCG(uint64(i), 0x6d657368))
	f := Fields{Time: base.Add(time.Duration(i) * step), Subject: Subjects[r.IntN(len(Subjects))],
		Revision: 40 + uint64(r.IntN(3)), Proxy: fmt.Sprintf("sidecar~10.0.%d.%d~grid-api-%d.grid~grid.svc.cluster.local", i%4, 10+r.IntN(5), r.IntN(20))}
	inverter := r.IntN(2) == 0
	if inverter {
		f.Device = fmt.Sprintf("inv-%04d", 1+r.IntN(200))
	} else {
		f.Device = fmt.Sprintf("meter-%04d", 1+r.IntN(500))
	}
	write := inverter && r.IntN(4) == 0
	switch {
	case write:
		f.Method, f.Path, f.Rules = "PUT", "/api/v1/inverters/"+f.Device+"/setpoint", []string{RuleSetpoint}
	case inverter:
		f.Method, f.Path, f.Rules = "GET", "/api/v1/inverters/"+f.Device+"/telemetry", []string{RuleTelemetry}
	default:
		f.Method, f.Path, f.Rules = "GET", "/api/v1/meters/"+f.Device+"/readings", []string{RuleMeterRead}
	}
	switch p := r.IntN(100); {
	case p < 80:
		f.Decision = "allow"
	case p < 86:
		f.Decision, f.Rules = "deny", []string{RuleRevoked}
	case p < 92:
		f.Decision, f.Rules = "deny", []string{RuleVersion}
	case p < 98:
		f.Decision = "dry-run-deny"
		f.Rules = append(f.Rules, RuleDryRun)
	default:
		f.Decision, f.Rules = "error", nil
	}
	return f
}

// JSON is record i as the guard sends it.
func JSON(i int, base time.Time, step time.Duration) []byte {
	f := Of(i, base, step)
	rules := f.Rules
	if rules == nil {
		rules = []string{}
	}
	b, err := json.Marshal(map[string]any{
		"time": f.Time.UTC().Format(time.RFC3339Nano), "decision_id": fmt.Sprintf("dg-%d", i), "decision": f.Decision,
		"rule_ids": rules, "reason": reason(f), "bundle_revision": f.Revision, "subject": f.Subject,
		"device_id": f.Device, "device_class": "der", "version": "3.2.1", "method": f.Method, "path": f.Path,
		"authority": "grid-api.grid.svc", "proxy": f.Proxy, "source": fmt.Sprintf("10.1.%d.%d:443", i%7, i%250),
	})
	if err != nil {
		panic(err)
	}
	return b
}

func reason(f Fields) string {
	switch f.Decision {
	case "deny":
		return "denied by " + f.Rules[0]
	case "dry-run-deny":
		return "would be denied by " + RuleDryRun
	case "error":
		return "policy unavailable: bundle expired"
	}
	return "allowed by " + f.Rules[0]
}

// Batch is records from..from+n-1 as a JSON array (an upload body).
func Batch(from, n int, base time.Time, step time.Duration) []byte {
	out := []byte{'['}
	for i := from; i < from+n; i++ {
		if i > from {
			out = append(out, ',')
		}
		out = append(out, JSON(i, base, step)...)
	}
	return append(out, ']')
}

// Fill appends records 0..n-1 to l in batches of 1000, stamped as
// uploaded by uploader at their own time.
func Fill(l *decisionlog.Log, n int, base time.Time, step time.Duration, uploader string) error {
	for i := 0; i < n; i += 1000 {
		batch := make([]decisionlog.Record, 0, 1000)
		for j := i; j < min(n, i+1000); j++ {
			r, err := decisionlog.DecodeRecord(JSON(j, base, step))
			if err != nil {
				return fmt.Errorf("record %d: %w", j, err)
			}
			batch = append(batch, r)
		}
		decisionlog.Stamp(batch, uploader, base.Add(time.Duration(i)*step))
		if _, err := l.Append(batch); err != nil {
			return err
		}
	}
	return nil
}
