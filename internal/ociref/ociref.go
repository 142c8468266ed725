// Package ociref parses the OCI references meshguard's verbs take
// (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST, with or
// without an oci:// prefix, as Istio's WasmPlugin URLs write them) and
// refuses what a Docker client would silently resolve to Docker Hub: a
// reference without a registry host ("guard:v1") and a registry without a
// repository ("127.0.0.1:5000", which Docker reads as the image 127.0.0.1
// with tag 5000 on Docker Hub). Docker Hub is used only when named
// (docker.io/...).
package ociref

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// ErrReference is wrapped by every error of Parse.
var ErrReference = errors.New("invalid OCI reference")

// Scheme is the optional prefix Istio uses for OCI module URLs.
const Scheme = "oci://"

// Parse reads ref and returns the reference fully qualified
// (REGISTRY/REPOSITORY:TAG or @DIGEST) for go-containerregistry.
func Parse(ref string) (string, error) {
	s := strings.TrimPrefix(ref, Scheme)
	if s == "" {
		return "", fmt.Errorf("%w %q: empty", ErrReference, ref)
	}
	host, repo, ok := strings.Cut(s, "/")
	if !ok || repo == "" {
		return "", fmt.Errorf("%w %q: no repository: want REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST", ErrReference, ref)
	}
	if !isRegistryHost(host) {
		return "", fmt.Errorf("%w %q: %q is not a registry host (it has no '.' or ':' and is not localhost), so a Docker client would send this to Docker Hub; name the registry, e.g. registry.example.com/%s (docker.io/%s for Docker Hub)", ErrReference, ref, host, s, s)
	}
	r, err := name.ParseReference(s, name.WithDefaultRegistry(""))
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrReference, ref, err)
	}
	if r.Context().RegistryStr() == "" {
		return "", fmt.Errorf("%w %q: no registry", ErrReference, ref)
	}
	return r.Name(), nil
}

// isRegistryHost is Docker's rule for the first path component: a host
// when it holds a '.' or a ':' (a port) or is localhost.
func isRegistryHost(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost"
}
