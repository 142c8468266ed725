package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeeds are valid and hostile bundles signed with fixedKey(1).
func fuzzSeeds(t testing.TB) map[string][]byte {
	key := fixedKey(t, 1)
	good := mustBuild(t, testFiles(), testOpts(key, 3))
	edit := func(f func(es []entry) []entry) []byte { return pack(t, f(unpack(t, good))) }
	files := testFiles()
	files["compiled/engine.bin"] = []byte("MGENGINE\x01image")
	return map[string][]byte{
		"valid":         good,
		"with-compiled": mustBuild(t, files, testOpts(key, 3)),
		"symlink": edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/l.yaml", typ: tar.TypeSymlink, link: "../../etc/passwd"})
		}),
		"traversal": edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/../../x", body: []byte("x")})
		}),
		"duplicate": edit(func(es []entry) []entry {
			return append(es, es[len(es)-1])
		}),
		"tampered": edit(func(es []entry) []entry {
			es[len(es)-1].body = []byte("tampered")
			return es
		}),
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzVerify when
// MESHGUARD_UPDATE_FUZZ=1 (after a format change).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MESHGUARD_UPDATE_FUZZ") != "1" {
		t.Skip("set MESHGUARD_UPDATE_FUZZ=1 to regenerate fuzz seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds(t) {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	key := fixedKey(f, 1)
	opts := VerifyOptions{Keys: publicSet(f, key), Now: testNow, Scope: "grid-prod"}
	sentinels := []error{ErrFormat, ErrSignature, ErrFileSet, ErrExpired, ErrNotYetValid, ErrScope, ErrRollback}
	subsetOpts := opts
	subsetOpts.Subset = []string{"compiled/"}
	oneSentinel := func(t *testing.T, err error) {
		n := 0
		for _, s := range sentinels {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error wraps %d sentinels: %v", n, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sub, subErr := Verify(data, subsetOpts)
		if subErr != nil {
			oneSentinel(t, subErr)
		} else {
			// A subset read returns only listed files whose hashes match.
			for p, content := range sub.Files {
				if want, ok := sub.Manifest.Files[p]; !ok || sha(content) != want {
					t.Fatalf("subset: %s unlisted or hash mismatch", p)
				}
			}
		}
		b, err := Verify(data, opts)
		if err != nil {
			oneSentinel(t, err)
			return
		}
		if subErr != nil {
			t.Fatalf("full verification passed, subset failed: %v", subErr)
		}
		// Whatever verifies is exactly the manifest's file set, hashes match
		// and paths are sane.
		if len(b.Files) != len(b.Manifest.Files) {
			t.Fatalf("%d files, manifest lists %d", len(b.Files), len(b.Manifest.Files))
		}
		for p, content := range b.Files {
			if err := checkPath(p); err != nil {
				t.Fatal(err)
			}
			if sha(content) != b.Manifest.Files[p] {
				t.Fatalf("%s: hash mismatch", p)
			}
		}
		if b.Manifest.KeyID != key.KeyID() {
			t.Fatalf("kid %q", b.Manifest.KeyID)
		}
	})
}
