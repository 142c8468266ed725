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
// The result is checked to be Wasm of at most MaxModuleBytes.
func Extract(manifest []byte, fetch Fetcher) ([]byte, error) {
	var buf bytes.Buffer
	if _, _, err := ExtractTo(&buf, manifest, fetch, MaxModuleBytes); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ExtractTo streams the module held by manifest into w, in constant
// memory: the layer is hashed while it is read (and inflated and untarred
// for an image layer), and a layer that does not match its digest is an
// error at the end, so w must be discarded on any error. The module is
// checked to be Wasm of at most max bytes. It returns the module's size
// and hex sha256.
func ExtractTo(w io.Writer, manifest []byte, fetch Fetcher, max int64) (int64, string, error) {
	l, raw, err := WasmLayer(manifest)
	if err != nil {
		return 0, "", err
	}
	if err := l.Digest.Validate(); err != nil {
		return 0, "", fmt.Errorf("modules: layer digest %q: %w", l.Digest, err)
	}
	rc, err := fetch(l.Digest)
	if err != nil {
		return 0, "", &FetchError{Digest: l.Digest, Err: err}
	}
	defer rc.Close()
	lh := l.Digest.Algorithm().Hash()
	// The layer itself is never larger than the module limit allows (a
	// module compresses; an image layer adds a tar header and padding).
	layer := io.TeeReader(io.LimitReader(rc, max+64<<10), lh)
	src := layer
	if !raw {
		zr, err := gzip.NewReader(layer)
		if err != nil {
			return 0, "", fmt.Errorf("modules: layer %s: gunzip: %w", l.Digest, err)
		}
		if src, err = pluginEntry(zr); err != nil {
			return 0, "", fmt.Errorf("modules: layer %s: %w", l.Digest, err)
		}
	}
	mh := sha256.New()
	head := &prefix{want: 8}
	n, err := io.Copy(io.MultiWriter(w, mh, head), io.LimitReader(src, max+1))
	if err != nil {
		return 0, "", fmt.Errorf("modules: reading layer %s: %w", l.Digest, err)
	}
	if n > max {
		return 0, "", fmt.Errorf("modules: module is more than %d bytes", max)
	}
	// Hash the rest of the layer (tar padding, gzip trailer) for the digest.
	if _, err := io.Copy(io.Discard, layer); err != nil {
		return 0, "", fmt.Errorf("modules: reading layer %s: %w", l.Digest, err)
	}
	if digest.NewDigestFromEncoded(l.Digest.Algorithm(), hex.EncodeToString(lh.Sum(nil))) != l.Digest {
		return 0, "", fmt.Errorf("modules: layer %s: content digest mismatch", l.Digest)
	}
	if n < 8 || !bytes.Equal(head.b[:4], []byte("\x00asm")) {
		return 0, "", fmt.Errorf("modules: %w", ErrNotWasm)
	}
	return n, hex.EncodeToString(mh.Sum(nil)), nil
}

// FetchError is a failure to fetch a layer from storage (not a problem of
// the content).
type FetchError struct {
	Digest digest.Digest
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("modules: fetching layer %s: %v", e.Digest, e.Err)
}
func (e *FetchError) Unwrap() error { return e.Err }

// prefix keeps the first want bytes written to it.
type prefix struct {
	b    []byte
	want int
}

func (p *prefix) Write(b []byte) (int, error) {
	if k := p.want - len(p.b); k > 0 {
		p.b = append(p.b, b[:min(k, len(b))]...)
	}
	return len(b), nil
}

// pluginEntry positions a tar stream at plugin.wasm.
func pluginEntry(r io.Reader) (io.Reader, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New(PluginFile + " not found in layer")
		}
		if err != nil {
			return nil, fmt.Errorf("untar: %w", err)
		}
		if h.Typeflag == tar.TypeReg && path.Clean("/"+h.Name) == "/"+PluginFile {
			return tr, nil
		}
	}
}
