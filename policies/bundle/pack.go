package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/meshguard/meshguard/policies"
)

// ErrPolicy is wrapped by Pack's errors about the policies themselves
// (they do not check or compile), as opposed to the files, the options or
// the key. A check failure also wraps the policies.ErrorList.
var ErrPolicy = errors.New("policy check failed")

// ErrNoSources: Pack was given no policy files.
var ErrNoSources = fmt.Errorf("no policy files under %s", SourcesDir)

// ErrImageMismatch: a bundle's engine image is not what its policy sources
// compile to, so what proxies enforce differs from what people review.
var ErrImageMismatch = errors.New("bundle engine image does not match its policy sources")

// PackOptions are the manifest fields and signing key of a new bundle
// (BuildOptions) and where its files came from.
type PackOptions struct {
	BuildOptions
	// Sources maps a bundle path to the file it was read from, so policy
	// errors name the files people edit; unmapped paths are reported as
	// they are.
	Sources map[string]string
}

// Pack makes a bundle proxies load: it checks and compiles the policy
// files (bundle paths under SourcesDir), adds the engine image as ImageFile
// and signs everything with Build. Data files (under DataDir) go in
// unread. A policy problem refuses the bundle with an error wrapping
// ErrPolicy.
func Pack(files map[string][]byte, opts PackOptions) ([]byte, error) {
	return packChecked(files, opts, nil)
}

// packChecked is Pack; check, when set, may refuse the image before signing.
func packChecked(files map[string][]byte, opts PackOptions, check func(img []byte) error) ([]byte, error) {
	all := make(map[string][]byte, len(files)+1)
	for name, b := range files {
		if strings.HasPrefix(name, CompiledDir) {
			return nil, fmt.Errorf("pack: %s: %s is written by pack, from the policies", name, CompiledDir)
		}
		all[name] = b
	}
	img, err := compileSources(files)
	if errors.Is(err, ErrNoSources) {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err != nil {
		var list policies.ErrorList
		if errors.As(err, &list) {
			err = positionedIn(list, opts.Sources)
		}
		return nil, fmt.Errorf("%w:\n%w", ErrPolicy, err)
	}
	if check != nil {
		if err := check(img); err != nil {
			return nil, err
		}
	}
	all[ImageFile] = img
	return Build(all, opts.BuildOptions)
}

// positionedIn names the source files in the positions of list.
func positionedIn(list policies.ErrorList, sources map[string]string) policies.ErrorList {
	out := make(policies.ErrorList, len(list))
	for i, e := range list {
		c := *e
		if src, ok := sources[c.Pos.File]; ok {
			c.Pos.File = src
		}
		out[i] = &c
	}
	return out
}

// compileSources compiles a bundle's policy sources (files under
// SourcesDir, by bundle path) to an engine image. Rules are ordered by file
// name, so the image is compiled from the names inside the bundle, which
// is what every later check recompiles from, never from wherever the files
// were read.
func compileSources(files map[string][]byte) ([]byte, error) {
	src := map[string][]byte{}
	for name, b := range files {
		if strings.HasPrefix(name, SourcesDir) {
			src[name] = b
		}
	}
	if len(src) == 0 {
		return nil, ErrNoSources
	}
	set, err := policies.Load(src)
	if err != nil {
		return nil, err
	}
	eng, err := policies.Compile(set)
	if err != nil {
		return nil, err
	}
	return policies.MarshalEngine(eng)
}

// CheckImage confirms that a verified bundle's engine image (what proxies
// enforce) is exactly what its policy sources (what people review) compile
// to. A bundle without an image fails with ErrNoImage; any other failure
// wraps ErrImageMismatch.
func CheckImage(b *Bundle) error {
	img, ok := b.Files[ImageFile]
	if !ok {
		return fmt.Errorf("%w: revision %d has no %s: proxies load only bundles built by `meshguard policy bundle`",
			ErrNoImage, b.Manifest.Revision, ImageFile)
	}
	want, err := compileSources(b.Files)
	if err != nil {
		return fmt.Errorf("%w: the policy sources do not compile: %w", ErrImageMismatch, err)
	}
	if !bytes.Equal(img, want) {
		return fmt.Errorf("%w: revision %d: %s differs from what the files under %s compile to",
			ErrImageMismatch, b.Manifest.Revision, ImageFile, SourcesDir)
	}
	return nil
}
