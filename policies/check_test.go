//go:build !wasip1

package policies

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// naiveShadower is the pairwise definition the indexed check implements:
// the earliest earlier rule of the same policy that shadows rules[i].
func naiveShadower(rules []*AccessRule, shapes []ruleShape, i int) int {
	r := rules[i]
	for k, prev := range rules[:i] {
		if prev.DryRun || !shapes[k].ok || prev.Access != r.Access || !(prev.Effect == r.Effect || prev.Effect == Deny) {
			continue
		}
		if covers(prev, r, &shapes[k], &shapes[i]) {
			return k
		}
	}
	return -1
}

// TestShadowIndexMatchesPairwise compares the indexed shadow check with the
// pairwise definition on random policies dense in overlaps.
func TestShadowIndexMatchesPairwise(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	subs := []string{"spiffe://a.example/ns/x/sa/y", "spiffe://a.example/ns/*/sa/y", "spiffe://a.example/ns/**", "spiffe://a.example/ns/x/**", "spiffe://b.example/z"}
	paths := []string{"/v1/**", "/v1/a", "/v1/{id}", "/v1/a/b", "/v1/{id}/b", "/v1/*/**", "/v2/a", "/**", "/"}
	methods := []string{"GET", "POST", "PUT"}
	pick := func(l []string, max int) []Pattern {
		var out []Pattern
		for k := rnd.IntN(max + 1); k > 0; k-- {
			out = append(out, Pattern{Text: l[rnd.IntN(len(l))]})
		}
		return out
	}
	compared, shadowed := 0, 0
	for round := 0; round < 200; round++ {
		var rules []*AccessRule
		for i := 0; i < 30; i++ {
			r := &AccessRule{ID: fmt.Sprint(i), Effect: Allow, Subjects: pick(subs, 2), Paths: pick(paths, 2)}
			if rnd.IntN(3) == 0 {
				r.Effect = Deny
			}
			if rnd.IntN(2) == 0 {
				for _, m := range pick(methods, 2) {
					r.Methods = append(r.Methods, m.Text)
				}
			}
			if rnd.IntN(8) == 0 {
				r.TrustDomains = []Pattern{{Text: "a.example"}}
			}
			if rnd.IntN(6) == 0 {
				r.Headers = []HeaderMatch{{Name: "x-a", Present: true}}
			}
			if rnd.IntN(10) == 0 {
				r.DryRun = true
			}
			rules = append(rules, r)
		}
		shapes := make([]ruleShape, len(rules))
		subIdx, pathIdx := &pnode{}, &pnode{}
		for i, r := range rules {
			shapes[i] = shape(r)
			if r.DryRun {
				continue
			}
			want := naiveShadower(rules, shapes, i)
			got := shadower(rules, shapes, subIdx, pathIdx, i)
			require.Equal(t, want, got, "round %d rule %d", round, i)
			compared++
			if want >= 0 {
				shadowed++
			}
			for _, s := range shapes[i].subs {
				indexRule(subIdx, s, int32(i))
			}
			for _, p := range shapes[i].paths {
				indexRule(pathIdx, p, int32(i))
			}
		}
	}
	assert.Greater(t, shadowed, compared/10, "the corpus must shadow often")
}

func TestWarnings(t *testing.T) {
	s, errs := Parse(map[string][]byte{"w.yaml": []byte(docHdr + `kind: DevicePolicy
metadata: {name: inverters}
spec:
  devices: {classes: [inverter]}
  target: {paths: ["/v1/inverters/{id}/**"]}
  controlPaths: ["/v1/inverters/{id}/trip"]
  rules:
    - {name: w, effect: allow, access: write, paths: ["/v1/inverters/{id}/setpoint"]}
---
apiVersion: meshguard.io/v1
kind: DevicePolicy
metadata: {name: unbound}
spec:
  devices: {classes: [meter]}
  rules:
    - {name: w, effect: allow, access: write, paths: ["/v1/meters/{id}/disconnect"]}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: wl}
spec:
  rules:
    - {name: everything, effect: allow}
---
apiVersion: meshguard.io/v1
kind: WorkloadPolicy
metadata: {name: wl2}
spec:
  rules:
    - {name: posts, effect: allow, methods: [POST], paths: ["/v1/*/inv-1/**"]}
    - {name: reads, effect: allow, methods: [GET], paths: ["/v1/inverters/{id}/status"]}
    - {name: read-trip, effect: allow, methods: [GET], paths: ["/v1/inverters/inv-9/trip"]}
    - {name: elsewhere, effect: allow, methods: [POST], paths: ["/v2/**"]}
    - {name: trial, effect: allow, dryRun: true, methods: [POST], paths: ["/v1/meters/**"]}
`)})
	require.Empty(t, errs)
	require.Empty(t, Check(s))
	var got []string
	for _, w := range Warnings(s) {
		require.True(t, w.Warning)
		got = append(got, w.Error())
	}
	want := []string{
		`w.yaml:13:11: warning: DevicePolicy "unbound" governs device writes but declares no target`,
		`w.yaml:24:7: warning: workload rule "wl/everything" allows writes on paths DevicePolicy "inverters" governs (target path "/v1/inverters/{id}/**" at w.yaml:6:20)`,
		`w.yaml:31:7: warning: workload rule "wl2/posts" allows writes on paths DevicePolicy "inverters" governs (target path "/v1/inverters/{id}/**" at w.yaml:6:20)`,
		`w.yaml:33:7: warning: workload rule "wl2/read-trip" allows writes on paths DevicePolicy "inverters" governs (controlPaths "/v1/inverters/{id}/trip" at w.yaml:7:18)`,
	}
	require.Len(t, got, len(want), strings.Join(got, "\n"))
	for i := range want {
		assert.True(t, strings.HasPrefix(got[i], want[i]), "%s\nwant prefix %s", got[i], want[i])
	}
}

// TestCheckReportsEverything: every problem of a set is reported at once,
// in position order.
func TestCheckReportsEverything(t *testing.T) {
	_, err := Load(map[string][]byte{
		"a.yaml": []byte(docHdr + "kind: WorkloadPolicy\nmetadata: {name: a}\nspec:\n  rules:\n    - {name: r, effect: allow, paths: [/a//b]}\n    - {name: r, effect: allow, methods: [FETCH]}\n"),
		"b.yaml": []byte(docHdr + "kind: VersionPolicy\nmetadata: {name: v}\nspec:\n  rules:\n    - {name: x, subjects: [spiffe://a.example/x], source: {header: v}, allowed: \">=1 <<2\"}\n"),
		"c.yaml": []byte("apiVersion: meshguard.io/v1\nkind: [\n"),
	})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 5, err.Error())
	for i, prefix := range []string{"a.yaml:6:40: path pattern", "a.yaml:7:7: duplicate rule id", "a.yaml:7:", "b.yaml:6:81: allowed: invalid semver range", "c.yaml:"} {
		assert.True(t, strings.HasPrefix(lines[i], prefix), "%d: %s", i, lines[i])
	}
}
