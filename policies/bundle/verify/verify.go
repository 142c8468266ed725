// Package verify checks and loads signed meshguard policy bundles (the
// format is described in package bundle) with the standard library alone:
// its signature check runs on internal/jose rather than a general JOSE
// library, so the guard filter (GOOS=wasip1) links no HTTP, TLS, file or
// YAML code. It is the wasm-safe half of package bundle: Verify checks a
// bundle, Load turns one into the engine proxies enforce, and Keeper is the
// one anti-rollback rule for a series of bundles. Package bundle packs and
// signs bundles and checks their engine image against their sources.
package verify

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshguard/meshguard/internal/jose"
	"github.com/meshguard/meshguard/internal/jsonx"
)

// FormatVersion is the manifest format version this package writes and reads.
const FormatVersion = 1

// MediaType is the media type of a bundle file.
const MediaType = "application/vnd.meshguard.bundle.v1+tar+gzip"

// Reserved entry names.
const (
	ManifestName   = ".manifest"
	SignaturesName = ".signatures.json"
)

// JWSType is the typ header of bundle signatures.
const JWSType = "meshguard-bundle+jws"

// The directories a bundle's files live under.
const (
	// CompiledDir holds what proxies load (ImageFile).
	CompiledDir = "compiled/"
	// SourcesDir holds the policy-language files the image is compiled
	// from, for people and for the image check.
	SourcesDir = "policies/"
	// DataDir holds data files the policy language does not read
	// (revocation exports, device inventories, ...).
	DataDir = "data/"
)

// Roots are the only top-level directories a bundle's files may live under.
var Roots = []string{CompiledDir, SourcesDir, DataDir}

// Default limits; Options.Limits overrides them when set.
const (
	DefaultMaxCompressed   = 16 << 20
	DefaultMaxUncompressed = 64 << 20
	DefaultMaxFiles        = 4096
	// DefaultClockSkew is how far in the future Created may be.
	DefaultClockSkew = 5 * time.Minute
	maxPathLen       = 512
)

// Sentinel errors. Every error from Verify wraps exactly one of ErrFormat,
// ErrSignature, ErrFileSet, ErrExpired, ErrNotYetValid, ErrScope or
// ErrRollback (ErrTooLarge and ErrUnknownKey wrap ErrFormat and ErrSignature).
var (
	// ErrFormat: the file is not a well-formed bundle (gzip, tar, paths,
	// entry types, manifest syntax).
	ErrFormat = errors.New("malformed bundle")
	// ErrTooLarge: a size or count limit was exceeded.
	ErrTooLarge = wrapSentinel(ErrFormat, "bundle too large")
	// ErrSignature: the signature is missing, invalid, uses a forbidden or
	// mismatched algorithm, or does not cover this manifest.
	ErrSignature = errors.New("bad bundle signature")
	// ErrUnknownKey: the signature's kid is not in the key set.
	ErrUnknownKey = wrapSentinel(ErrSignature, "unknown signing key")
	// ErrFileSet: the files differ from the manifest (missing, extra or
	// hash mismatch).
	ErrFileSet = errors.New("bundle files do not match the manifest")
	// ErrExpired: the bundle's expiry time has passed.
	ErrExpired = errors.New("bundle expired")
	// ErrNotYetValid: the bundle was created in the future (beyond skew).
	ErrNotYetValid = errors.New("bundle not yet valid")
	// ErrScope: the bundle is not meant for this audience.
	ErrScope = errors.New("bundle scope mismatch")
	// ErrRollback: the revision is not above the last accepted one.
	ErrRollback = errors.New("bundle revision rollback")
)

type sentinel struct {
	parent error
	msg    string
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.parent }

func wrapSentinel(parent error, msg string) error { return &sentinel{parent: parent, msg: msg} }

// Manifest describes a bundle; it is the signed payload.
type Manifest struct {
	// Version is the format version (FormatVersion).
	Version int `json:"version"`
	// Revision increases with every published bundle; verifiers refuse a
	// revision at or below the last one they accepted.
	Revision uint64 `json:"revision"`
	// Created and Expires bound the validity window (UTC, whole seconds).
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Scope lists the audiences (e.g. mesh or channel names) the bundle is
	// for; empty means any.
	Scope []string `json:"scope"`
	// KeyID is the kid of the signing key; it must equal the JWS kid.
	KeyID string `json:"kid"`
	// Files maps every file's path to its lowercase hex sha256.
	Files map[string]string `json:"files"`
}

// Bundle is a verified bundle.
type Bundle struct {
	Manifest Manifest
	// Files holds the compiled, policy and data files (not .manifest or
	// .signatures.json), keyed by path.
	Files map[string][]byte
	// Digest is "sha256:<hex>" of the bundle file bytes.
	Digest string
}

// Limits bounds what Verify reads. Zero fields take the defaults.
type Limits struct {
	// MaxCompressed bounds the bundle file's size.
	MaxCompressed int64
	// MaxUncompressed bounds the decompressed tar stream (headers, padding
	// and contents), so a gzip bomb stops there.
	MaxUncompressed int64
	// MaxFiles bounds the policy and data files (not counting .manifest and
	// .signatures.json).
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxCompressed <= 0 {
		l.MaxCompressed = DefaultMaxCompressed
	}
	if l.MaxUncompressed <= 0 {
		l.MaxUncompressed = DefaultMaxUncompressed
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// DigestOf returns "sha256:<hex>" of a bundle file's bytes.
func DigestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Options say which keys, audience, time and revision floor a bundle is
// verified against.
type Options struct {
	// Keys is the public key set (see ParseKeySet).
	Keys *KeySet
	// MinRevision, when above 0, is the last accepted revision: the bundle's
	// revision must be strictly greater.
	MinRevision uint64
	// Scope, when set, must be one of the manifest's scope entries.
	Scope string
	// Now is the verification time; zero means time.Now().
	Now time.Time
	// Limits bound the bundle's size; zero fields take the defaults.
	Limits Limits
	// ClockSkew is how far in the future Created may be (default 5m).
	ClockSkew time.Duration
	// Grace, when above 0, still accepts a bundle that expired less than
	// Grace before Now (a proxy's bounded expiry grace); the caller reads
	// Manifest.Expires to tell and report it.
	Grace time.Duration
	// Subset, when set, names path prefixes (such as "compiled/") that
	// are all the caller needs. If the manifest lists files under them,
	// only those files are read, verified and returned, and reading stops
	// at the first entry past them (entries are sorted); otherwise every
	// file is, as without Subset. The signature and the manifest are always
	// verified.
	Subset []string
}

// Verify checks a bundle file and returns its verified contents. Errors wrap
// one of the package's sentinel errors (ErrFormat, ErrSignature, ErrFileSet,
// ErrExpired, ErrNotYetValid, ErrScope, ErrRollback).
func Verify(data []byte, opts Options) (*Bundle, error) {
	lim := opts.Limits.withDefaults()
	if int64(len(data)) > lim.MaxCompressed {
		return nil, fmt.Errorf("%w: %d bytes compressed, limit %d", ErrTooLarge, len(data), lim.MaxCompressed)
	}
	if opts.Keys.Len() == 0 {
		return nil, fmt.Errorf("%w: no verification keys", ErrSignature)
	}
	entries, partial, err := readTar(data, lim, opts.Subset)
	if err != nil {
		return nil, err
	}
	manifestRaw, ok := entries[ManifestName]
	if !ok {
		return nil, fmt.Errorf("%w: no %s", ErrFormat, ManifestName)
	}
	sigRaw, ok := entries[SignaturesName]
	if !ok {
		return nil, fmt.Errorf("%w: no %s", ErrSignature, SignaturesName)
	}
	delete(entries, ManifestName)
	delete(entries, SignaturesName)

	kid, err := verifySignature(sigRaw, manifestRaw, opts.Keys)
	if err != nil {
		return nil, err
	}
	m, err := decodeManifest(manifestRaw)
	if err != nil {
		return nil, err
	}
	if m.KeyID != kid {
		return nil, fmt.Errorf("%w: manifest kid %q differs from signature kid %q", ErrSignature, m.KeyID, kid)
	}
	want := m.Files
	if partial {
		// Only the subset was read: the manifest's files under it must
		// all be there and match; the rest is not the caller's concern.
		want = map[string]string{}
		for p, h := range m.Files {
			if inSubset(p, opts.Subset) {
				want[p] = h
			}
		}
		if len(want) == 0 {
			return nil, fmt.Errorf("%w: the manifest lists no file under %q; verify without a subset", ErrFileSet, opts.Subset)
		}
	}
	if err := checkFiles(want, entries); err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	skew := opts.ClockSkew
	if skew <= 0 {
		skew = DefaultClockSkew
	}
	if !now.Before(m.Expires.Add(max(opts.Grace, 0))) {
		if opts.Grace > 0 {
			return nil, fmt.Errorf("%w: revision %d expired at %s, more than the grace of %s ago", ErrExpired, m.Revision, m.Expires.Format(time.RFC3339), opts.Grace)
		}
		return nil, fmt.Errorf("%w: revision %d expired at %s", ErrExpired, m.Revision, m.Expires.Format(time.RFC3339))
	}
	if m.Created.After(now.Add(skew)) {
		return nil, fmt.Errorf("%w: revision %d created at %s, in the future", ErrNotYetValid, m.Revision, m.Created.Format(time.RFC3339))
	}
	if opts.Scope != "" && !slices.Contains(m.Scope, opts.Scope) {
		return nil, fmt.Errorf("%w: bundle is for %q, not %q", ErrScope, m.Scope, opts.Scope)
	}
	if opts.MinRevision > 0 && m.Revision <= opts.MinRevision {
		return nil, fmt.Errorf("%w: revision %d is not above the accepted revision %d", ErrRollback, m.Revision, opts.MinRevision)
	}
	return &Bundle{Manifest: *m, Files: entries, Digest: DigestOf(data)}, nil
}

func inSubset(name string, subset []string) bool {
	for _, p := range subset {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// readTar reads every entry of the gzip'd tar within the limits, refusing
// anything but regular files with sane, unique paths. With a subset, it
// stops at the first entry outside it once entries inside it were read
// (partial is then true).
func readTar(data []byte, lim Limits, subset []string) (map[string][]byte, bool, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, false, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	zr.Multistream(false)
	// One byte over the limit tells "exactly at" from "over".
	lr := &io.LimitedReader{R: zr, N: lim.MaxUncompressed + 1}
	tr := &tarReader{r: lr}
	entries := map[string][]byte{}
	var total int64
	readSubset := false
	for {
		h, err := tr.next()
		if err == errTarEnd {
			break
		}
		if err != nil {
			if lr.N <= 0 {
				return nil, false, fmt.Errorf("%w: more than %d bytes uncompressed", ErrTooLarge, lim.MaxUncompressed)
			}
			return nil, false, fmt.Errorf("%w: tar: %v", ErrFormat, err)
		}
		if len(subset) > 0 && h.Name != ManifestName && h.Name != SignaturesName {
			in := inSubset(h.Name, subset)
			if !in && readSubset {
				return entries, true, nil
			}
			readSubset = readSubset || in
		}
		if len(entries) >= lim.MaxFiles+2 {
			return nil, false, fmt.Errorf("%w: more than %d files", ErrTooLarge, lim.MaxFiles)
		}
		if h.Typeflag != '0' {
			return nil, false, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrFormat, h.Name, h.Typeflag)
		}
		if h.Name != ManifestName && h.Name != SignaturesName {
			if err := CheckPath(h.Name); err != nil {
				return nil, false, fmt.Errorf("%w: %v", ErrFormat, err)
			}
		}
		if _, dup := entries[h.Name]; dup {
			return nil, false, fmt.Errorf("%w: duplicate entry %q", ErrFormat, h.Name)
		}
		if h.Size < 0 || total+h.Size > lim.MaxUncompressed {
			return nil, false, fmt.Errorf("%w: entry %q makes more than %d bytes uncompressed", ErrTooLarge, h.Name, lim.MaxUncompressed)
		}
		b := make([]byte, h.Size)
		if err := tr.read(b); err != nil {
			if lr.N <= 0 {
				return nil, false, fmt.Errorf("%w: more than %d bytes uncompressed", ErrTooLarge, lim.MaxUncompressed)
			}
			return nil, false, fmt.Errorf("%w: reading %q: %v", ErrFormat, h.Name, err)
		}
		total += h.Size
		entries[h.Name] = b
	}
	// Read to the end so the gzip checksum is verified.
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return nil, false, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	if lr.N <= 0 {
		return nil, false, fmt.Errorf("%w: more than %d bytes uncompressed", ErrTooLarge, lim.MaxUncompressed)
	}
	// A subset read to the end holds every file: nothing was skipped.
	return entries, false, nil
}

// CheckPath accepts clean relative slash paths under one of Roots.
func CheckPath(name string) error {
	switch {
	case name == "":
		return errors.New("empty file path")
	case len(name) > maxPathLen:
		return fmt.Errorf("file path longer than %d bytes", maxPathLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("file path %q is not UTF-8", name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("file path %q is absolute", name)
	case strings.ContainsAny(name, "\\\x00"):
		return fmt.Errorf("file path %q contains a backslash or NUL", name)
	case path.Clean(name) != name:
		return fmt.Errorf("file path %q is not clean (.., ., // or trailing /)", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." || el == "." {
			return fmt.Errorf("file path %q has a %q element", name, el)
		}
		for _, r := range el {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("file path %q has a control character", name)
			}
		}
	}
	for _, root := range Roots {
		if strings.HasPrefix(name, root) && len(name) > len(root) {
			return nil
		}
	}
	return fmt.Errorf("file path %q is not under %s", name, strings.Join(Roots, " or "))
}

// Signatures is the .signatures.json document.
type Signatures struct {
	Signatures []string `json:"signatures"`
}

// verifySignature checks the single compact JWS in .signatures.json against
// the key set and returns its kid. The alg is decided by the key, never by
// the header: the header alg must merely agree (jose binds EdDSA to Ed25519
// and ES256 to P-256 keys, and ParseKeySet admits no other key).
func verifySignature(sigRaw, manifest []byte, keys *KeySet) (string, error) {
	var sigs Signatures
	if err := decodeObject(sigRaw, map[string]func(*jsonx.Value) error{
		"signatures": func(v *jsonx.Value) error { return jsonStrings(v, &sigs.Signatures) },
	}); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrSignature, SignaturesName, err)
	}
	if len(sigs.Signatures) != 1 {
		return "", fmt.Errorf("%w: %s holds %d signatures, want 1", ErrSignature, SignaturesName, len(sigs.Signatures))
	}
	j, err := jose.Parse(sigs.Signatures[0])
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	hdr := j.Header
	if hdr.Alg != jose.EdDSA && hdr.Alg != jose.ES256 {
		return "", fmt.Errorf("%w: algorithm %q is not allowed (EdDSA or ES256)", ErrSignature, hdr.Alg)
	}
	if hdr.Typ != "" && hdr.Typ != JWSType {
		return "", fmt.Errorf("%w: JWS typ %q, want %q", ErrSignature, hdr.Typ, JWSType)
	}
	if hdr.Kid == "" {
		return "", fmt.Errorf("%w: JWS header has no kid", ErrSignature)
	}
	if _, ok := keys.set.Lookup(hdr.Kid); !ok {
		return "", fmt.Errorf("%w: kid %q", ErrUnknownKey, hdr.Kid)
	}
	if _, err := j.Verify(keys.set, jose.EdDSA, jose.ES256); err != nil {
		return "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if !bytes.Equal(j.Payload, manifest) {
		return "", fmt.Errorf("%w: signature does not cover this %s", ErrSignature, ManifestName)
	}
	return hdr.Kid, nil
}

// decodeManifestFields reads the manifest's members (decodeManifest checks them).
func decodeManifestFields(b []byte) (*Manifest, error) {
	var m Manifest
	if err := decodeObject(b, map[string]func(*jsonx.Value) error{
		"version": func(v *jsonx.Value) error {
			n, err := jsonInt(v)
			m.Version = int(n)
			return err
		},
		"revision": func(v *jsonx.Value) error {
			if v.Kind == jsonx.Null {
				return nil
			}
			n, err := v.Uint()
			m.Revision = n
			return err
		},
		"created": func(v *jsonx.Value) error { return m.Created.UnmarshalJSON(v.Raw) },
		"expires": func(v *jsonx.Value) error { return m.Expires.UnmarshalJSON(v.Raw) },
		"scope":   func(v *jsonx.Value) error { return jsonStrings(v, &m.Scope) },
		"kid": func(v *jsonx.Value) error {
			if v.Kind != jsonx.String && v.Kind != jsonx.Null {
				return fmt.Errorf("want a string, got %s", v.Kind)
			}
			m.KeyID = v.Str
			return nil
		},
		"files": func(v *jsonx.Value) error {
			switch v.Kind {
			case jsonx.Null:
				return nil
			case jsonx.Object:
			default:
				return fmt.Errorf("want an object, got %s", v.Kind)
			}
			m.Files = make(map[string]string, len(v.Members))
			for _, f := range v.Members {
				if f.Value.Kind != jsonx.String && f.Value.Kind != jsonx.Null {
					return fmt.Errorf("%q: want a string, got %s", f.Name, f.Value.Kind)
				}
				m.Files[f.Name] = f.Value.Str
			}
			return nil
		},
	}); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, ManifestName, err)
	}
	return &m, nil
}

func decodeManifest(b []byte) (*Manifest, error) {
	m, err := decodeManifestFields(b)
	if err != nil {
		return nil, err
	}
	switch {
	case m.Version != FormatVersion:
		return nil, fmt.Errorf("%w: manifest version %d, want %d", ErrFormat, m.Version, FormatVersion)
	case m.Revision == 0:
		return nil, fmt.Errorf("%w: manifest revision is 0", ErrFormat)
	case m.Expires.IsZero() || !m.Expires.After(m.Created):
		return nil, fmt.Errorf("%w: manifest expires must be after created", ErrFormat)
	case m.KeyID == "":
		return nil, fmt.Errorf("%w: manifest has no kid", ErrFormat)
	}
	for p, h := range m.Files {
		if err := CheckPath(p); err != nil {
			return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
		}
		if len(h) != sha256.Size*2 || strings.ToLower(h) != h {
			return nil, fmt.Errorf("%w: manifest hash of %q is not lowercase hex sha256", ErrFormat, p)
		}
		if _, err := hex.DecodeString(h); err != nil {
			return nil, fmt.Errorf("%w: manifest hash of %q: %v", ErrFormat, p, err)
		}
	}
	return m, nil
}

// decodeObject reads one JSON object (null reads nothing) with internal/jsonx
// (strict: no duplicate members, no trailing data, exact member names) and
// hands each member to its field's function; an unknown member is an error.
// The guard links this instead of encoding/json's reflection.
func decodeObject(b []byte, fields map[string]func(*jsonx.Value) error) error {
	v, err := jsonx.Parse(b)
	if err != nil {
		return err
	}
	switch v.Kind {
	case jsonx.Null:
		return nil
	case jsonx.Object:
	default:
		return fmt.Errorf("want an object, got %s", v.Kind)
	}
	for i := range v.Members {
		m := &v.Members[i]
		set, ok := fields[m.Name]
		if !ok {
			return fmt.Errorf("unknown field %q", m.Name)
		}
		if err := set(&m.Value); err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return nil
}

func jsonInt(v *jsonx.Value) (int64, error) {
	if v.Kind == jsonx.Null {
		return 0, nil
	}
	return v.Int()
}

// jsonStrings reads an array of strings (null: nil, as encoding/json does).
func jsonStrings(v *jsonx.Value, dst *[]string) error {
	switch v.Kind {
	case jsonx.Null:
		return nil
	case jsonx.Array:
	default:
		return fmt.Errorf("want an array of strings, got %s", v.Kind)
	}
	l := make([]string, len(v.Items))
	for i, e := range v.Items {
		if e.Kind != jsonx.String && e.Kind != jsonx.Null {
			return fmt.Errorf("[%d]: want a string, got %s", i, e.Kind)
		}
		l[i] = e.Str
	}
	*dst = l
	return nil
}

// checkFiles requires exactly the files named in hashes (path to sha256),
// with equal hashes.
func checkFiles(hashes map[string]string, files map[string][]byte) error {
	for p, want := range hashes {
		b, ok := files[p]
		if !ok {
			return fmt.Errorf("%w: %q is in the manifest but not in the bundle", ErrFileSet, p)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != want {
			return fmt.Errorf("%w: %q does not match its manifest hash", ErrFileSet, p)
		}
	}
	for p := range files {
		if _, ok := hashes[p]; !ok {
			return fmt.Errorf("%w: %q is in the bundle but not in the manifest", ErrFileSet, p)
		}
	}
	return nil
}
