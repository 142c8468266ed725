package bundle

import (
	"fmt"

	"github.com/meshguard/meshguard/policies"

	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// RegistryChannel is the channel carrying the registry bundles of the
// authors' channel name.
func RegistryChannel(name string) string { return name + RegistrySuffix }

// RegistrySuffix ends the name of a registry bundle channel (and the scope
// its bundles carry: the authors' scope + RegistrySuffix).
const RegistrySuffix = ".registry"

// OpenRegistry is Open for a bundle signed by the registry key: the image
// must also hold only registry-derived content (verify.LoadRegistry).
// Errors wrap ErrRegistryScope for a bundle that holds more.
func OpenRegistry(data []byte, opts VerifyOptions) (*Bundle, error) {
	b, err := Open(data, opts)
	if err != nil {
		return nil, err
	}
	pol, err := verify.Image(b)
	if err != nil {
		return nil, err
	}
	if err := verify.RegistryImage(pol); err != nil {
		return nil, err
	}
	return b, nil
}

// PackRegistry is Pack for registry-derived content: it refuses policies
// the guard would refuse from the registry key (an error wrapping
// ErrRegistryScope) before signing them.
func PackRegistry(files map[string][]byte, opts PackOptions) ([]byte, error) {
	return packChecked(files, opts, func(img []byte) error {
		eng, err := policies.UnmarshalEngine(img)
		if err != nil {
			return err
		}
		if err := eng.RegistryScope(); err != nil {
			return fmt.Errorf("pack: %w: %w", ErrRegistryScope, err)
		}
		return nil
	})
}
