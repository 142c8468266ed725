package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// VerifyOptions say which keys, audience, time and revision floor a bundle
// is verified against.
type VerifyOptions struct {
	// Keys is the public key set (see ParseKeySet).
	Keys jwk.Set
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
func Verify(data []byte, opts VerifyOptions) (*Bundle, error) {
	lim := opts.Limits.withDefaults()
	if int64(len(data)) > lim.MaxCompressed {
		return nil, fmt.Errorf("%w: %d bytes compressed, limit %d", ErrTooLarge, len(data), lim.MaxCompressed)
	}
	if opts.Keys == nil || opts.Keys.Len() == 0 {
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
	if !now.Before(m.Expires) {
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
	sum := sha256.Sum256(data)
	return &Bundle{Manifest: *m, Files: entries, Digest: "sha256:" + hex.EncodeToString(sum[:])}, nil
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
	tr := tar.NewReader(lr)
	entries := map[string][]byte{}
	var total int64
	readSubset := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
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
		if h.Typeflag != tar.TypeReg {
			return nil, false, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrFormat, h.Name, h.Typeflag)
		}
		if h.Name != ManifestName && h.Name != SignaturesName {
			if err := checkPath(h.Name); err != nil {
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
		if _, err := io.ReadFull(tr, b); err != nil {
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

// checkPath accepts clean relative slash paths under one of Roots.
func checkPath(name string) error {
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

// protectedHeader is the only header shape accepted.
type protectedHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// verifySignature checks the single compact JWS in .signatures.json against
// the key set and returns its kid. The alg is decided by the key, never by
// the header: the header alg must merely agree.
func verifySignature(sigRaw, manifest []byte, keys jwk.Set) (string, error) {
	var sigs signatures
	dec := json.NewDecoder(bytes.NewReader(sigRaw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sigs); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrSignature, SignaturesName, err)
	}
	if len(sigs.Signatures) != 1 {
		return "", fmt.Errorf("%w: %s holds %d signatures, want 1", ErrSignature, SignaturesName, len(sigs.Signatures))
	}
	compact := sigs.Signatures[0]
	parts := strings.Split(compact, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: not a compact JWS", ErrSignature)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", fmt.Errorf("%w: JWS header: %v", ErrSignature, err)
	}
	// Exact member names: encoding/json matches fields case-insensitively,
	// so check the raw keys first ("ALG", "crit", "jku", "b64" are refused).
	var members map[string]json.RawMessage
	if err := json.Unmarshal(hb, &members); err != nil {
		return "", fmt.Errorf("%w: JWS header: %v", ErrSignature, err)
	}
	for name := range members {
		if name != "alg" && name != "kid" && name != "typ" {
			return "", fmt.Errorf("%w: JWS header must hold only alg, kid and typ, has %q", ErrSignature, name)
		}
	}
	var hdr protectedHeader
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return "", fmt.Errorf("%w: JWS header: %v", ErrSignature, err)
	}
	if hdr.Alg != jwa.EdDSA.String() && hdr.Alg != jwa.ES256.String() {
		return "", fmt.Errorf("%w: algorithm %q is not allowed (EdDSA or ES256)", ErrSignature, hdr.Alg)
	}
	if hdr.Typ != "" && hdr.Typ != JWSType {
		return "", fmt.Errorf("%w: JWS typ %q, want %q", ErrSignature, hdr.Typ, JWSType)
	}
	if hdr.Kid == "" {
		return "", fmt.Errorf("%w: JWS header has no kid", ErrSignature)
	}
	key, ok := keys.LookupKeyID(hdr.Kid)
	if !ok {
		return "", fmt.Errorf("%w: kid %q", ErrUnknownKey, hdr.Kid)
	}
	if isPrivate(key) {
		return "", fmt.Errorf("%w: key %q in the verification set is not a public key", ErrSignature, hdr.Kid)
	}
	alg, err := checkKeyAlg(key)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if hdr.Alg != alg.String() {
		return "", fmt.Errorf("%w: header alg %q does not match key %q (%s)", ErrSignature, hdr.Alg, hdr.Kid, alg)
	}
	var raw any
	if err := key.Raw(&raw); err != nil {
		return "", fmt.Errorf("%w: key %q: %v", ErrSignature, hdr.Kid, err)
	}
	payload, err := jws.Verify([]byte(compact), jws.WithKey(alg, raw))
	if err != nil {
		return "", fmt.Errorf("%w: key %q: %v", ErrSignature, hdr.Kid, err)
	}
	if !bytes.Equal(payload, manifest) {
		return "", fmt.Errorf("%w: signature does not cover this %s", ErrSignature, ManifestName)
	}
	return hdr.Kid, nil
}

func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, ManifestName, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: trailing data", ErrFormat, ManifestName)
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
		if err := checkPath(p); err != nil {
			return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
		}
		if len(h) != sha256.Size*2 || strings.ToLower(h) != h {
			return nil, fmt.Errorf("%w: manifest hash of %q is not lowercase hex sha256", ErrFormat, p)
		}
		if _, err := hex.DecodeString(h); err != nil {
			return nil, fmt.Errorf("%w: manifest hash of %q: %v", ErrFormat, p, err)
		}
	}
	return &m, nil
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
