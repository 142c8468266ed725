package oci

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     json.RawMessage   `json:"platform,omitempty"`
}

// ManifestDoc is the union of the fields of image manifests and indexes the
// registry inspects.
type ManifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config,omitempty"`
	Layers        []Descriptor      `json:"layers,omitempty"`
	Manifests     []Descriptor      `json:"manifests,omitempty"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func checkDescriptor(d *Descriptor, what string) error {
	if d.MediaType == "" {
		return fmt.Errorf("%s: missing mediaType", what)
	}
	if _, _, err := mime.ParseMediaType(d.MediaType); err != nil {
		return fmt.Errorf("%s: invalid mediaType %q", what, d.MediaType)
	}
	if _, ok := parseDigest(string(d.Digest)); !ok {
		return fmt.Errorf("%s: invalid digest %q", what, d.Digest)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size", what)
	}
	return nil
}

// DecodeManifest parses and structurally validates a manifest or index
// whose Content-Type is contentType. It returns the effective media type.
func DecodeManifest(contentType string, data []byte) (ManifestDoc, string, error) {
	var m ManifestDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return m, "", fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	if dec.More() {
		return m, "", errors.New("manifest has trailing data")
	}
	if m.SchemaVersion != 2 {
		return m, "", fmt.Errorf("unsupported schemaVersion %d", m.SchemaVersion)
	}
	mt := m.MediaType
	if ct, _, err := mime.ParseMediaType(contentType); err == nil && ct != "" {
		if mt != "" && mt != ct {
			return m, "", fmt.Errorf("mediaType %q does not match Content-Type %q", mt, ct)
		}
		mt = ct
	}
	switch types.MediaType(mt) {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		if m.Config == nil {
			return m, "", errors.New("image manifest without config")
		}
		if err := checkDescriptor(m.Config, "config"); err != nil {
			return m, "", err
		}
		for i := range m.Layers {
			if err := checkDescriptor(&m.Layers[i], fmt.Sprintf("layers[%d]", i)); err != nil {
				return m, "", err
			}
		}
		if m.Manifests != nil {
			return m, "", errors.New("image manifest with manifests field")
		}
	case types.OCIImageIndex, types.DockerManifestList:
		for i := range m.Manifests {
			if err := checkDescriptor(&m.Manifests[i], fmt.Sprintf("manifests[%d]", i)); err != nil {
				return m, "", err
			}
		}
		if m.Config != nil || m.Layers != nil {
			return m, "", errors.New("index with config or layers")
		}
	default:
		return m, "", fmt.Errorf("unsupported manifest media type %q", mt)
	}
	if m.Subject != nil {
		if err := checkDescriptor(m.Subject, "subject"); err != nil {
			return m, "", err
		}
	}
	return m, mt, nil
}

func (h *Handler) manifest(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	ref := rt.ref
	isDigest := false
	if d, err := digest.Parse(ref); err == nil {
		if _, ok := parseDigest(ref); !ok {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, "unsupported digest algorithm")
			return
		}
		ref, isDigest = d.String(), true
	} else if !store.ValidTag(ref) {
		writeError(w, http.StatusBadRequest, codeManifestInvalid, "invalid tag or digest")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		m, err := h.st.GetManifest(ctx, rt.name, ref)
		if err != nil {
			h.storeError(w, err, codeManifestUnknown)
			return
		}
		hd := w.Header()
		hd.Set("Content-Type", m.MediaType)
		hd.Set("Docker-Content-Digest", m.Digest.String())
		hd.Set("Content-Length", strconv.Itoa(len(m.Data)))
		hd.Set("ETag", `"`+m.Digest.String()+`"`)
		if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, m.Digest.String()) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(m.Data)
		}
	case http.MethodPut:
		h.putManifest(w, r, rt, ref, isDigest)
	case http.MethodDelete:
		if !h.opt.AllowDelete {
			writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "deletes are disabled")
			return
		}
		if err := h.st.DeleteManifest(ctx, rt.name, ref); err != nil {
			h.storeError(w, err, codeManifestUnknown)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		methodNotAllowed(w)
	}
}

// errInflated marks a layer refused for what it inflates to.
var errInflated = errors.New("layer inflates beyond the limit")

// checkInflated inflates a gzip'd layer (tar+gzip media types) in constant
// memory and refuses one beyond MaxInflatedBytes or not gzip at all.
func (h *Handler) checkInflated(r *http.Request, repo string, l Descriptor) error {
	switch types.MediaType(l.MediaType) {
	case types.OCILayer, types.DockerLayer:
	default:
		return nil
	}
	f, _, err := h.st.OpenBlob(r.Context(), repo, l.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: layer %s is not gzip: %v", errInflated, l.Digest, err)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(zr, h.opt.MaxInflatedBytes+1))
	if err != nil {
		return fmt.Errorf("%w: layer %s: gunzip: %v", errInflated, l.Digest, err)
	}
	if n > h.opt.MaxInflatedBytes {
		return fmt.Errorf("%w: layer %s inflates to more than %d bytes", errInflated, l.Digest, h.opt.MaxInflatedBytes)
	}
	return nil
}

// maxTagsPerPush bounds the tags one manifest push may set.
const maxTagsPerPush = 16

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, rt route, ref string, isDigest bool) {
	ctx := r.Context()
	data, err := drain(http.MaxBytesReader(w, r.Body, h.opt.MaxManifestBytes), h.opt.MaxManifestBytes)
	if err != nil {
		h.storeError(w, err, codeManifestInvalid)
		return
	}
	doc, mt, err := DecodeManifest(r.Header.Get("Content-Type"), data)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeManifestInvalid, err.Error())
		return
	}
	alg := digest.SHA256
	var tags []string
	if isDigest {
		alg = digest.Digest(ref).Algorithm()
	} else {
		tags = append(tags, ref)
	}
	// ?tag= on a push by digest (distribution-spec 1.1) tags it in one go.
	for _, t := range r.URL.Query()["tag"] {
		if !store.ValidTag(t) {
			writeError(w, http.StatusBadRequest, codeManifestInvalid, fmt.Sprintf("invalid tag %q", t))
			return
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if len(tags) > maxTagsPerPush {
		writeError(w, http.StatusBadRequest, codeManifestInvalid, fmt.Sprintf("at most %d tags in one push", maxTagsPerPush))
		return
	}
	d := alg.FromBytes(data)
	if isDigest && d.String() != ref {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "manifest digest does not match reference")
		return
	}
	// Non-distributable ("foreign") layers live outside the registry; a
	// module must be served whole from here, so they are refused.
	for i, l := range doc.Layers {
		if !types.MediaType(l.MediaType).IsDistributable() {
			writeError(w, http.StatusBadRequest, codeManifestInvalid, fmt.Sprintf("layers[%d] has the non-distributable media type %q: this registry only accepts content it holds", i, l.MediaType))
			return
		}
	}
	// Referenced content must exist in the repository.
	if doc.Config != nil {
		if _, err := h.st.StatBlob(ctx, rt.name, doc.Config.Digest); err != nil {
			writeError(w, http.StatusBadRequest, codeManifestBlobUnknown, "config blob "+doc.Config.Digest.String()+" unknown")
			return
		}
	}
	for _, l := range doc.Layers {
		if _, err := h.st.StatBlob(ctx, rt.name, l.Digest); err != nil {
			writeError(w, http.StatusBadRequest, codeManifestBlobUnknown, "layer blob "+l.Digest.String()+" unknown")
			return
		}
	}
	for _, l := range doc.Layers {
		if err := h.checkInflated(r, rt.name, l); err != nil {
			if errors.Is(err, errInflated) {
				writeError(w, http.StatusBadRequest, codeManifestInvalid, err.Error())
			} else {
				h.storeError(w, err, codeManifestBlobUnknown)
			}
			return
		}
	}
	for _, m := range doc.Manifests {
		if _, err := h.st.GetManifest(ctx, rt.name, m.Digest.String()); err != nil {
			writeError(w, http.StatusBadRequest, codeManifestBlobUnknown, "manifest "+m.Digest.String()+" unknown")
			return
		}
	}
	m := store.Manifest{MediaType: mt, Digest: d, Data: data}
	if len(tags) == 0 {
		tags = []string{""}
	}
	for _, tag := range tags {
		if err := h.st.PutManifest(ctx, rt.name, tag, m); err != nil {
			h.storeError(w, err, codeNameUnknown)
			return
		}
		if tag != "" && isDigest {
			w.Header().Add("OCI-Tag", tag)
		}
	}
	if doc.Subject != nil {
		w.Header().Set("OCI-Subject", doc.Subject.Digest.String())
	}
	w.Header().Set("Location", "/v2/"+rt.name+"/manifests/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// referrers answers GET /v2/<name>/referrers/<digest> with an OCI index of
// the manifests in the repository whose subject is digest.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w)
		return
	}
	subject, ok := parseDigest(rt.ref)
	if !ok {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
		return
	}
	ctx := r.Context()
	filter := r.URL.Query().Get("artifactType")
	var list []digest.Digest
	var err error
	if rl, ok := h.st.(store.ReferrerLister); ok {
		list, err = rl.Referrers(ctx, rt.name, subject)
	} else {
		list, err = h.st.Manifests(ctx, rt.name)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		h.storeError(w, err, codeNameUnknown)
		return
	}
	out := []Descriptor{}
	for _, d := range list {
		m, err := h.st.GetManifest(ctx, rt.name, d.String())
		if err != nil {
			continue
		}
		var doc ManifestDoc
		if json.Unmarshal(m.Data, &doc) != nil || doc.Subject == nil || doc.Subject.Digest != subject {
			continue
		}
		at := doc.ArtifactType
		if at == "" && doc.Config != nil {
			at = doc.Config.MediaType
		}
		if filter != "" && at != filter {
			continue
		}
		out = append(out, Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Data)), ArtifactType: at, Annotations: doc.Annotations})
	}
	if filter != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", string(types.OCIImageIndex))
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIImageIndex, "manifests": out})
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}
