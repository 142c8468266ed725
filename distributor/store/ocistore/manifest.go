package ocistore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// maxManifest bounds a manifest read from the registry.
const maxManifest = 4 << 20

// manifestAccept names the manifest media types distributor/oci accepts.
var manifestAccept = strings.Join([]string{string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList)}, ", ")

// bytesBody is an in-memory request body.
type bytesBody []byte

func (b bytesBody) Size() int64          { return int64(len(b)) }
func (b bytesBody) NewReader() io.Reader { return bytes.NewReader(b) }

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifestDoc holds the manifest fields the referrers bookkeeping reads.
type manifestDoc struct {
	MediaType    string            `json:"mediaType,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Config       *descriptor       `json:"config,omitempty"`
	Subject      *descriptor       `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// index is an OCI image index (the referrers tag schema's document).
type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

func (s *Store) manifestURL(full, ref string) string {
	return s.endpoint("/v2/"+full+"/manifests/"+ref, "")
}

// parseReference tells a digest from a tag.
func parseReference(ref string) (digest.Digest, bool, error) {
	if d, err := digest.Parse(ref); err == nil {
		if !validDigest(d) {
			return "", false, store.ErrUnsupportedDigest
		}
		return d, true, nil
	}
	if !store.ValidTag(ref) {
		return "", false, fmt.Errorf("ocistore: invalid tag %q: %w", ref, store.ErrNotFound)
	}
	return "", false, nil
}

// PutManifest implements store.Store. When the manifest has a subject and
// the registry does not confirm processing it (no OCI-Subject header), the
// subject's referrers tag is updated, as the distribution spec asks of
// clients of such registries.
func (s *Store) PutManifest(ctx context.Context, repo, tag string, m store.Manifest) error {
	if !validDigest(m.Digest) || m.Digest.Algorithm().FromBytes(m.Data) != m.Digest {
		return store.ErrDigestMismatch
	}
	full, err := s.full(repo)
	if err != nil {
		return err
	}
	if tag != "" && !store.ValidTag(tag) {
		return fmt.Errorf("ocistore: invalid tag %q: %w", tag, store.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	// A push by tag makes the registry compute a sha256 digest; others go
	// by digest first.
	var refs []string
	if tag == "" || m.Digest.Algorithm() != digest.SHA256 {
		refs = append(refs, m.Digest.String())
	}
	if tag != "" {
		refs = append(refs, tag)
	}
	subjectDone := false
	for _, ref := range refs {
		resp, err := s.call(ctx, full, http.MethodPut, s.manifestURL(full, ref), bytesBody(m.Data),
			http.Header{"Content-Type": {m.MediaType}}, http.StatusCreated, http.StatusOK, http.StatusAccepted)
		if err != nil {
			return fmt.Errorf("ocistore: manifest %s: %w", m.Digest, err)
		}
		resp.Body.Close()
		if got := digest.Digest(resp.Header.Get("Docker-Content-Digest")); got != "" && got.Algorithm() == m.Digest.Algorithm() && got != m.Digest {
			return fmt.Errorf("ocistore: registry stored manifest %s as %s", m.Digest, got)
		}
		subjectDone = subjectDone || resp.Header.Get("OCI-Subject") != ""
	}
	var doc manifestDoc
	if json.Unmarshal(m.Data, &doc) != nil || doc.Subject == nil || subjectDone || !validDigest(doc.Subject.Digest) {
		return nil
	}
	at := doc.ArtifactType
	if at == "" && doc.Config != nil {
		at = doc.Config.MediaType
	}
	add := &descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Data)), ArtifactType: at, Annotations: doc.Annotations}
	if err := s.updateReferrersTag(ctx, full, doc.Subject.Digest, add, ""); err != nil {
		return fmt.Errorf("ocistore: manifest %s stored, but its referrers tag was not updated: %w", m.Digest, err)
	}
	return nil
}

// getManifest fetches reference from registry repository full; the
// digest is checked against the content.
func (s *Store) getManifest(ctx context.Context, full, reference string) (store.Manifest, error) {
	d, isDigest, err := parseReference(reference)
	if err != nil {
		return store.Manifest{}, err
	}
	resp, err := s.call(ctx, full, http.MethodGet, s.manifestURL(full, reference), nil, http.Header{"Accept": {manifestAccept}}, http.StatusOK)
	if err != nil {
		return store.Manifest{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return store.Manifest{}, fmt.Errorf("ocistore: manifest %s: %w", reference, err)
	}
	if len(data) > maxManifest {
		return store.Manifest{}, fmt.Errorf("ocistore: manifest %s: over %d bytes: %w", reference, maxManifest, store.ErrTooLarge)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "" || mt == "application/json" || mt == "application/octet-stream" {
		var doc manifestDoc
		if json.Unmarshal(data, &doc) == nil && doc.MediaType != "" {
			mt = doc.MediaType
		}
	}
	if isDigest {
		if got := d.Algorithm().FromBytes(data); got != d {
			return store.Manifest{}, fmt.Errorf("ocistore: registry served %s for manifest %s: %w", got, d, store.ErrDigestMismatch)
		}
	} else {
		d = digest.FromBytes(data)
		if hd := digest.Digest(resp.Header.Get("Docker-Content-Digest")); validDigest(hd) && hd.Algorithm().FromBytes(data) == hd {
			d = hd
		}
	}
	return store.Manifest{MediaType: mt, Digest: d, Data: data}, nil
}

// GetManifest implements store.Store.
func (s *Store) GetManifest(ctx context.Context, repo, reference string) (store.Manifest, error) {
	full, err := s.full(repo)
	if err != nil {
		return store.Manifest{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	return s.getManifest(ctx, full, reference)
}

// DeleteManifest implements store.Store. A digest goes with every tag
// pointing at it (the registry's doing); a tag alone needs a registry that
// deletes tags (CNCF Distribution v3), otherwise store.ErrUnsupported.
func (s *Store) DeleteManifest(ctx context.Context, repo, reference string) error {
	_, isDigest, err := parseReference(reference)
	if err != nil {
		return err
	}
	full, err := s.full(repo)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	var doc manifestDoc
	if isDigest {
		// Read it first: a referrer must leave its subject's referrers tag.
		m, err := s.getManifest(ctx, full, reference)
		if err != nil {
			return err
		}
		_ = json.Unmarshal(m.Data, &doc)
	}
	resp, err := s.call(ctx, full, http.MethodDelete, s.manifestURL(full, reference), nil, nil, http.StatusAccepted, http.StatusOK, http.StatusNoContent)
	var te *transport.Error
	if err != nil && !isDigest && !errors.Is(err, store.ErrNotFound) && errors.As(err, &te) &&
		(te.StatusCode == http.StatusBadRequest || te.StatusCode == http.StatusMethodNotAllowed) {
		// Registries without tag deletion read the tag as a malformed digest.
		return fmt.Errorf("ocistore: the registry cannot delete tag %q alone (%v): %w", reference, err, store.ErrUnsupported)
	}
	if err != nil {
		return err
	}
	resp.Body.Close()
	if doc.Subject != nil && validDigest(doc.Subject.Digest) {
		if err := s.updateReferrersTag(ctx, full, doc.Subject.Digest, nil, digest.Digest(reference)); err != nil {
			return fmt.Errorf("ocistore: manifest %s deleted, but its subject's referrers tag was not updated: %w", reference, err)
		}
	}
	return nil
}

// referrersTag is the referrers tag schema's tag for subject d.
func referrersTag(d digest.Digest) string {
	alg, enc := string(d.Algorithm()), d.Encoded()
	if len(alg) > 32 {
		alg = alg[:32]
	}
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return alg + "-" + enc
}

// updateReferrersTag adds add to, and removes remove from, the index under
// subject's referrers tag (read, modify, write: see the package doc).
func (s *Store) updateReferrersTag(ctx context.Context, full string, subject digest.Digest, add *descriptor, remove digest.Digest) error {
	tag := referrersTag(subject)
	idx := index{SchemaVersion: 2, MediaType: string(types.OCIImageIndex)}
	m, err := s.getManifest(ctx, full, tag)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if add == nil {
			return nil
		}
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(m.Data, &idx); err != nil {
			return fmt.Errorf("ocistore: referrers tag %s: %w", tag, err)
		}
		idx.MediaType = string(types.OCIImageIndex)
	}
	n := len(idx.Manifests)
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d descriptor) bool {
		return d.Digest == remove || (add != nil && d.Digest == add.Digest)
	})
	if add == nil && len(idx.Manifests) == n {
		return nil
	}
	if add != nil {
		idx.Manifests = append(idx.Manifests, *add)
	}
	if idx.Manifests == nil {
		idx.Manifests = []descriptor{}
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("ocistore: referrers tag %s: %w", tag, err)
	}
	resp, err := s.call(ctx, full, http.MethodPut, s.manifestURL(full, tag), bytesBody(data),
		http.Header{"Content-Type": {string(types.OCIImageIndex)}}, http.StatusCreated, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Tags implements store.Store with the registry's paginated tags list.
func (s *Store) Tags(ctx context.Context, repo string) ([]string, error) {
	full, err := s.full(repo)
	if err != nil {
		return nil, err
	}
	r, err := s.repository(full)
	if err != nil {
		return nil, fmt.Errorf("ocistore: %w", err)
	}
	opts, err := s.remoteOptions(ctx, full)
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("ocistore: tags of %s: %w", repo, mapError(err))
	}
	tags = slices.DeleteFunc(tags, func(t string) bool { return !store.ValidTag(t) })
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

// Manifests implements store.Store. Registries do not list untagged
// manifests, so this is the digests of the tagged manifests plus their
// referrers (referrers API or tag schema); untagged manifests that are
// no tagged manifest's referrer (children of an index pushed by digest,
// content pushed by digest alone) are missing.
func (s *Store) Manifests(ctx context.Context, repo string) ([]digest.Digest, error) {
	full, err := s.full(repo)
	if err != nil {
		return nil, err
	}
	tags, err := s.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	addDigest := func(d digest.Digest) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, t := range tags {
		d, err := s.headManifest(ctx, full, t)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		addDigest(d)
	}
	for _, d := range slices.Clone(out) {
		refs, err := s.Referrers(ctx, repo, d)
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			addDigest(r)
		}
	}
	slices.Sort(out)
	return out, nil
}

// headManifest resolves a tag to its manifest digest.
func (s *Store) headManifest(ctx context.Context, full, tag string) (digest.Digest, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	resp, err := s.call(ctx, full, http.MethodHead, s.manifestURL(full, tag), nil, http.Header{"Accept": {manifestAccept}}, http.StatusOK)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if d := digest.Digest(resp.Header.Get("Docker-Content-Digest")); validDigest(d) {
		return d, nil
	}
	m, err := s.getManifest(ctx, full, tag)
	if err != nil {
		return "", err
	}
	return m.Digest, nil
}

// Referrers implements store.ReferrerLister with the registry's referrers
// API, or the referrers tag schema where the registry has no such API.
func (s *Store) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]digest.Digest, error) {
	if !validDigest(subject) {
		return nil, store.ErrUnsupportedDigest
	}
	full, err := s.full(repo)
	if err != nil {
		return nil, err
	}
	r, err := s.repository(full)
	if err != nil {
		return nil, fmt.Errorf("ocistore: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	opts, err := s.remoteOptions(ctx, full)
	if err != nil {
		return nil, err
	}
	idx, err := remote.Referrers(r.Digest(subject.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("ocistore: referrers of %s: %w", subject, mapError(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("ocistore: referrers of %s: %w", subject, err)
	}
	out := make([]digest.Digest, 0, len(im.Manifests))
	for _, m := range im.Manifests {
		if d := digest.Digest(m.Digest.String()); validDigest(d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// Repositories implements store.Store with the registry's catalog, keeping
// the repositories under the prefix (without it).
func (s *Store) Repositories(ctx context.Context) ([]string, error) {
	opts, err := s.remoteOptions(ctx, "")
	if err != nil {
		return nil, err
	}
	all, err := remote.Catalog(ctx, s.reg, opts...)
	if err != nil {
		return nil, fmt.Errorf("ocistore: catalog: %w", mapError(err))
	}
	var out []string
	for _, r := range all {
		if s.prefix != "" {
			var ok bool
			if r, ok = strings.CutPrefix(r, s.prefix+"/"); !ok {
				continue
			}
		}
		if store.ValidRepository(r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
