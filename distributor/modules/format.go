// Package modules packages Proxy-Wasm modules as OCI content in the three
// layouts Istio's agent accepts, extracts them again, publishes them to any
// OCI registry, and serves them over plain HTTP for Envoy remote fetches.
//
// Layouts (Format):
//
//   - oci-image (default): OCI image manifest whose single (last) layer is
//     application/vnd.oci.image.layer.v1.tar+gzip holding plugin.wasm, with
//     the annotation module.wasm.image/variant=compat. Standard media types:
//     every registry (Harbor, ECR, GCR, Artifact Registry, Distribution) and
//     tool (crane, docker, skopeo) handles it, and Istio reads it.
//   - docker: the same as a Docker v2 schema 2 image.
//   - oci-artifact: the Wasm artifact variant: config and one layer of
//     application/vnd.module.wasm.config.v1+json plus the raw module as
//     application/vnd.module.wasm.content.layer.v1+wasm (exactly two layers,
//     as Istio requires). Some registries refuse custom media types.
//
// Packaging is deterministic: the same module always yields the same
// manifest digest (zero timestamps, fixed tar header, gzip without name or
// mtime, fixed JSON field order).
package modules

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Format is a module packaging layout.
type Format string

// Formats.
const (
	FormatOCIImage    Format = "oci-image"
	FormatDocker      Format = "docker"
	FormatOCIArtifact Format = "oci-artifact"
)

// ParseFormat parses a --format value; empty means FormatOCIImage.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "":
		return FormatOCIImage, nil
	case FormatOCIImage, FormatDocker, FormatOCIArtifact:
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown module format %q: want oci-image, docker or oci-artifact", s)
}

// Media types of the Wasm artifact variant; the OCI and Docker image media
// types are go-containerregistry's (pkg/v1/types).
const (
	MediaTypeWasmConfig  types.MediaType = "application/vnd.module.wasm.config.v1+json"
	MediaTypeWasmContent types.MediaType = "application/vnd.module.wasm.content.layer.v1+wasm"
)

// PluginFile is the file name Istio looks for inside an image layer.
const PluginFile = "plugin.wasm"

// MaxModuleBytes is Istio's limit on a module.
const MaxModuleBytes = 256 << 20

// ErrNotWasm means the content does not start with the Wasm magic.
var ErrNotWasm = errors.New("not a WebAssembly module (missing \\0asm magic)")

// CheckWasm verifies b is a WebAssembly binary module of acceptable size.
func CheckWasm(b []byte) error {
	if len(b) < 8 || !bytes.Equal(b[:4], []byte("\x00asm")) {
		return ErrNotWasm
	}
	if len(b) > MaxModuleBytes {
		return fmt.Errorf("module is %d bytes, above Istio's %d byte limit", len(b), MaxModuleBytes)
	}
	return nil
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType types.MediaType `json:"mediaType"`
	Digest    digest.Digest   `json:"digest"`
	Size      int64           `json:"size"`
}

// Manifest is an image manifest (OCI or Docker v2 schema 2).
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Blob is a piece of content referenced by a manifest.
type Blob struct {
	Descriptor
	Data []byte
}

// Package is a module packaged for a registry.
type Package struct {
	MediaType types.MediaType // manifest media type
	Manifest  []byte          // manifest bytes
	Digest    digest.Digest   // manifest digest (the WasmPlugin sha256 for oci://)
	Blobs     []Blob          // config first, then layers
	WasmSHA   string          // hex sha256 of the module itself
}

func blobOf(mt types.MediaType, data []byte) Blob {
	return Blob{Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}, data}
}

// tarGz returns a deterministic gzip'd tar holding wasm as plugin.wasm, and
// the digest of the uncompressed tar (the image diff ID).
func tarGz(wasm []byte) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	hdr := &tar.Header{
		Name:     PluginFile,
		Mode:     0o644,
		Size:     int64(len(wasm)),
		ModTime:  time.Unix(0, 0),
		Typeflag: tar.TypeReg,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write(wasm); err != nil {
		return nil, "", err
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digest.FromBytes(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}

type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
	} `json:"config"`
	RootFS struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

// Build packages a Wasm module in format f.
func Build(wasm []byte, f Format) (*Package, error) {
	if err := CheckWasm(wasm); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(wasm)
	p := &Package{WasmSHA: hex.EncodeToString(sum[:])}
	var m Manifest
	m.SchemaVersion = 2
	switch f {
	case FormatOCIImage, FormatDocker:
		layer, diffID, err := tarGz(wasm)
		if err != nil {
			return nil, fmt.Errorf("modules: packing layer: %w", err)
		}
		var cfg imageConfig
		cfg.Architecture, cfg.OS = "wasm", "wasip1"
		cfg.RootFS.Type = "layers"
		cfg.RootFS.DiffIDs = []digest.Digest{diffID}
		cfgJSON, _ := json.Marshal(cfg)
		cfgMT, layerMT := types.OCIConfigJSON, types.OCILayer
		m.MediaType = types.OCIManifestSchema1
		if f == FormatDocker {
			cfgMT, layerMT = types.DockerConfigJSON, types.DockerLayer
			m.MediaType = types.DockerManifestSchema2
		} else {
			m.Annotations = map[string]string{"module.wasm.image/variant": "compat"}
		}
		p.Blobs = []Blob{blobOf(cfgMT, cfgJSON), blobOf(layerMT, layer)}
	case FormatOCIArtifact:
		cfgJSON := []byte(`{"type":"envoy_proxy","abiVersions":["proxy_abi_version_0_2_1"],"config":{"rootIds":[]}}`)
		m.MediaType = types.OCIManifestSchema1
		c := blobOf(MediaTypeWasmConfig, cfgJSON)
		p.Blobs = []Blob{c, c, blobOf(MediaTypeWasmContent, wasm)}
	default:
		return nil, fmt.Errorf("modules: unknown format %q", f)
	}
	m.Config = p.Blobs[0].Descriptor
	for _, b := range p.Blobs[1:] {
		m.Layers = append(m.Layers, b.Descriptor)
	}
	if f == FormatOCIArtifact {
		p.Blobs = append(p.Blobs[:1], p.Blobs[2:]...) // config blob listed once
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	p.MediaType, p.Manifest, p.Digest = m.MediaType, raw, digest.FromBytes(raw)
	return p, nil
}

// Fetcher returns the content of a blob.
type Fetcher func(d digest.Digest) (io.ReadCloser, error)

// WasmLayer finds the layer holding the module in a manifest: the raw
// Wasm content layer of the artifact variant, or the last tar+gzip layer
// of an image. raw reports whether the layer is the module itself.
func WasmLayer(manifest []byte) (layer Descriptor, raw bool, err error) {
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return Descriptor{}, false, fmt.Errorf("modules: manifest: %w", err)
	}
	if len(m.Layers) == 0 {
		return Descriptor{}, false, errors.New("modules: manifest has no layers (an index or a non-module image?)")
	}
	for _, l := range m.Layers {
		if l.MediaType == MediaTypeWasmContent {
			return l, true, nil
		}
	}
	last := m.Layers[len(m.Layers)-1]
	switch last.MediaType {
	case types.OCILayer, types.DockerLayer:
		return last, false, nil
	}
	return Descriptor{}, false, fmt.Errorf("modules: no Wasm layer: last layer has media type %q", last.MediaType)
}

// Extract returns the module held by manifest, fetching layers with fetch.
// The result is checked to be Wasm.
func Extract(manifest []byte, fetch Fetcher) ([]byte, error) {
	l, raw, err := WasmLayer(manifest)
	if err != nil {
		return nil, err
	}
	if err := l.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("modules: layer digest %q: %w", l.Digest, err)
	}
	rc, err := fetch(l.Digest)
	if err != nil {
		return nil, fmt.Errorf("modules: fetching layer %s: %w", l.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxModuleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("modules: reading layer %s: %w", l.Digest, err)
	}
	if l.Digest.Algorithm().FromBytes(data) != l.Digest {
		return nil, fmt.Errorf("modules: layer %s: content digest mismatch", l.Digest)
	}
	var wasm []byte
	if raw {
		wasm = data
	} else if wasm, err = untarPlugin(data); err != nil {
		return nil, fmt.Errorf("modules: layer %s: %w", l.Digest, err)
	}
	if err := CheckWasm(wasm); err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	return wasm, nil
}

// untarPlugin finds plugin.wasm in a gzip'd tar.
func untarPlugin(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("gunzip: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New(PluginFile + " not found in layer")
		}
		if err != nil {
			return nil, fmt.Errorf("untar: %w", err)
		}
		if h.Typeflag == tar.TypeReg && path.Clean("/"+h.Name) == "/"+PluginFile {
			return io.ReadAll(io.LimitReader(tr, MaxModuleBytes+1))
		}
	}
}
