//go:build !wasip1

package policies

import (
	"math/rand/v2"
	"testing"

	"github.com/Masterminds/semver/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// semverAgree checks the engine against Masterminds for one range and one
// version: a version the engine accepts is exactly one StrictNewVersion
// accepts, with the same fields; a range the engine accepts is one
// NewConstraint accepts, and both give the same answer for the version.
func semverAgree(t *testing.T, rng, ver string) {
	t.Helper()
	v, ok := parseVersion(ver)
	mv, err := semver.StrictNewVersion(ver)
	require.Equal(t, err == nil, ok, "version %q: engine ok=%v, Masterminds err=%v", ver, ok, err)
	if ok {
		require.Equal(t, [5]any{mv.Major(), mv.Minor(), mv.Patch(), mv.Prerelease(), mv.Metadata()},
			[5]any{v.major, v.minor, v.patch, v.pre, v.build}, "version %q", ver)
	}
	r, rerr := parseRange(rng)
	if rerr != nil {
		return
	}
	c, err := semver.NewConstraint(rng)
	require.NoError(t, err, "the engine accepts range %q, Masterminds does not", rng)
	if ok {
		require.Equal(t, c.Check(mv), r.contains(v), "%q in %q", ver, rng)
	}
}

func TestSemverAgainstMasterminds(t *testing.T) {
	for _, c := range []struct {
		rng, v string
		want   bool
	}{
		{">=2.0.0, <3.0.0", "2.3.1", true}, {">=2.0.0, <3.0.0", "3.0.0", false}, {">=2.0.0 <3.0.0", "1.9.0", false},
		{">=2.0.0, <3.0.0", "3.0.0-rc.1", false}, {">=2.0.0, <3.0.0", "2.5.0-rc.1", false},
		{">=2.0.0-0, <3.0.0", "2.5.0-rc.1", true}, {">=2.0.0-0 <3.0.0 || >=4.0.0", "4.1.0-rc.1", false},
		{"^1.2.3", "1.9.9", true}, {"^1.2.3", "2.0.0", false}, {"^0.2.3", "0.3.0", false}, {"^0.2.3", "0.2.9", true},
		{"~1.2.3", "1.2.9", true}, {"~1.2.3", "1.3.0", false}, {"~1", "1.9.0", true}, {"!=1.0.0", "1.0.0", false},
		{"1.0.0 || >=3", "2.0.0", false}, {"1.0.0 || >=3", "3.1.0", true}, {">1.0.0", "1.0.0", false}, {"<=1.0.0", "1.0.0", true},
		{">=1.0.0-rc.1", "1.0.0-rc.2", true}, {">=1.0.0-rc.10", "1.0.0-rc.2", false}, {"<1.0.0", "1.0.0-alpha", false},
		{"<1.0.0-0", "1.0.0-alpha", false}, {"<1.0.0-beta", "1.0.0-alpha", true},
		{">2", "2.5.0", false}, {">2", "3.0.0", true}, {"<=1.2", "1.2.9", true}, {"<=1.2", "1.3.0", false},
		{"1.2", "1.2.7", true}, {"1.2.x", "1.3.0", false}, {"!=1.2", "1.2.5", false}, {"*", "9.9.9", true},
		{">= 1.0.0", "1.0.0", true}, {"=>1.0.0, =<2.0.0", "2.0.0", true}, {"~>1.4", "1.4.9", true},
	} {
		r, err := parseRange(c.rng)
		require.NoError(t, err, c.rng)
		v, ok := parseVersion(c.v)
		require.True(t, ok, c.v)
		assert.Equal(t, c.want, r.contains(v), "%s in %s", c.v, c.rng)
		semverAgree(t, c.rng, c.v)
	}
}

// TestStrictVersions: presented versions parse strictly.
func TestStrictVersions(t *testing.T) {
	for _, s := range []string{"V2.3.1", "v2.3.1", "2.3.1-01", "2.3.1-rc..1", "02.3.1", "2.3", "2", "2.3.1-", "2.3.1+",
		"2.3.1+a+b", " 2.3.1", "2.3.1 ", "2.3.1.4", "18446744073709551616.0.0", "2.3.1-ü", "", "latest"} {
		_, ok := parseVersion(s)
		assert.False(t, ok, s)
		_, err := semver.StrictNewVersion(s)
		assert.Error(t, err, s)
	}
	for _, s := range []string{"2.3.1", "0.0.0", "2.3.1-rc.1", "2.3.1-0", "2.3.1+b.01", "2.3.1-rc.1+b7", "18446744073709551615.0.0", "1.2.3-x-y.1"} {
		_, ok := parseVersion(s)
		assert.True(t, ok, s)
	}
}

// TestRangesTheEngineRefuses are Masterminds ranges the engine does not
// evaluate (policy check reports them), and malformed ones.
func TestRangesTheEngineRefuses(t *testing.T) {
	for _, s := range []string{"1.0.0 - 2.0.0", ">=1.0.0+b1", ">=01.0.0", "1.x.3", "", " ", "1.0 ||", ">=1.0,", ",1.0", "1.0,,2.0",
		"1.0|2.0", "==1.0", "> =1.0", "1.2.3.4", "V1.0", ">=1.0.0-01", ">=1.0.0<2.0.0"} {
		_, err := parseRange(s)
		assert.Error(t, err, "%q", s)
	}
}

// rangeCorpus generates ranges and versions over the shapes that matter:
// operators, partial versions, wildcards, pre-releases, AND and OR.
func rangeCorpus(rnd *rand.Rand, n int) (ranges, versions []string) {
	ops := []string{"", "=", "!=", ">", ">=", "=>", "<", "<=", "=<", "~", "~>", "^"}
	parts := []string{"0", "1", "2", "3", "10", "x", "*", "X"}
	pres := []string{"", "", "", "-0", "-alpha", "-alpha.1", "-beta", "-rc.1", "-rc.10", "-1", "-x.7"}
	cmp := func() string {
		v := parts[rnd.IntN(len(parts))]
		for k := rnd.IntN(3); k > 0; k-- {
			v += "." + parts[rnd.IntN(len(parts))]
		}
		sp := ""
		if rnd.IntN(4) == 0 {
			sp = " "
		}
		return ops[rnd.IntN(len(ops))] + sp + v + pres[rnd.IntN(len(pres))]
	}
	seps := []string{" ", ", ", ","}
	for range n {
		r := ""
		for g := rnd.IntN(2); g >= 0; g-- {
			grp := cmp()
			for k := rnd.IntN(3); k > 0; k-- {
				grp += seps[rnd.IntN(len(seps))] + cmp()
			}
			if r != "" {
				r += " || "
			}
			r += grp
		}
		ranges = append(ranges, r)
	}
	nums := []string{"0", "1", "2", "3", "4", "9", "10", "11"}
	vpres := []string{"", "", "-0", "-alpha", "-alpha.1", "-alpha.beta", "-beta", "-beta.2", "-rc.1", "-rc.2", "-rc.10", "-1", "-99999999999999999999"}
	for _, a := range nums[:6] {
		for _, b := range nums {
			for _, c := range nums[:4] {
				versions = append(versions, a+"."+b+"."+c+vpres[rnd.IntN(len(vpres))])
			}
		}
	}
	return ranges, versions
}

// TestSemverCorpus runs the differential check over a generated corpus on
// every test run (the fuzz test explores beyond it).
func TestSemverCorpus(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	ranges, versions := rangeCorpus(rnd, 600)
	accepted := 0
	for _, r := range ranges {
		if _, err := parseRange(r); err == nil {
			accepted++
		}
		for _, v := range versions {
			semverAgree(t, r, v)
		}
	}
	assert.Greater(t, accepted, len(ranges)/3, "the corpus must mostly be ranges the engine evaluates")
	for _, a := range versions {
		va, _ := parseVersion(a)
		ma := semver.MustParse(a)
		for _, b := range versions[:40] {
			vb, _ := parseVersion(b)
			assert.Equal(t, ma.Compare(semver.MustParse(b)), va.compare(vb), "%s vs %s", a, b)
		}
	}
}

// FuzzSemverDifferential compares the engine's version parsing and range
// evaluation with Masterminds/semver on arbitrary inputs.
func FuzzSemverDifferential(f *testing.F) {
	rnd := rand.New(rand.NewPCG(3, 4))
	ranges, versions := rangeCorpus(rnd, 40)
	for i, r := range ranges {
		f.Add(r, versions[i%len(versions)])
	}
	for _, s := range [][2]string{{">=2.0.0, <3.0.0", "3.0.0-rc.1"}, {"^0.0", "0.0.1-rc.1"}, {"!=1.2", "1.2.0-0"},
		{"<=1.x-beta", "1.9.0-beta"}, {"~0.0.0", "0.0.0-0"}, {"^*", "1.0.0"}, {">1.0.0-99999999999999999999", "1.0.0-100000000000000000000"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rng, ver string) {
		semverAgree(t, rng, ver)
	})
}
