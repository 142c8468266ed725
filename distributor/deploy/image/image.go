// Package image builds the meshguard container image without a Docker
// daemon: one layer holding the static meshguard binary, an /etc/passwd and
// /etc/group naming an unprivileged user, and nothing else (no shell, no
// package manager). The build is reproducible: entries are sorted, every
// timestamp is the given epoch, owners are fixed and gzip carries no name or
// time, so the same binary and options always give the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image facts the chart and the docs rely on.
const (
	// BinaryPath is where the binary lives in the image (the entrypoint).
	BinaryPath = "/usr/local/bin/meshguard"
	// UID and GID of the unprivileged user "meshguard".
	UID = 65532
	GID = 65532
	// User is the config's user, numeric so Kubernetes' runAsNonRoot can
	// check it without reading /etc/passwd.
	User = "65532:65532"
)

// OCI label keys set on the image config and the manifest.
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelRevision = "org.opencontainers.image.revision"
	LabelVersion  = "org.opencontainers.image.version"
	LabelCreated  = "org.opencontainers.image.created"
	LabelTitle    = "org.opencontainers.image.title"
	LabelLicenses = "org.opencontainers.image.licenses"
	// RefName names the image inside an OCI layout's index.json.
	RefName = "org.opencontainers.image.ref.name"
)

// Options describe one image.
type Options struct {
	// Binary is the statically linked linux meshguard binary.
	Binary []byte
	// Arch is the GOARCH it was built for (default amd64).
	Arch string
	// Epoch is every timestamp in the image (SOURCE_DATE_EPOCH, the commit time).
	Epoch time.Time
	// Source, Revision and Version fill the OCI labels.
	Source, Revision, Version string
}

// Build assembles the image.
func Build(o Options) (v1.Image, error) {
	if len(o.Binary) == 0 {
		return nil, errors.New("image: no binary")
	}
	if o.Version == "" || o.Revision == "" || o.Source == "" {
		return nil, errors.New("image: source, revision and version are required (OCI labels)")
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	epoch := o.Epoch.UTC().Truncate(time.Second)
	layerTar, err := rootfs(o.Binary, epoch)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(layerTar)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	labels := map[string]string{
		LabelSource: o.Source, LabelRevision: o.Revision, LabelVersion: o.Version,
		LabelCreated: epoch.Format(time.RFC3339), LabelTitle: "meshguard", LabelLicenses: "Apache-2.0",
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "meshguard distributor/deploy/image", Comment: "static meshguard binary, passwd/group",
	}})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = o.Arch, "linux", v1.Time{Time: epoch}
	cf.Author = "meshguard"
	cf.Config = v1.Config{
		Entrypoint: []string{BinaryPath},
		Cmd:        []string{"--help"},
		User:       User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels:     labels,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	ann, ok := mutate.Annotations(img, labels).(v1.Image)
	if !ok {
		return nil, errors.New("image: annotations did not yield an image")
	}
	return ann, nil
}

// WriteLayout writes img as the only image of a fresh OCI image layout in
// dir (removed first, so no stale blobs remain), named ref.
func WriteLayout(dir string, img v1.Image, ref string) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{RefName: ref})); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	return img.Digest()
}

type entry struct {
	hdr  tar.Header
	body []byte
}

// rootfs is the layer's tar: sorted, fixed owners and times.
func rootfs(bin []byte, epoch time.Time) ([]byte, error) {
	dir := func(name string, mode int64) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
	}
	file := func(name string, mode int64, body []byte) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
	}
	ents := []entry{
		dir("etc/", 0o755),
		file("etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nmeshguard:x:%d:\n", GID)),
		file("etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/:/sbin/nologin\nmeshguard:x:%d:%d:meshguard:/home/meshguard:/sbin/nologin\n", UID, GID)),
		dir("home/", 0o755),
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "home/meshguard/", Mode: 0o700, Uid: UID, Gid: GID}},
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}},
		dir("usr/", 0o755),
		dir("usr/local/", 0o755),
		dir("usr/local/bin/", 0o755),
		file(BinaryPath[1:], 0o755, bin),
		dir("var/", 0o755),
		dir("var/lib/", 0o755),
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "var/lib/meshguard/", Mode: 0o750, Uid: UID, Gid: GID}},
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].hdr.Name < ents[j].hdr.Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: tar: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses without a name or time in the header.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
