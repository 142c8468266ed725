package ocistore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/internal/cncftest"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/distributor/store/ocistore"
	"github.com/meshguard/meshguard/distributor/store/storetest"
)

var prefixes atomic.Int64

// newStore returns a Store on the registry at addr under a prefix of its
// own, so tests sharing one registry do not see each other.
func newStore(t *testing.T, addr, prefix string) *ocistore.Store {
	t.Helper()
	if prefix == "" {
		prefix = fmt.Sprintf("test%d", prefixes.Add(1))
	}
	s, err := ocistore.New(ocistore.Options{
		Registry:  addr,
		Prefix:    prefix,
		PlainHTTP: true,
		Auth:      authn.Anonymous,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestConformance(t *testing.T) {
	addr := cncftest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, addr, "")
	})
}

// TestReplicasShareState: two Stores on one registry are two distributor
// replicas; whatever one starts, the other can continue.
func TestReplicasShareState(t *testing.T) {
	addr := cncftest.Start(t)
	a, b := newStore(t, addr, "shared"), newStore(t, addr, "shared")
	ctx := context.Background()
	data := randomBytes(t, 4<<20) // chunks spill to scratch files
	d := digest.FromBytes(data)
	const mib = 1 << 20

	id, err := a.NewUpload(ctx, "mods/guard")
	require.NoError(t, err)
	id1, n, err := a.AppendUpload(ctx, "mods/guard", id, 0, bytes.NewReader(data[:mib]), 0)
	require.NoError(t, err)
	require.EqualValues(t, mib, n)
	_, n, err = b.AppendUpload(ctx, "mods/guard", id1, mib, bytes.NewReader(data[mib:2*mib]), 0)
	require.NoError(t, err)
	require.EqualValues(t, 2*mib, n)
	// id1 is stale now (as for a client that lost the last response): the
	// registry decides where the upload ends, with or without an offset.
	_, n, err = a.AppendUpload(ctx, "mods/guard", id1, 2*mib, bytes.NewReader(data[2*mib:3*mib]), 0)
	require.NoError(t, err)
	require.EqualValues(t, 3*mib, n)
	id4, n, err := b.AppendUpload(ctx, "mods/guard", id1, -1, bytes.NewReader(data[3*mib:]), 0)
	require.NoError(t, err)
	require.EqualValues(t, len(data), n)
	size, err := a.UploadSize(ctx, "mods/guard", id1)
	require.NoError(t, err)
	require.EqualValues(t, len(data), size)
	_, n, err = b.AppendUpload(ctx, "mods/guard", id1, mib, bytes.NewReader(data[:10]), 0)
	require.ErrorIs(t, err, store.ErrInvalidOffset)
	require.EqualValues(t, len(data), n)
	got, err := a.CommitUpload(ctx, "mods/guard", id4, d)
	require.NoError(t, err)
	require.EqualValues(t, len(data), got)

	rc, size, err := a.OpenBlob(ctx, "mods/guard", d)
	require.NoError(t, err)
	read, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.EqualValues(t, len(data), size)
	require.True(t, bytes.Equal(data, read))

	cfg := []byte(`{}`)
	_, err = b.PutBlob(ctx, "mods/guard", digest.FromBytes(cfg), bytes.NewReader(cfg), 0)
	require.NoError(t, err)
	raw := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","digest":%q,"size":%d}]}`, digest.FromBytes(cfg), d, len(data)))
	m := store.Manifest{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromBytes(raw), Data: raw}
	require.NoError(t, a.PutManifest(ctx, "mods/guard", "v1", m))
	gotM, err := b.GetManifest(ctx, "mods/guard", "v1")
	require.NoError(t, err)
	require.Equal(t, m, gotM)
	tags, err := b.Tags(ctx, "mods/guard")
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	repos, err := b.Repositories(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"mods/guard"}, repos)
	require.NoError(t, b.DeleteManifest(ctx, "mods/guard", "v1"))
	_, err = a.GetManifest(ctx, "mods/guard", "v1")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestUploadIDsStayInTheirRepository: an upload id of one repository is
// refused for another, and ids that are not ours are refused without a
// request.
func TestUploadIDsStayInTheirRepository(t *testing.T) {
	addr := cncftest.Start(t)
	s := newStore(t, addr, "")
	ctx := context.Background()
	id, err := s.NewUpload(ctx, "a")
	require.NoError(t, err)
	_, err = s.UploadSize(ctx, "b", id)
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, bad := range []string{"", "x", "MCAvdjIvX2NhdGFsb2c", strings.Repeat("A", 5000), id + "!"} {
		_, err := s.UploadSize(ctx, "a", bad)
		require.ErrorIs(t, err, store.ErrNotFound, bad)
		_, _, err = s.AppendUpload(ctx, "a", bad, 0, strings.NewReader("x"), 0)
		require.ErrorIs(t, err, store.ErrNotFound, bad)
	}
	require.NoError(t, s.AbortUpload(ctx, "a", id))
}

// TestMountFallsBackToCopy: CNCF Distribution answers a mount it cannot do
// with an upload session; the store then copies, and a blob the source
// lacks is not found.
func TestMountFallsBackToCopy(t *testing.T) {
	addr := cncftest.Start(t)
	s := newStore(t, addr, "")
	ctx := context.Background()
	data := randomBytes(t, 5000)
	d := digest.FromBytes(data)
	require.ErrorIs(t, s.MountBlob(ctx, "src", "dst", d), store.ErrNotFound)
	_, err := s.PutBlob(ctx, "src", d, bytes.NewReader(data), 0)
	require.NoError(t, err)
	require.NoError(t, s.MountBlob(ctx, "src", "dst", d))
	n, err := s.StatBlob(ctx, "dst", d)
	require.NoError(t, err)
	require.EqualValues(t, len(data), n)
}

// TestSchemeIsExplicit: without PlainHTTP the store only speaks HTTPS and
// does not fall back to the registry's plain HTTP.
func TestSchemeIsExplicit(t *testing.T) {
	addr := cncftest.Start(t)
	s, err := ocistore.New(ocistore.Options{Registry: addr, Auth: authn.Anonymous})
	require.NoError(t, err)
	require.Error(t, s.Ping(context.Background()))
	require.NoError(t, newStore(t, addr, "").Ping(context.Background()))
}

// TestCredentials puts an authenticating proxy in front of the registry:
// Basic credentials from a file, re-read when the file changes.
func TestCredentials(t *testing.T) {
	addr := cncftest.Start(t)
	var password atomic.Value
	password.Store("first")
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != password.Load().(string) {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer ts.Close()
	host := strings.TrimPrefix(ts.URL, "http://")
	pwFile := filepath.Join(t.TempDir(), "password")
	require.NoError(t, os.WriteFile(pwFile, []byte("first\n"), 0o600))

	auth, err := ocistore.Credentials{Username: "ci", PasswordFile: pwFile}.Authenticator()
	require.NoError(t, err)
	s, err := ocistore.New(ocistore.Options{Registry: host, PlainHTTP: true, Auth: auth})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, s.Ping(ctx))
	data := []byte("hello")
	_, err = s.PutBlob(ctx, "auth/x", digest.FromBytes(data), bytes.NewReader(data), 0)
	require.NoError(t, err)

	password.Store("second")
	require.Error(t, s.Ping(ctx), "old password")
	require.NoError(t, os.WriteFile(pwFile, []byte("second\n"), 0o600))
	require.NoError(t, s.Ping(ctx), "the rotated file is read again")

	anon := newStore(t, host, "")
	require.Error(t, anon.Ping(ctx))
}

func TestCredentialsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    ocistore.Credentials
		ok   bool
	}{
		{"none", ocistore.Credentials{}, true},
		{"password", ocistore.Credentials{Username: "u", Password: "p"}, true},
		{"password file", ocistore.Credentials{Username: "u", PasswordFile: "f"}, true},
		{"token", ocistore.Credentials{TokenFile: "f"}, true},
		{"username alone", ocistore.Credentials{Username: "u"}, false},
		{"password alone", ocistore.Credentials{Password: "p"}, false},
		{"both passwords", ocistore.Credentials{Username: "u", Password: "p", PasswordFile: "f"}, false},
		{"token and user", ocistore.Credentials{Username: "u", Password: "p", TokenFile: "f"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.ok, tc.c.Validate() == nil)
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []ocistore.Options{
		{},
		{Registry: "https://r.example.com"},
		{Registry: "r.example.com/prefix"},
		{Registry: "r.example.com", Prefix: "UPPER"},
		{Registry: "r.example.com", CAFile: "/nonexistent"},
	} {
		_, err := ocistore.New(o)
		assert.Error(t, err, "%+v", o)
	}
}
