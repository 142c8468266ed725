package modules

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// RemoteOptions configure Push and Pull.
type RemoteOptions struct {
	// Insecure allows plain HTTP (and unverified TLS) to the registry.
	// 127.0.0.1 and localhost registries use plain HTTP regardless.
	Insecure bool
	// Auth overrides credentials; default is the Docker keychain
	// (~/.docker/config.json, credential helpers), else anonymous.
	Auth authn.Authenticator
}

func (o RemoteOptions) nameOpts() []name.Option {
	if o.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (o RemoteOptions) remoteOpts(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	if o.Auth != nil {
		opts = append(opts, remote.WithAuth(o.Auth))
	} else {
		opts = append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	return opts
}

// rawManifest is a remote.Taggable with an explicit media type.
type rawManifest struct {
	data []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.data, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// Push uploads p to ref (REGISTRY/REPO:TAG) and returns the manifest digest.
func Push(ctx context.Context, p *Package, ref string, o RemoteOptions) (digest.Digest, error) {
	tag, err := name.ParseReference(ref, o.nameOpts()...)
	if err != nil {
		return "", fmt.Errorf("modules: reference %q: %w", ref, err)
	}
	ropts := o.remoteOpts(ctx)
	for _, b := range p.Blobs {
		layer := static.NewLayer(b.Data, b.MediaType)
		if err := remote.WriteLayer(tag.Context(), layer, ropts...); err != nil {
			return "", fmt.Errorf("modules: uploading blob %s: %w", b.Digest, err)
		}
	}
	if err := remote.Put(tag, rawManifest{p.Manifest, p.MediaType}, ropts...); err != nil {
		return "", fmt.Errorf("modules: uploading manifest: %w", err)
	}
	return p.Digest, nil
}

// Pull fetches the module at ref (REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST)
// in any of the three layouts. It returns the module and the manifest digest.
func Pull(ctx context.Context, ref string, o RemoteOptions) ([]byte, digest.Digest, error) {
	r, err := name.ParseReference(ref, o.nameOpts()...)
	if err != nil {
		return nil, "", fmt.Errorf("modules: reference %q: %w", ref, err)
	}
	ropts := o.remoteOpts(ctx)
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, "", fmt.Errorf("modules: fetching manifest: %w", err)
	}
	wasm, err := Extract(desc.Manifest, func(d digest.Digest) (io.ReadCloser, error) {
		h, err := v1.NewHash(d.String())
		if err != nil {
			return nil, err
		}
		l, err := remote.Layer(r.Context().Digest(h.String()), ropts...)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	})
	if err != nil {
		return nil, "", err
	}
	return wasm, digest.Digest(desc.Digest.String()), nil
}
