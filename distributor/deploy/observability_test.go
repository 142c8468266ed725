// Package deploy_test checks the shipped observability files against the
// code: every metric the Grafana dashboard and the alert rules query is one
// the guard filter or the distributor defines.
package deploy_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const files = "helm/meshguard-distributor/files/"

// codeMetrics collects the metric names defined in the non-test Go files of
// dirs: every string literal starting with meshguard_, cut at the first "."
// (Proxy-Wasm metrics carry their labels in the name: name.label=value).
func codeMetrics(t *testing.T, dirs ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, dir := range dirs {
		paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, p := range paths {
			if strings.HasSuffix(p, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), p, nil, 0)
			require.NoError(t, err)
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err == nil && strings.HasPrefix(s, "meshguard_") {
					name, _, _ := strings.Cut(s, ".")
					out[name] = true
				}
				return true
			})
		}
	}
	return out
}

var metricRE = regexp.MustCompile(`\bmeshguard_[a-z0-9_]+`)

// checkExpr reports metrics in expr that the code does not define.
func checkExpr(t *testing.T, known map[string]bool, where, expr string) {
	t.Helper()
	names := metricRE.FindAllString(expr, -1)
	assert.NotEmpty(t, names, "%s: %q queries no meshguard metric", where, expr)
	for _, n := range names {
		base := n
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suf); ok && known[b] {
				base = b
			}
		}
		assert.True(t, known[base], "%s: metric %s is not defined by the guard or the distributor", where, n)
	}
}

func known(t *testing.T) map[string]bool {
	m := codeMetrics(t, "../../filters/guard", "../server")
	// The lists must not be empty by accident (a moved file, say).
	require.True(t, m["meshguard_audit_dropped_total"] && m["meshguard_distributor_bundle_expiry_timestamp_seconds"] &&
		m["meshguard_bundle_expiry_timestamp_seconds"] && m["meshguard_rule_decisions_total"], "%v", m)
	return m
}

func TestDashboardQueriesExist(t *testing.T) {
	m := known(t)
	b, err := os.ReadFile(files + "meshguard-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	require.NotEmpty(t, dash.Panels)
	titles := map[string]bool{}
	for _, p := range dash.Panels {
		titles[p.Title] = true
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			checkExpr(t, m, "dashboard panel "+p.Title, tg.Expr)
		}
	}
	for _, want := range []string{"Deny rate by rule", "Audit records dropped", "Bundle age (distributor)",
		"Time to bundle expiry (distributor)", "Bundle verification failures"} {
		assert.True(t, titles[want], "panel %q", want)
	}
}

func TestAlertRulesQueriesExist(t *testing.T) {
	m := known(t)
	b, err := os.ReadFile(files + "meshguard-alerts.yaml")
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(b, &rules))
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			require.NotEmpty(t, r.Alert)
			checkExpr(t, m, "alert "+r.Alert, r.Expr)
		}
	}
	assert.GreaterOrEqual(t, n, 6)
}

// envoyName is how Envoy's Prometheus output names a Proxy-Wasm metric: the
// wasmcustom namespace dropped, every character outside [a-zA-Z0-9_:] an
// underscore.
func envoyName(stat string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9_:]`).ReplaceAllString(stat, "_")
}

// TestRelabelRestoresLabels applies the shipped metric_relabel_configs (RE2,
// anchored, as Prometheus does) to the names Envoy exports for the guard's
// labelled counters and checks the result is what the dashboard queries.
func TestRelabelRestoresLabels(t *testing.T) {
	b, err := os.ReadFile("prometheus/envoy-metric-relabel.yaml")
	require.NoError(t, err)
	var cfgs []struct {
		SourceLabels []string `yaml:"source_labels"`
		Regex        string   `yaml:"regex"`
		TargetLabel  string   `yaml:"target_label"`
		Replacement  string   `yaml:"replacement"`
	}
	require.NoError(t, yaml.Unmarshal(b, &cfgs))
	relabel := func(name string) map[string]string {
		l := map[string]string{"__name__": name}
		for _, c := range cfgs {
			re := regexp.MustCompile("^(?:" + c.Regex + ")$")
			src := l[c.SourceLabels[0]]
			if m := re.FindStringSubmatchIndex(src); m != nil {
				l[c.TargetLabel] = string(re.ExpandString(nil, c.Replacement, src, m))
			}
		}
		return l
	}
	cases := map[string]map[string]string{
		"meshguard_decisions_total.result=deny":         {"__name__": "meshguard_decisions_total", "result": "deny"},
		"meshguard_decisions_total.result=dry-run-deny": {"__name__": "meshguard_decisions_total", "result": "dry_run_deny"},
		"meshguard_rule_decisions_total.rule=meter-read.result=allow": {"__name__": "meshguard_rule_decisions_total",
			"rule": "meter_read", "result": "allow"},
		"meshguard_rule_decisions_total.rule=deny_writes_result.result=deny": {"__name__": "meshguard_rule_decisions_total",
			"rule": "deny_writes_result", "result": "deny"},
		"meshguard_audit_dropped_total":                     {"__name__": "meshguard_audit_dropped_total"},
		"meshguard_caller_rate_limited_total.mode=enforced": {"__name__": "meshguard_caller_rate_limited_total", "mode": "enforced"},
		"meshguard_caller_rate_limited_total.mode=dry_run":  {"__name__": "meshguard_caller_rate_limited_total", "mode": "dry_run"},
	}
	for stat, want := range cases {
		assert.Equal(t, want, relabel(envoyName(stat)), stat)
	}
}
