package bundle

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies"
)

// gridSources are the grid policies under their bundle paths.
func gridSources(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := policies.ReadPaths("../testdata/grid")
	require.NoError(t, err)
	out := map[string][]byte{}
	for name, b := range files {
		out[SourcesDir+name[len("../testdata/grid/"):]] = b
	}
	return out
}

const openPolicy = "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: open}\nspec:\n  rules:\n    - name: all\n      effect: allow\n"

func packed(t testing.TB, files map[string][]byte, rev uint64) []byte {
	t.Helper()
	b, err := Pack(files, PackOptions{BuildOptions: testOpts(fixedKey(t, 1), rev)})
	require.NoError(t, err)
	return b
}

func TestPackOpenLoad(t *testing.T) {
	key := fixedKey(t, 1)
	files := gridSources(t)
	files["data/inventory.yaml"] = []byte("not: a policy\n")
	data := packed(t, files, 3)
	opts := VerifyOptions{Keys: publicSet(t, key), Now: testNow}

	b, err := Open(data, opts)
	require.NoError(t, err)
	assert.Contains(t, b.Files, ImageFile)
	assert.Contains(t, b.Files, "data/inventory.yaml", "data files go in unread")

	p, err := Load(data, opts)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), p.Revision())
	assert.Equal(t, b.Digest, p.Digest)
	var d policies.Decision
	p.Engine.Decide(&policies.Request{SPIFFEID: "spiffe://grid.example/ns/metering/sa/meter-reader", Method: "GET", Path: "/v1/meters/9/readings"}, &d)
	assert.True(t, d.Allow, d.Reason)

	// The image is compiled from the bundle paths, whatever the files were
	// read as: the same sources under other names pack the same image.
	renamed := map[string][]byte{}
	sources := map[string]string{}
	for name, body := range files {
		renamed[name] = body
		sources[name] = "/elsewhere/z-" + name
	}
	again, err := Pack(renamed, PackOptions{BuildOptions: testOpts(key, 3), Sources: sources})
	require.NoError(t, err)
	assert.Equal(t, data, again)
}

func TestPackRefuses(t *testing.T) {
	key := fixedKey(t, 1)
	bad := map[string][]byte{"policies/bad.yaml": []byte("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: w}\nspec:\n  rules:\n    - name: r\n      effect: maybe\n")}
	_, err := Pack(bad, PackOptions{BuildOptions: testOpts(key, 1), Sources: map[string]string{"policies/bad.yaml": "src/bad.yaml"}})
	require.ErrorIs(t, err, ErrPolicy)
	var list policies.ErrorList
	require.ErrorAs(t, err, &list)
	assert.Equal(t, "src/bad.yaml", list[0].Pos.File, "errors name the file people edit")

	_, err = Pack(map[string][]byte{"data/x.json": []byte("{}")}, PackOptions{BuildOptions: testOpts(key, 1)})
	assert.ErrorIs(t, err, ErrNoSources)
	_, err = Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy), ImageFile: []byte("smuggled")}, PackOptions{BuildOptions: testOpts(key, 1)})
	assert.ErrorContains(t, err, "written by pack")
}

// TestCheckImage: a correctly signed bundle whose image is not what its
// sources compile to (a forged image, no image, sources that do not
// compile) is refused by Open, and by Load only when the image itself is
// missing or damaged.
func TestCheckImage(t *testing.T) {
	key := fixedKey(t, 1)
	opts := VerifyOptions{Keys: publicSet(t, key), Now: testNow}
	open, err := policies.CompileFiles(map[string][]byte{"p.yaml": []byte(openPolicy)})
	require.NoError(t, err)
	openImage, err := policies.MarshalEngine(open)
	require.NoError(t, err)
	withImage := func(img []byte, extra map[string][]byte) []byte {
		files := gridSources(t)
		if img != nil {
			files[ImageFile] = img
		}
		for k, v := range extra {
			files[k] = v
		}
		return mustBuild(t, files, testOpts(key, 2))
	}
	cases := []struct {
		name     string
		data     []byte
		open     error
		load     error // nil: Load succeeds
		loadNote string
	}{
		{"forged image", withImage(openImage, nil), ErrImageMismatch, nil, "Load enforces the image it is given"},
		{"no image", withImage(nil, nil), ErrNoImage, ErrNoImage, ""},
		{"damaged image", withImage([]byte(policies.ImageMagic+"\x01junk"), nil), ErrImageMismatch, ErrBadImage, ""},
		{"sources do not compile", withImage(openImage, map[string][]byte{"policies/zz.yaml": []byte("kind: Nonsense\n")}), ErrImageMismatch, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.data, opts)
			assert.ErrorIs(t, err, tc.open)
			_, err = Load(tc.data, opts)
			if tc.load == nil {
				assert.NoError(t, err, tc.loadNote)
			} else {
				assert.ErrorIs(t, err, tc.load)
			}
		})
	}
	assert.ErrorIs(t, ErrNoImage, ErrFileSet)
	assert.ErrorIs(t, ErrBadImage, ErrFormat)
}

func TestLoadGrace(t *testing.T) {
	key := fixedKey(t, 1)
	data := packed(t, map[string][]byte{"policies/p.yaml": []byte(openPolicy)}, 1)
	expires := testNow.Add(24 * time.Hour)
	for _, tc := range []struct {
		name  string
		at    time.Duration // after expiry
		grace time.Duration
		ok    bool
	}{
		{"valid", -time.Minute, 0, true},
		{"expired", 0, 0, false},
		{"within grace", time.Hour, 2 * time.Hour, true},
		{"at the end of the grace", 2 * time.Hour, 2 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := expires.Add(tc.at)
			p, err := Load(data, VerifyOptions{Keys: publicSet(t, key), Now: now, Grace: tc.grace})
			if !tc.ok {
				assert.ErrorIs(t, err, ErrExpired)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.at >= 0, p.Expired(now))
		})
	}
}

func TestKeeper(t *testing.T) {
	key := fixedKey(t, 1)
	opts := VerifyOptions{Keys: publicSet(t, key), Now: testNow, Scope: "grid-prod"}
	k := NewKeeper(0)
	var held *Policy
	offer := func(data []byte) (bool, error) {
		var p *Policy
		return k.Offer(data, func(last uint64) (uint64, error) {
			o := opts
			o.MinRevision = last
			var err error
			p, err = Load(data, o)
			if err != nil {
				return 0, err
			}
			return p.Revision(), nil
		}, func() error { held = p; return nil })
	}
	src := map[string][]byte{"policies/p.yaml": []byte(openPolicy)}
	b5 := packed(t, src, 5)
	changed, err := offer(b5)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, uint64(5), k.Revision())
	assert.Equal(t, uint64(5), held.Revision())

	// Same bytes again: no change, no error, nothing run.
	held = nil
	changed, err = offer(b5)
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Nil(t, held)

	// Lower and equal revisions are rollbacks; nothing is committed.
	_, err = offer(packed(t, src, 4))
	assert.ErrorIs(t, err, ErrRollback)
	other := map[string][]byte{"policies/p.yaml": []byte(strings.Replace(openPolicy, "name: open", "name: other", 1))}
	_, err = offer(packed(t, other, 5))
	assert.ErrorIs(t, err, ErrRollback)
	// A tampered higher revision fails and changes nothing.
	bad := unpack(t, packed(t, src, 9))
	bad[find(bad, ImageFile)].body = []byte("evil")
	_, err = offer(pack(t, bad))
	assert.ErrorIs(t, err, ErrFileSet)
	_, err = offer([]byte("garbage"))
	assert.ErrorIs(t, err, ErrFormat)
	assert.Nil(t, held)
	assert.Equal(t, uint64(5), k.Revision())

	// A check that ignores the floor is caught; a failing commit keeps
	// the revision.
	_, err = k.Offer(packed(t, src, 3), func(uint64) (uint64, error) { return 3, nil }, func() error { t.Fatal("committed a rollback"); return nil })
	assert.ErrorIs(t, err, ErrRollback)
	_, err = k.Offer(packed(t, src, 7), func(uint64) (uint64, error) { return 7, nil }, func() error { return assert.AnError })
	assert.ErrorIs(t, err, assert.AnError)
	assert.Equal(t, uint64(5), k.Revision())

	// A good higher revision replaces it.
	changed, err = offer(packed(t, other, 6))
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, uint64(6), held.Revision())

	// A floor applies before the first bundle.
	k = NewKeeper(5)
	assert.Equal(t, uint64(5), k.Revision())
	held = nil
	_, err = offer(b5)
	assert.ErrorIs(t, err, ErrRollback)
	assert.Nil(t, held)
}

func TestKeeperConcurrent(t *testing.T) {
	key := fixedKey(t, 1)
	k := NewKeeper(0)
	src := map[string][]byte{"policies/p.yaml": []byte(openPolicy)}
	bundles := make([][]byte, 8)
	for i := range bundles {
		bundles[i] = packed(t, src, uint64(i+1))
	}
	offer := func(b []byte) error {
		_, err := k.Offer(b, func(last uint64) (uint64, error) {
			p, err := Load(b, VerifyOptions{Keys: publicSet(t, key), Now: testNow, MinRevision: last})
			if err != nil {
				return 0, err
			}
			return p.Revision(), nil
		}, nil)
		return err
	}
	var wg sync.WaitGroup
	for _, b := range bundles {
		wg.Go(func() {
			if err := offer(b); err != nil {
				assert.ErrorIs(t, err, ErrRollback)
			}
		})
	}
	wg.Wait()
	// Whatever the order, the keeper never went backwards; offering the
	// top now lands it.
	_ = offer(bundles[len(bundles)-1])
	assert.Equal(t, uint64(len(bundles)), k.Revision())
}
