package policies

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshguard/meshguard/policies/internal/gen"
)

// genEngine compiles a generated workload set of n rules (parse + compile;
// the O(n²) shadow check is skipped, it is a lint, not part of compiling).
func genEngine(tb testing.TB, n int) (*Engine, []gen.Request) {
	tb.Helper()
	rules := gen.Rules(n)
	s, errs := Parse(map[string][]byte{"gen.yaml": gen.YAML(rules)})
	if len(errs) > 0 {
		tb.Fatal(errs)
	}
	e, err := Compile(s)
	if err != nil {
		tb.Fatal(err)
	}
	return e, gen.Requests(rules)
}

func TestGeneratedSetDecisions(t *testing.T) {
	for _, n := range []int{100, 10000} {
		e, reqs := genEngine(t, n)
		for _, r := range reqs {
			var d Decision
			e.Decide(&Request{SPIFFEID: r.Subject, Method: r.Method, Path: r.Path}, &d)
			if d.Allow != r.Allow {
				t.Errorf("n=%d %+v: allow=%v (%s)", n, r, d.Allow, d.Reason)
			}
		}
	}
}

// BenchmarkDecide measures one decision over generated sets of 100, 10k and
// 100k rules, cycling through allowed, wrong-method, denied and unknown
// callers; p50/p99 come from timing 20k single decisions after the run.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{100, 10000, 100000} {
		e, greqs := genEngine(b, n)
		reqs := make([]Request, len(greqs))
		for i, r := range greqs {
			reqs[i] = Request{SPIFFEID: r.Subject, Method: r.Method, Path: r.Path}
		}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			var d Decision
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				e.Decide(&reqs[i%len(reqs)], &d)
			}
			b.StopTimer()
			lat := make([]time.Duration, 20000)
			for i := range lat {
				r := &reqs[i%len(reqs)]
				t0 := time.Now()
				e.Decide(r, &d)
				lat[i] = time.Since(t0)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkDecideGrid measures the realistic grid set (device writes,
// version checks, revocations).
func BenchmarkDecideGrid(b *testing.B) {
	s, e := loadGrid(b)
	var reqs []*Request
	for _, tc := range s.Tests[0].Cases {
		reqs = append(reqs, tc.Input.Request())
	}
	var d Decision
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Decide(reqs[i%len(reqs)], &d)
	}
}

// BenchmarkCheck measures what `meshguard policy check` does with a
// generated set of 100k rules in one policy: parse, check (including the
// shadow analysis) and compile.
// go test ./policies -run '^$' -bench 'Check' -benchmem -benchtime 1x
func BenchmarkCheck(b *testing.B) {
	files := map[string][]byte{"gen.yaml": gen.YAML(gen.Rules(100000))}
	b.ReportAllocs()
	for b.Loop() {
		s, err := Load(files)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(s); err != nil {
			b.Fatal(err)
		}
	}
}
