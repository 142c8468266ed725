package verify

import (
	"fmt"
	"time"

	"github.com/meshguard/meshguard/policies"
)

// ImageFile is where a bundle carries its compiled engine image
// (policies.MarshalEngine): the only policy form proxies load.
const ImageFile = CompiledDir + "engine.bin"

// ErrNoImage: the bundle carries no compiled engine image. It wraps
// ErrFileSet: a bundle proxies can load always has one.
var ErrNoImage = wrapSentinel(ErrFileSet, "bundle has no compiled engine image")

// ErrBadImage: the engine image does not load (policies.ErrImage is
// wrapped too). It wraps ErrFormat.
var ErrBadImage = wrapSentinel(ErrFormat, "bundle engine image does not load")

// Policy is a loaded bundle: the engine its image holds and the manifest
// that vouches for it.
type Policy struct {
	Manifest Manifest
	// Digest is "sha256:<hex>" of the bundle file bytes.
	Digest string
	Engine *policies.Engine
}

// Revision is the bundle's revision.
func (p *Policy) Revision() uint64 { return p.Manifest.Revision }

// Expired reports whether the bundle's validity ended at or before now
// (it was loaded within Options.Grace).
func (p *Policy) Expired(now time.Time) bool { return !now.Before(p.Manifest.Expires) }

// Load verifies data and returns the engine its image holds: exactly what
// the guard filter enforces, whoever calls it (the guard, `meshguard policy
// eval --bundle`). Only the compiled/ entries are read and hashed (the
// signature and the manifest are always checked), so loading never inflates
// the sources; opts.Subset is ignored. Errors wrap the package's sentinels.
func Load(data []byte, opts Options) (*Policy, error) {
	opts.Subset = []string{CompiledDir}
	b, err := Verify(data, opts)
	if err != nil {
		return nil, err
	}
	return Image(b)
}

// Image loads the engine image of a verified bundle.
func Image(b *Bundle) (*Policy, error) {
	img, ok := b.Files[ImageFile]
	if !ok {
		return nil, fmt.Errorf("%w: revision %d has no %s: proxies load only bundles built by `meshguard policy bundle`",
			ErrNoImage, b.Manifest.Revision, ImageFile)
	}
	eng, err := policies.UnmarshalEngine(img)
	if err != nil {
		return nil, fmt.Errorf("%w: revision %d: %w", ErrBadImage, b.Manifest.Revision, err)
	}
	return &Policy{Manifest: b.Manifest, Digest: b.Digest, Engine: eng}, nil
}

// ErrRegistryScope: a registry bundle's engine holds more than
// registry-derived content (policies.Engine.RegistryScope; that error is
// wrapped too). It wraps ErrScope.
var ErrRegistryScope = wrapSentinel(ErrScope, "registry bundle exceeds the registry's scope")

// LoadRegistry is Load for a bundle signed by the registry key: its engine
// must hold only registry-derived content (DevicePolicy, VersionPolicy,
// Revocations; see policies.Engine.RegistryScope), else the bundle is
// refused with an error wrapping ErrRegistryScope.
func LoadRegistry(data []byte, opts Options) (*Policy, error) {
	pol, err := Load(data, opts)
	if err != nil {
		return nil, err
	}
	if err := RegistryImage(pol); err != nil {
		return nil, err
	}
	return pol, nil
}

// RegistryImage checks that a loaded registry bundle's engine holds only
// registry-derived content.
func RegistryImage(pol *Policy) error {
	if err := pol.Engine.RegistryScope(); err != nil {
		return fmt.Errorf("%w: revision %d: %w", ErrRegistryScope, pol.Manifest.Revision, err)
	}
	return nil
}
