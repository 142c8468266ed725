// Package gen generates large synthetic workload policy sets and matching
// requests for benchmarks (the native engine and the OPA comparison share it).
package gen

import (
	"fmt"
	"strings"
)

// Rule is one generated workload rule.
type Rule struct {
	Name    string
	Deny    bool
	Subject string // exact SPIFFE ID
	Path    string // template with one {id} segment or a final /**
	Method  string
}

// Rules returns n rules: service i may GET or POST its own items, and
// every seventh service has an admin subtree denied.
func Rules(n int) []Rule {
	out := make([]Rule, 0, n)
	for i := 0; len(out) < n; i++ {
		svc := fmt.Sprintf("spiffe://grid.example/ns/ns%d/sa/svc%d", i%1000, i)
		m := "GET"
		if i%2 == 1 {
			m = "POST"
		}
		out = append(out, Rule{Name: fmt.Sprintf("r%d", i), Subject: svc, Path: fmt.Sprintf("/v1/svc%d/items/{id}", i), Method: m})
		if i%7 == 0 && len(out) < n {
			out = append(out, Rule{Name: fmt.Sprintf("d%d", i), Deny: true, Subject: svc, Path: fmt.Sprintf("/v1/svc%d/admin/**", i), Method: ""})
		}
	}
	return out
}

// YAML renders rules as one WorkloadPolicy document.
func YAML(rules []Rule) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata:\n  name: gen\nspec:\n  rules:\n")
	for _, r := range rules {
		eff := "allow"
		if r.Deny {
			eff = "deny"
		}
		fmt.Fprintf(&b, "    - name: %s\n      effect: %s\n      subjects: [%q]\n      paths: [%q]\n", r.Name, eff, r.Subject, r.Path)
		if r.Method != "" {
			fmt.Fprintf(&b, "      methods: [%s]\n", r.Method)
		}
	}
	return []byte(b.String())
}

// Request is a generated request and its expected outcome.
type Request struct {
	Subject, Method, Path string
	Allow                 bool
}

// Requests returns requests spread over rules: allowed hits at the start,
// middle and end, the same with the wrong method, admin denies (where the
// service has one) and an unknown caller.
func Requests(rules []Rule) []Request {
	var out []Request
	n := len(rules)
	for _, i := range []int{0, n / 4, n / 2, (n * 3) / 4, n - 1} {
		for i > 0 && rules[i].Deny {
			i--
		}
		r := rules[i]
		path := strings.Replace(r.Path, "{id}", "42", 1)
		wrong := "GET"
		if r.Method == "GET" {
			wrong = "POST"
		}
		admin := strings.Replace(strings.Replace(path, "/items/42", "/admin/keys", 1), "/items/", "/admin/", 1)
		out = append(out,
			Request{Subject: r.Subject, Method: r.Method, Path: path, Allow: true},
			Request{Subject: r.Subject, Method: wrong, Path: path},
			Request{Subject: r.Subject, Method: "GET", Path: admin},
			Request{Subject: "spiffe://grid.example/ns/unknown/sa/x", Method: r.Method, Path: path},
		)
	}
	return out
}
