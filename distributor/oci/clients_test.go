package oci_test

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
)

func newServer(t testing.TB, opt oci.Options) (*httptest.Server, string) {
	t.Helper()
	st, err := store.OpenFS(t.TempDir(), store.FSOptions{})
	require.NoError(t, err)
	srv := httptest.NewServer(oci.NewHandler(st, opt))
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func TestGoContainerRegistryRoundTrip(t *testing.T) {
	_, host := newServer(t, oci.Options{AllowDelete: true, Metrics: prometheus.NewRegistry()})
	img, err := random.Image(300_000, 3)
	require.NoError(t, err)
	ref, err := name.ParseReference(host + "/team/app:v1")
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img))

	got, err := remote.Image(ref)
	require.NoError(t, err)
	require.NoError(t, validate.Image(got))
	wantD, _ := img.Digest()
	gotD, _ := got.Digest()
	require.Equal(t, wantD, gotD)

	// crane-level operations.
	tags, err := crane.ListTags(host + "/team/app")
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	require.NoError(t, crane.Tag(host+"/team/app:v1", "v2"))
	d, err := crane.Digest(host + "/team/app:v2")
	require.NoError(t, err)
	require.Equal(t, wantD.String(), d)
	require.NoError(t, crane.Copy(host+"/team/app:v1", host+"/other/app:copied"))
	d, err = crane.Digest(host + "/other/app:copied")
	require.NoError(t, err)
	require.Equal(t, wantD.String(), d)
	repos, err := crane.Catalog(host)
	require.NoError(t, err)
	require.Equal(t, []string{"other/app", "team/app"}, repos)

	// Index round trip.
	idx, err := random.Index(1000, 1, 2)
	require.NoError(t, err)
	iref, _ := name.ParseReference(host + "/team/app:index")
	require.NoError(t, remote.WriteIndex(iref, idx))
	gi, err := remote.Index(iref)
	require.NoError(t, err)
	require.NoError(t, validate.Index(gi))

	// Delete.
	require.NoError(t, crane.Delete(host+"/team/app@"+wantD.String()))
	_, err = crane.Digest(host + "/team/app:v1")
	require.Error(t, err)
}

func TestGoContainerRegistryChunkedLayer(t *testing.T) {
	_, host := newServer(t, oci.Options{})
	// remote.WriteLayer uses POST + PATCH + PUT for streaming layers.
	layer, err := random.Layer(2<<20, "application/vnd.oci.image.layer.v1.tar+gzip")
	require.NoError(t, err)
	repo, err := name.NewRepository(host + "/chunked")
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(repo, layer))
	d, _ := layer.Digest()
	got, err := remote.Layer(repo.Digest(d.String()))
	require.NoError(t, err)
	rc, err := got.Compressed()
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	h, _, err := v1.SHA256(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, d, h)
}

func TestORASRoundTrip(t *testing.T) {
	_, host := newServer(t, oci.Options{})
	ctx := context.Background()
	src := memory.New()
	blob := []byte("\x00asm\x01\x00\x00\x00")
	layer, err := oras.PushBytes(ctx, src, "application/vnd.module.wasm.content.layer.v1+wasm", blob)
	require.NoError(t, err)
	root, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.meshguard.test", oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	require.NoError(t, err)
	require.NoError(t, src.Tag(ctx, root, "v1"))

	repo, err := orasremote.NewRepository(host + "/oras/test")
	require.NoError(t, err)
	repo.PlainHTTP = true
	_, err = oras.Copy(ctx, src, "v1", repo, "v1", oras.DefaultCopyOptions)
	require.NoError(t, err)

	// Referrer (signature-like artifact) pointing at root.
	sig, err := oras.PushBytes(ctx, src, "application/octet-stream", []byte("sig"))
	require.NoError(t, err)
	ref, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, "application/vnd.meshguard.signature", oras.PackManifestOptions{Layers: []ocispec.Descriptor{sig}, Subject: &root})
	require.NoError(t, err)
	require.NoError(t, oras.CopyGraph(ctx, src, repo, ref, oras.DefaultCopyGraphOptions))

	dst := memory.New()
	got, err := oras.Copy(ctx, repo, "v1", dst, "v1", oras.DefaultCopyOptions)
	require.NoError(t, err)
	require.Equal(t, root.Digest, got.Digest)
	rc, err := dst.Fetch(ctx, layer)
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	require.Equal(t, blob, b)

	var refs []ocispec.Descriptor
	require.NoError(t, repo.Referrers(ctx, root, "application/vnd.meshguard.signature", func(d []ocispec.Descriptor) error {
		refs = append(refs, d...)
		return nil
	}))
	require.Len(t, refs, 1)
	require.Equal(t, ref.Digest, refs[0].Digest)
	refs = nil
	require.NoError(t, repo.Referrers(ctx, root, "application/other", func(d []ocispec.Descriptor) error {
		refs = append(refs, d...)
		return nil
	}))
	require.Empty(t, refs)
}
