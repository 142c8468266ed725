package opabench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/internal/gen"
)

func engine(tb testing.TB, rules []gen.Rule) *policies.Engine {
	tb.Helper()
	s, errs := policies.Parse(map[string][]byte{"gen.yaml": gen.YAML(rules)})
	require.Empty(tb, errs)
	e, err := policies.Compile(s)
	require.NoError(tb, err)
	return e
}

// TestEnginesAgree checks both engines decide every sample request alike
// (and as the generator expects).
func TestEnginesAgree(t *testing.T) {
	ctx := context.Background()
	rules := gen.Rules(300)
	e := engine(t, rules)
	q, err := Prepare(ctx, rules)
	require.NoError(t, err)
	reqs := gen.Requests(rules)
	// Extra edge cases: the admin subtree root and a deeper item path.
	reqs = append(reqs, gen.Request{Subject: rules[0].Subject, Method: "GET", Path: "/v1/svc0/admin"},
		gen.Request{Subject: rules[0].Subject, Method: "GET", Path: "/v1/svc0/items/1/2"})
	allowed := 0
	for _, r := range reqs {
		var d policies.Decision
		e.Decide(&policies.Request{SPIFFEID: r.Subject, Method: r.Method, Path: r.Path}, &d)
		opa, err := Allow(ctx, q, Input(r))
		require.NoError(t, err)
		require.Equal(t, opa, d.Allow, "%+v (meshguard: %s %v)", r, d.Reason, d.Rules())
		if d.Allow {
			allowed++
		}
	}
	require.Equal(t, 5, allowed)
}

func sizes() []int {
	if os.Getenv("OPABENCH_100K") != "" {
		return []int{100, 10000, 100000}
	}
	return []int{100, 10000}
}

func p50(lat []time.Duration) float64 {
	slices.Sort(lat)
	return float64(lat[len(lat)/2].Nanoseconds())
}

// BenchmarkCompare runs meshguard and OPA side by side on the same rules
// and inputs. OPA at 100k rules is opt-in (OPABENCH_100K=1): compiling
// 100k Rego rules takes minutes and gigabytes on a shared machine.
func BenchmarkCompare(b *testing.B) {
	ctx := context.Background()
	for _, n := range sizes() {
		rules := gen.Rules(n)
		reqs := gen.Requests(rules)
		e := engine(b, rules)
		mreqs := make([]policies.Request, len(reqs))
		oreqs := make([]ast.Value, len(reqs))
		for i, r := range reqs {
			mreqs[i] = policies.Request{SPIFFEID: r.Subject, Method: r.Method, Path: r.Path}
			oreqs[i] = Input(r)
		}
		b.Run(fmt.Sprintf("meshguard/rules=%d", n), func(b *testing.B) {
			var d policies.Decision
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				e.Decide(&mreqs[i%len(mreqs)], &d)
			}
			b.StopTimer()
			lat := make([]time.Duration, 5000)
			for i := range lat {
				t0 := time.Now()
				e.Decide(&mreqs[i%len(mreqs)], &d)
				lat[i] = time.Since(t0)
			}
			b.ReportMetric(p50(lat), "p50-ns")
		})
		q, err := Prepare(ctx, rules)
		require.NoError(b, err)
		b.Run(fmt.Sprintf("opa/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := Allow(ctx, q, oreqs[i%len(oreqs)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			lat := make([]time.Duration, 500)
			for i := range lat {
				t0 := time.Now()
				_, _ = Allow(ctx, q, oreqs[i%len(oreqs)])
				lat[i] = time.Since(t0)
			}
			b.ReportMetric(p50(lat), "p50-ns")
		})
	}
}
