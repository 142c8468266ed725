package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// BuildOptions are the manifest fields and the signing key of a new bundle.
type BuildOptions struct {
	// Revision must be at least 1 and above every earlier bundle's.
	Revision uint64
	// Created defaults to now; it is truncated to whole seconds in UTC.
	Created time.Time
	// Expires is required and must be after Created.
	Expires time.Time
	// Scope lists the audiences; it is sorted and deduplicated.
	Scope []string
	// Key is the private signing key (see ParseSigningKey).
	Key jwk.Key
}

// Build creates a signed bundle from files (bundle path → content; paths
// must be under policies/ or data/). The output is a pure function of the
// inputs for Ed25519 keys; ES256 signatures are randomised, so only the
// signature entry differs between two ES256 builds.
func Build(files map[string][]byte, opts BuildOptions) ([]byte, error) {
	if opts.Key == nil {
		return nil, errors.New("build: no signing key")
	}
	if !isPrivate(opts.Key) {
		return nil, errors.New("build: signing key is not a private key")
	}
	alg, err := checkKeyAlg(opts.Key)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	kid := opts.Key.KeyID()
	if kid == "" {
		return nil, errors.New("build: signing key has no kid")
	}
	if opts.Revision == 0 {
		return nil, errors.New("build: revision must be at least 1")
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Now()
	}
	created = created.UTC().Truncate(time.Second)
	expires := opts.Expires.UTC().Truncate(time.Second)
	if opts.Expires.IsZero() || !expires.After(created) {
		return nil, fmt.Errorf("build: expires (%s) must be after created (%s)", expires.Format(time.RFC3339), created.Format(time.RFC3339))
	}
	scope, err := normScope(opts.Scope)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if len(files) == 0 {
		return nil, errors.New("build: no files")
	}
	if len(files) > DefaultMaxFiles {
		return nil, fmt.Errorf("build: %d files, at most %d", len(files), DefaultMaxFiles)
	}
	names := make([]string, 0, len(files))
	hashes := make(map[string]string, len(files))
	var total int64
	for name, b := range files {
		if err := checkPath(name); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		names = append(names, name)
		sum := sha256.Sum256(b)
		hashes[name] = hex.EncodeToString(sum[:])
		total += int64(len(b))
	}
	if total > DefaultMaxUncompressed {
		return nil, fmt.Errorf("build: %d bytes of files, at most %d", total, DefaultMaxUncompressed)
	}
	sort.Strings(names)

	m := Manifest{Version: FormatVersion, Revision: opts.Revision, Created: created, Expires: expires, Scope: scope, KeyID: kid, Files: hashes}
	manifest, err := json.Marshal(&m)
	if err != nil {
		return nil, err
	}
	hdrs := jws.NewHeaders()
	for k, v := range map[string]any{jws.KeyIDKey: kid, jws.TypeKey: JWSType} {
		if err := hdrs.Set(k, v); err != nil {
			return nil, err
		}
	}
	// Sign with the raw key so jwx adds no header beyond alg, kid and typ.
	var raw any
	if err := opts.Key.Raw(&raw); err != nil {
		return nil, fmt.Errorf("build: signing key: %w", err)
	}
	compact, err := jws.Sign(manifest, jws.WithKey(alg, raw, jws.WithProtectedHeaders(hdrs)))
	if err != nil {
		return nil, fmt.Errorf("build: signing: %w", err)
	}
	sigs, err := json.Marshal(signatures{Signatures: []string{string(compact)}})
	if err != nil {
		return nil, err
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	add := func(name string, b []byte) error {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: 0o644, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add(ManifestName, manifest); err != nil {
		return nil, err
	}
	if err := add(SignaturesName, sigs); err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := add(n, files[n]); err != nil {
			return nil, fmt.Errorf("build: %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func normScope(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, s := range in {
		if s == "" {
			return nil, errors.New("empty scope entry")
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}
