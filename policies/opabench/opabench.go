// Package opabench compares the meshguard policy engine with OPA evaluating
// the equivalent Rego policy on the same generated rule sets and inputs. It
// is a nested module so OPA never enters the main module.
package opabench

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/meshguard/meshguard/policies/internal/gen"
)

// Rego renders generated rules as a Rego module with the same semantics as
// the meshguard WorkloadPolicy: default deny, deny precedence, {id} as one
// path segment, a final /** as a prefix.
func Rego(rules []gen.Rule) string {
	var b strings.Builder
	b.WriteString("package meshguard\n\ndefault allow := false\n\nallow if {\n\tallowed\n\tnot denied\n}\n\n")
	for _, r := range rules {
		head := "allowed"
		if r.Deny {
			head = "denied"
		}
		fmt.Fprintf(&b, "%s if {\n\tinput.subject == %q\n", head, r.Subject)
		if r.Method != "" {
			fmt.Fprintf(&b, "\tinput.method == %q\n", r.Method)
		}
		if prefix, ok := strings.CutSuffix(r.Path, "/**"); ok {
			fmt.Fprintf(&b, "\tpath_under(input.path, %q)\n", prefix)
		} else {
			fmt.Fprintf(&b, "\tglob.match(%q, [\"/\"], input.path)\n", strings.ReplaceAll(r.Path, "{id}", "*"))
		}
		b.WriteString("}\n\n")
	}
	b.WriteString("path_under(p, prefix) if p == prefix\n\npath_under(p, prefix) if startswith(p, concat(\"\", [prefix, \"/\"]))\n")
	return b.String()
}

// Prepare compiles the Rego module and prepares the allow query.
func Prepare(ctx context.Context, rules []gen.Rule) (rego.PreparedEvalQuery, error) {
	return rego.New(
		rego.Query("data.meshguard.allow"),
		rego.Module("gen.rego", Rego(rules)),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(ctx)
}

// Input converts a generated request into a parsed OPA input value.
func Input(r gen.Request) ast.Value {
	return ast.NewObject(
		[2]*ast.Term{ast.StringTerm("subject"), ast.StringTerm(r.Subject)},
		[2]*ast.Term{ast.StringTerm("method"), ast.StringTerm(r.Method)},
		[2]*ast.Term{ast.StringTerm("path"), ast.StringTerm(r.Path)},
	)
}

// Allow evaluates one prepared input.
func Allow(ctx context.Context, q rego.PreparedEvalQuery, in ast.Value) (bool, error) {
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return false, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false, fmt.Errorf("unexpected result set %v", rs)
	}
	v, ok := rs[0].Expressions[0].Value.(bool)
	if !ok {
		return false, fmt.Errorf("allow is %T, not bool", rs[0].Expressions[0].Value)
	}
	return v, nil
}
