package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testNow = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// fixedKey is a deterministic Ed25519 signing key (so fuzz seeds stay valid).
func fixedKey(t testing.TB, seed byte) jwk.Key {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	k, err := jwk.FromRaw(priv)
	require.NoError(t, err)
	kid, err := Thumbprint(k)
	require.NoError(t, err)
	require.NoError(t, k.Set(jwk.KeyIDKey, kid))
	return k
}

func publicSet(t testing.TB, keys ...jwk.Key) jwk.Set {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := k.PublicKey()
		require.NoError(t, err)
		require.NoError(t, set.AddKey(pub))
	}
	return set
}

func testFiles() map[string][]byte {
	return map[string][]byte{
		"policies/workloads.yaml":   []byte("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: meters}\n"),
		"policies/devices/der.yaml": []byte("apiVersion: meshguard.io/v1\nkind: DevicePolicy\nmetadata: {name: der}\n"),
		"data/revocations.yaml":     []byte("apiVersion: meshguard.io/v1\nkind: Revocations\n"),
	}
}

func testOpts(key jwk.Key, rev uint64) BuildOptions {
	return BuildOptions{Revision: rev, Created: testNow.Add(-time.Hour), Expires: testNow.Add(24 * time.Hour), Scope: []string{"grid-prod", "grid-lab"}, Key: key}
}

func mustBuild(t testing.TB, files map[string][]byte, opts BuildOptions) []byte {
	t.Helper()
	b, err := Build(files, opts)
	require.NoError(t, err)
	return b
}

type entry struct {
	name, link string
	typ        byte
	body       []byte
}

// unpack returns the entries of a bundle in order.
func unpack(t testing.TB, data []byte) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	tr := tar.NewReader(zr)
	var out []entry
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(tr)
		out = append(out, entry{name: h.Name, typ: h.Typeflag, body: buf.Bytes()})
	}
	return out
}

// pack writes entries as a tar.gz without any of Build's checks.
func pack(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o644, ModTime: time.Unix(0, 0)}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		require.NoError(t, tw.WriteHeader(h))
		if typ == tar.TypeReg {
			_, err := tw.Write(e.body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func find(entries []entry, name string) int {
	for i, e := range entries {
		if e.name == name {
			return i
		}
	}
	return -1
}

// sigsWith returns a .signatures.json holding one compact JWS over payload.
func sigsWith(t testing.TB, compact string) []byte {
	b, err := json.Marshal(signatures{Signatures: []string{compact}})
	require.NoError(t, err)
	return b
}

func signRaw(t testing.TB, payload []byte, alg jwa.SignatureAlgorithm, key any, hdr map[string]any) string {
	t.Helper()
	h := jws.NewHeaders()
	for k, v := range hdr {
		require.NoError(t, h.Set(k, v))
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	require.NoError(t, err)
	return string(out)
}

// resign replaces the manifest with m (re-encoded) and signs it with key.
func resign(t testing.TB, entries []entry, m Manifest, key jwk.Key) []entry {
	t.Helper()
	mb, err := json.Marshal(&m)
	require.NoError(t, err)
	var raw any
	require.NoError(t, key.Raw(&raw))
	alg, err := keyAlg(key)
	require.NoError(t, err)
	entries[find(entries, ManifestName)].body = mb
	entries[find(entries, SignaturesName)].body = sigsWith(t, signRaw(t, mb, alg, raw, map[string]any{"kid": key.KeyID(), "typ": JWSType}))
	return entries
}

func manifestOf(t testing.TB, entries []entry) Manifest {
	var m Manifest
	require.NoError(t, json.Unmarshal(entries[find(entries, ManifestName)].body, &m))
	return m
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestVerifyGood(t *testing.T) {
	key := fixedKey(t, 1)
	data := mustBuild(t, testFiles(), testOpts(key, 7))
	b, err := Verify(data, VerifyOptions{Keys: publicSet(t, key), Scope: "grid-prod", MinRevision: 6, Now: testNow})
	require.NoError(t, err)
	assert.Equal(t, testFiles(), b.Files)
	assert.Equal(t, uint64(7), b.Manifest.Revision)
	assert.Equal(t, key.KeyID(), b.Manifest.KeyID)
	assert.Equal(t, []string{"grid-lab", "grid-prod"}, b.Manifest.Scope)
	assert.Equal(t, testNow.Add(-time.Hour), b.Manifest.Created)
	assert.Equal(t, "sha256:"+sha(data), b.Digest)
	assert.Len(t, b.Manifest.Files, 3)

	// The on-disk layout: manifest, signatures, then sorted files; fixed headers.
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	assert.Equal(t, "", zr.Name)
	assert.True(t, zr.ModTime.IsZero())
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		assert.Equal(t, int64(0o644), h.Mode)
		assert.Equal(t, int64(0), h.ModTime.Unix())
		assert.Zero(t, h.Uid)
		assert.Zero(t, h.Gid)
	}
	assert.Equal(t, []string{ManifestName, SignaturesName, "data/revocations.yaml", "policies/devices/der.yaml", "policies/workloads.yaml"}, names)

	// The JWS header carries alg, kid and typ only.
	es := unpack(t, data)
	var sigs signatures
	require.NoError(t, json.Unmarshal(es[find(es, SignaturesName)].body, &sigs))
	hb, err := base64.RawURLEncoding.DecodeString(strings.Split(sigs.Signatures[0], ".")[0])
	require.NoError(t, err)
	var hdr map[string]any
	require.NoError(t, json.Unmarshal(hb, &hdr))
	assert.Equal(t, map[string]any{"alg": "EdDSA", "kid": key.KeyID(), "typ": JWSType}, hdr)
}

func TestVerifyES256(t *testing.T) {
	priv, set, err := GenerateKey("es256")
	require.NoError(t, err)
	data := mustBuild(t, testFiles(), testOpts(priv, 1))
	b, err := Verify(data, VerifyOptions{Keys: set, Now: testNow})
	require.NoError(t, err)
	assert.Equal(t, priv.KeyID(), b.Manifest.KeyID)
}

func TestVerifyFailures(t *testing.T) {
	key := fixedKey(t, 1)
	other := fixedKey(t, 2)
	keys := publicSet(t, key, other)
	good := mustBuild(t, testFiles(), testOpts(key, 10))
	kid := key.KeyID()
	var rawPriv any
	require.NoError(t, key.Raw(&rawPriv))
	pubRaw := []byte(rawPriv.(ed25519.PrivateKey).Public().(ed25519.PublicKey))
	esPriv, _, err := GenerateKey("es256")
	require.NoError(t, err)
	var esRaw any
	require.NoError(t, esPriv.Raw(&esRaw))

	// withSig replaces the signature over the good manifest.
	withSig := func(f func(manifest []byte) string) []byte {
		es := unpack(t, good)
		es[find(es, SignaturesName)].body = sigsWith(t, f(es[find(es, ManifestName)].body))
		return pack(t, es)
	}
	edit := func(f func(es []entry) []entry) []byte { return pack(t, f(unpack(t, good))) }
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	cases := []struct {
		name string
		data []byte
		opts func(*VerifyOptions)
		want error
	}{
		{name: "tampered file", want: ErrFileSet, data: edit(func(es []entry) []entry {
			es[find(es, "policies/workloads.yaml")].body = []byte("kind: WorkloadPolicy\nallow: everything\n")
			return es
		})},
		{name: "extra file", want: ErrFileSet, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/zz-extra.yaml", body: []byte("kind: WorkloadPolicy\n")})
		})},
		{name: "missing file", want: ErrFileSet, data: edit(func(es []entry) []entry {
			i := find(es, "data/revocations.yaml")
			return append(es[:i], es[i+1:]...)
		})},
		{name: "renamed file", want: ErrFileSet, data: edit(func(es []entry) []entry {
			es[find(es, "data/revocations.yaml")].name = "data/revocations-old.yaml"
			return es
		})},
		{name: "manifest edited without re-signing", want: ErrSignature, data: edit(func(es []entry) []entry {
			i := find(es, ManifestName)
			es[i].body = bytes.Replace(es[i].body, []byte(`"revision":10`), []byte(`"revision":99`), 1)
			require.Contains(t, string(es[i].body), `"revision":99`)
			return es
		})},
		{name: "swapped signature", want: ErrSignature, data: func() []byte {
			es := unpack(t, good)
			otherBundle := unpack(t, mustBuild(t, testFiles(), testOpts(key, 11)))
			es[find(es, SignaturesName)].body = otherBundle[find(otherBundle, SignaturesName)].body
			return pack(t, es)
		}()},
		{name: "wrong kid (other key in the set)", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.EdDSA, rawPriv, map[string]any{"kid": other.KeyID()})
		})},
		{name: "signed by other key under the right kid", want: ErrSignature, data: withSig(func(m []byte) string {
			var r any
			require.NoError(t, other.Raw(&r))
			return signRaw(t, m, jwa.EdDSA, r, map[string]any{"kid": kid})
		})},
		{name: "unknown kid", want: ErrUnknownKey, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.EdDSA, rawPriv, map[string]any{"kid": "nobody"})
		})},
		{name: "no kid", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.EdDSA, rawPriv, nil)
		})},
		{name: "alg none", want: ErrSignature, data: withSig(func(m []byte) string {
			return b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + base64.RawURLEncoding.EncodeToString(m) + "."
		})},
		{name: "HS256 with the public key as secret", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.HS256, pubRaw, map[string]any{"kid": kid})
		})},
		{name: "ES256 signature with an Ed25519 kid", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.ES256, esRaw, map[string]any{"kid": kid})
		})},
		{name: "extra header (jku)", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.EdDSA, rawPriv, map[string]any{"kid": kid, "jku": "https://evil.example/keys"})
		})},
		{name: "upper-case header member", want: ErrSignature, data: withSig(func(m []byte) string {
			return b64(`{"ALG":"EdDSA","kid":"`+kid+`"}`) + "." + base64.RawURLEncoding.EncodeToString(m) + ".AAAA"
		})},
		{name: "crit header", want: ErrSignature, data: withSig(func(m []byte) string {
			return signRaw(t, m, jwa.EdDSA, rawPriv, map[string]any{"kid": kid, "crit": []string{"exp"}})
		})},
		{name: "JWS JSON serialization", want: ErrSignature, data: withSig(func(m []byte) string {
			return `{"payload":"` + base64.RawURLEncoding.EncodeToString(m) + `","signatures":[]}`
		})},
		{name: "two signatures", want: ErrSignature, data: func() []byte {
			es := unpack(t, good)
			var s signatures
			require.NoError(t, json.Unmarshal(es[find(es, SignaturesName)].body, &s))
			s.Signatures = append(s.Signatures, s.Signatures[0])
			es[find(es, SignaturesName)].body, _ = json.Marshal(s)
			return pack(t, es)
		}()},
		{name: "no signatures file", want: ErrSignature, data: edit(func(es []entry) []entry {
			i := find(es, SignaturesName)
			return append(es[:i], es[i+1:]...)
		})},
		{name: "manifest kid differs from JWS kid", want: ErrSignature, data: edit(func(es []entry) []entry {
			m := manifestOf(t, es)
			m.KeyID = other.KeyID()
			return resign(t, es, m, key)
		})},
		{name: "manifest version", want: ErrFormat, data: edit(func(es []entry) []entry {
			m := manifestOf(t, es)
			m.Version = 2
			return resign(t, es, m, key)
		})},
		{name: "manifest path traversal", want: ErrFormat, data: edit(func(es []entry) []entry {
			m := manifestOf(t, es)
			m.Files["policies/../../etc/passwd"] = sha(nil)
			return resign(t, es, m, key)
		})},
		{name: "expired", want: ErrExpired, opts: func(o *VerifyOptions) { o.Now = testNow.Add(25 * time.Hour) }, data: good},
		{name: "expired exactly at expiry", want: ErrExpired, opts: func(o *VerifyOptions) { o.Now = testNow.Add(24 * time.Hour) }, data: good},
		{name: "created in the future", want: ErrNotYetValid, opts: func(o *VerifyOptions) { o.Now = testNow.Add(-time.Hour - 6*time.Minute) }, data: good},
		{name: "scope mismatch", want: ErrScope, opts: func(o *VerifyOptions) { o.Scope = "grid-dev" }, data: good},
		{name: "rollback", want: ErrRollback, opts: func(o *VerifyOptions) { o.MinRevision = 11 }, data: good},
		{name: "equal revision", want: ErrRollback, opts: func(o *VerifyOptions) { o.MinRevision = 10 }, data: good},
		{name: "oversized compressed", want: ErrTooLarge, opts: func(o *VerifyOptions) { o.Limits.MaxCompressed = int64(len(good) - 1) }, data: good},
		{name: "oversized uncompressed (gzip bomb)", want: ErrTooLarge, opts: func(o *VerifyOptions) { o.Limits.MaxUncompressed = 1 << 20 }, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "data/zeros", body: make([]byte, 4<<20)})
		})},
		{name: "too many files", want: ErrTooLarge, opts: func(o *VerifyOptions) { o.Limits.MaxFiles = 2 }, data: good},
		{name: "path traversal in tar", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/../../etc/cron.d/x", body: []byte("x")})
		})},
		{name: "dotdot at root", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "../x.yaml", body: []byte("x")})
		})},
		{name: "absolute path", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "/etc/passwd", body: []byte("x")})
		})},
		{name: "file outside roots", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "bin/sh", body: []byte("x")})
		})},
		{name: "backslash path", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: `policies\..\x`, body: []byte("x")})
		})},
		{name: "symlink entry", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/link.yaml", typ: tar.TypeSymlink, link: "/etc/passwd"})
		})},
		{name: "hardlink entry", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/hard.yaml", typ: tar.TypeLink, link: "policies/workloads.yaml"})
		})},
		{name: "directory entry", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/dir/", typ: tar.TypeDir})
		})},
		{name: "duplicate entry", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, entry{name: "policies/workloads.yaml", body: []byte("kind: WorkloadPolicy\n")})
		})},
		{name: "duplicate manifest", want: ErrFormat, data: edit(func(es []entry) []entry {
			return append(es, es[find(es, ManifestName)])
		})},
		{name: "not gzip", want: ErrFormat, data: []byte("PK\x03\x04 not a bundle")},
		{name: "truncated", want: ErrFormat, data: good[:len(good)/2]},
		{name: "no keys", want: ErrSignature, opts: func(o *VerifyOptions) { o.Keys = jwk.NewSet() }, data: good},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := VerifyOptions{Keys: keys, Now: testNow, Scope: "grid-prod"}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			b, err := Verify(tc.data, opts)
			require.Error(t, err)
			assert.Nil(t, b)
			assert.ErrorIs(t, err, tc.want, "%v", err)
			t.Log(err)
			for _, s := range []error{ErrFormat, ErrSignature, ErrFileSet, ErrExpired, ErrNotYetValid, ErrScope, ErrRollback} {
				if s != tc.want && !(tc.want == ErrTooLarge && s == ErrFormat) && !(tc.want == ErrUnknownKey && s == ErrSignature) {
					assert.NotErrorIs(t, err, s, "%v", err)
				}
			}
		})
	}
}

func TestBuildDeterministic(t *testing.T) {
	key := fixedKey(t, 3)
	a := mustBuild(t, testFiles(), testOpts(key, 5))
	// Same input through a differently ordered map and scope list.
	files := map[string][]byte{}
	for k, v := range testFiles() {
		files[k] = append([]byte(nil), v...)
	}
	opts := testOpts(key, 5)
	opts.Scope = []string{"grid-lab", "grid-prod", "grid-lab"}
	opts.Created = opts.Created.In(time.FixedZone("x", 3600)).Add(400 * time.Millisecond)
	b := mustBuild(t, files, opts)
	assert.Equal(t, a, b)
	// Any change in input changes the bytes.
	c := mustBuild(t, files, testOpts(key, 6))
	assert.NotEqual(t, a, c)
}

func TestBuildRejects(t *testing.T) {
	key := fixedKey(t, 1)
	pub, err := key.PublicKey()
	require.NoError(t, err)
	cases := map[string]struct {
		files map[string][]byte
		opts  func(*BuildOptions)
	}{
		"no key":           {opts: func(o *BuildOptions) { o.Key = nil }},
		"public key":       {opts: func(o *BuildOptions) { o.Key = pub }},
		"revision 0":       {opts: func(o *BuildOptions) { o.Revision = 0 }},
		"no expiry":        {opts: func(o *BuildOptions) { o.Expires = time.Time{} }},
		"expiry < created": {opts: func(o *BuildOptions) { o.Expires = o.Created.Add(-time.Second) }},
		"empty scope":      {opts: func(o *BuildOptions) { o.Scope = []string{""} }},
		"no files":         {files: map[string][]byte{}},
		"bad path":         {files: map[string][]byte{"policies/../x.yaml": nil}},
		"outside roots":    {files: map[string][]byte{"x.yaml": nil}},
		"reserved name":    {files: map[string][]byte{ManifestName: nil}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			opts := testOpts(key, 1)
			if tc.opts != nil {
				tc.opts(&opts)
			}
			files := tc.files
			if files == nil {
				files = testFiles()
			}
			_, err := Build(files, opts)
			assert.Error(t, err)
		})
	}
}

func TestKeys(t *testing.T) {
	for _, alg := range []string{AlgEd25519, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			priv, set, err := GenerateKey(alg)
			require.NoError(t, err)
			privJSON, err := json.Marshal(priv)
			require.NoError(t, err)
			setJSON, err := json.Marshal(set)
			require.NoError(t, err)

			k, err := ParseSigningKey(privJSON)
			require.NoError(t, err)
			tp, err := Thumbprint(k)
			require.NoError(t, err)
			assert.Equal(t, tp, k.KeyID(), "kid is the RFC 7638 thumbprint")

			s, err := ParseKeySet(setJSON)
			require.NoError(t, err)
			require.Equal(t, 1, s.Len())
			assert.Contains(t, string(setJSON), `"kid":"`+tp+`"`)
			assert.NotContains(t, string(setJSON), `"d":`)

			_, err = ParseKeySet([]byte(`{"keys":[` + string(privJSON) + `]}`))
			assert.ErrorContains(t, err, "private")
			_, err = ParseSigningKey(setJSON)
			assert.Error(t, err)
		})
	}
	bad := map[string]string{
		"hmac":          `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`,
		"no kid":        `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}]}`,
		"alg mismatch":  `{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"ES256","kid":"a","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}]}`,
		"duplicate kid": `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"},{"kty":"OKP","crv":"Ed25519","kid":"a","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}]}`,
		"empty":         `{"keys":[]}`,
		"not json":      `nope`,
		"use enc":       `{"keys":[{"kty":"OKP","crv":"Ed25519","use":"enc","kid":"a","x":"PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw"}]}`,
	}
	for name, js := range bad {
		_, err := ParseKeySet([]byte(js))
		assert.Error(t, err, name)
	}
	// The checked-in Istio example key set is accepted.
	if b, err := os.ReadFile("../../istio/testdata/verify-keys.json"); err == nil {
		_, err := ParseKeySet(b)
		assert.NoError(t, err)
	}
	_, _, err := GenerateKey("rsa")
	assert.Error(t, err)
}

// TestBuildsForWasip1: the wasm-safe half (verify, Load, Keeper) builds
// for the guard filter's target; packing needs the policy front end.
func TestBuildsForWasip1(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package for wasip1")
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", os.DevNull, "./verify")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// largePolicy is a WorkloadPolicy file with n rules (for the benchmark).
func largePolicy(n int) []byte {
	var b bytes.Buffer
	b.WriteString("apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata:\n  name: large\nspec:\n  rules:\n")
	for i := range n {
		fmt.Fprintf(&b, "    - name: rule-%d\n      effect: allow\n      subjects:\n        - spiffe://grid.example/ns/metering/sa/meter-%d\n      paths:\n        - /v1/meters/%d/readings\n      methods: [GET, HEAD]\n", i, i, i)
	}
	return b.Bytes()
}

func BenchmarkVerify10kRules(b *testing.B) {
	key := fixedKey(b, 1)
	files := testFiles()
	files["policies/large.yaml"] = largePolicy(10000)
	data := mustBuild(b, files, testOpts(key, 1))
	opts := VerifyOptions{Keys: publicSet(b, key), Now: testNow, Scope: "grid-prod"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(data, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(files["policies/large.yaml"])), "policy-bytes")
	b.ReportMetric(float64(len(data)), "bundle-bytes")
}

func TestVerifyLimitsBoundary(t *testing.T) {
	key := fixedKey(t, 1)
	good := mustBuild(t, testFiles(), testOpts(key, 1))
	zr, err := gzip.NewReader(bytes.NewReader(good))
	require.NoError(t, err)
	var tarBytes bytes.Buffer
	_, err = tarBytes.ReadFrom(zr)
	require.NoError(t, err)
	total := int64(tarBytes.Len())
	_, err = Verify(good, VerifyOptions{Keys: publicSet(t, key), Now: testNow,
		Limits: Limits{MaxCompressed: int64(len(good)), MaxUncompressed: total, MaxFiles: len(testFiles())}})
	assert.NoError(t, err, "exactly at every limit is accepted")
	_, err = Verify(good, VerifyOptions{Keys: publicSet(t, key), Now: testNow, Limits: Limits{MaxUncompressed: total - 1}})
	assert.ErrorIs(t, err, ErrTooLarge)
	// A single public JWK (not a set) is accepted as a key set too.
	pub, err := key.PublicKey()
	require.NoError(t, err)
	js, err := json.Marshal(pub)
	require.NoError(t, err)
	set, err := ParseKeySet(js)
	require.NoError(t, err)
	_, err = Verify(good, VerifyOptions{Keys: set, Now: testNow})
	assert.NoError(t, err)
}

func TestVerifySubset(t *testing.T) {
	key := fixedKey(t, 1)
	files := testFiles()
	files["compiled/engine.bin"] = []byte("image bytes")
	data := mustBuild(t, files, testOpts(key, 7))
	opts := VerifyOptions{Keys: publicSet(t, key), Now: testNow, Subset: []string{"compiled/"}}

	b, err := Verify(data, opts)
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"compiled/engine.bin": []byte("image bytes")}, b.Files, "only the subset is read")
	assert.Len(t, b.Manifest.Files, 4, "the manifest still lists every file")

	// Without compiled files, a subset verification reads everything.
	b, err = Verify(mustBuild(t, testFiles(), testOpts(key, 7)), opts)
	require.NoError(t, err)
	assert.Equal(t, testFiles(), b.Files)

	es := unpack(t, data)
	tampered := func(name string, body []byte) []byte {
		out := append([]entry(nil), es...)
		out[find(out, name)].body = body
		return pack(t, out)
	}
	t.Run("tampered subset file", func(t *testing.T) {
		_, err := Verify(tampered("compiled/engine.bin", []byte("other image")), opts)
		require.ErrorIs(t, err, ErrFileSet)
	})
	t.Run("subset file missing", func(t *testing.T) {
		out := append([]entry(nil), es[:find(es, "compiled/engine.bin")]...)
		out = append(out, es[find(es, "compiled/engine.bin")+1:]...)
		_, err := Verify(pack(t, out), opts)
		require.ErrorIs(t, err, ErrFileSet)
	})
	t.Run("extra unlisted subset file", func(t *testing.T) {
		out := append([]entry(nil), es...)
		i := find(out, "compiled/engine.bin")
		out = append(out[:i+1], append([]entry{{name: "compiled/zz.bin", body: []byte("x")}}, out[i+1:]...)...)
		_, err := Verify(pack(t, out), opts)
		require.ErrorIs(t, err, ErrFileSet)
	})
	t.Run("bad signature still fails", func(t *testing.T) {
		_, err := Verify(data, VerifyOptions{Keys: publicSet(t, fixedKey(t, 2)), Now: testNow, Subset: []string{"compiled/"}})
		require.ErrorIs(t, err, ErrSignature)
	})
	t.Run("full verification still checks the sources", func(t *testing.T) {
		_, err := Verify(tampered("policies/workloads.yaml", []byte("changed")), VerifyOptions{Keys: publicSet(t, key), Now: testNow})
		require.ErrorIs(t, err, ErrFileSet)
	})
}
