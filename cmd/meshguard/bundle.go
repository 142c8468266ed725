package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/output"
	"github.com/meshguard/meshguard/policies/bundle"
)

// newKeysCmd is the keys verb group.
func newKeysCmd() *cobra.Command {
	return newGroup("keys", "Manage bundle signing keys", newKeysGenerateCmd())
}

// keysResult is what keys generate prints.
type keysResult struct {
	KeyID      string `json:"kid"`
	SigningKey string `json:"signingKey"`
	VerifyKeys string `json:"verifyKeys"`
}

// Text is the human form.
func (k keysResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "kid %s\nwrote %s (private, 0600)\nwrote %s (public JWK Set)\n", k.KeyID, k.SigningKey, k.VerifyKeys)
	return err
}

// Rows is one row.
func (k keysResult) Rows() ([]string, [][]string) {
	return []string{"kid", "signingKey", "verifyKeys"}, [][]string{{k.KeyID, k.SigningKey, k.VerifyKeys}}
}

func newKeysGenerateCmd() *cobra.Command {
	var alg, out string
	var force bool
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "generate --out DIR",
		Short: "Generate a bundle signing key (DIR/signing.jwk) and its public JWK Set (DIR/verify.jwk)",
		Long: `Generate a bundle signing key pair.

DIR/signing.jwk is the private JWK (mode 0600); keep it in the CI secret store.
DIR/verify.jwk is the public JWK Set that the distributor and the guard filter
verify bundles with. The kid of both is the key's RFC 7638 thumbprint.`,
		Example: "  meshguard keys generate --alg ed25519 --out keys/",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == stdio {
				return usagef("--out -: keys generate writes two files; give a directory")
			}
			priv, set, err := bundle.GenerateKey(alg)
			if err != nil {
				return usage(err)
			}
			privJSON, err := json.MarshalIndent(priv, "", "  ")
			if err != nil {
				return err
			}
			setJSON, err := json.MarshalIndent(set, "", "  ")
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return usage(err)
			}
			sp, vp := filepath.Join(out, "signing.jwk"), filepath.Join(out, "verify.jwk")
			flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			if err := writeFileFlag(sp, append(privJSON, '\n'), flag, 0o600); err != nil {
				if errors.Is(err, fs.ErrExist) {
					err = fmt.Errorf("%s exists; pass --force to replace it", sp)
				}
				return usage(err)
			}
			if err := os.Chmod(sp, 0o600); err != nil { // --force over a looser file
				return err
			}
			if err := writeFileFlag(vp, append(setJSON, '\n'), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
				return err
			}
			return format.print(cmd, keysResult{KeyID: priv.KeyID(), SigningKey: sp, VerifyKeys: vp})
		},
	}
	f := cmd.Flags()
	enumflag.Var(f, &alg, "alg", "", bundle.AlgEd25519, []string{bundle.AlgEd25519, bundle.AlgES256}, "key algorithm")
	f.StringVar(&out, "out", "", "output directory")
	f.BoolVar(&force, "force", false, "replace an existing signing.jwk")
	_ = cmd.MarkFlagRequired("out")
	format = addOutputFlag(cmd, output.All...)
	return cmd
}

func writeFileFlag(path string, b []byte, flag int, mode os.FileMode) error {
	fh, err := os.OpenFile(path, flag, mode)
	if err != nil {
		return err
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func newPolicyBundleCmd() *cobra.Command {
	var keyPath, out, created string
	var revision uint64
	var expires time.Duration
	var scope, data []string
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "bundle --signing-key signing.jwk --revision N --output-file OUT|- FILE|DIR...",
		Short: "Check policies and build a signed, reproducible policy bundle",
		Long: `Check policies and build a signed, reproducible policy bundle.

Policy files (.yaml, .yml; directories are searched recursively in sorted
order) go under policies/ in the bundle, named relative to the directory given
(a file given directly keeps its base name). --data adds data files (any
extension) under data/. Policies are parsed and checked first; any error
refuses the bundle.

The output is byte-for-byte reproducible for Ed25519 keys: pass --created or
set SOURCE_DATE_EPOCH (otherwise the creation time is now).

Validity: the bundle is valid from --created until --created + --expires
(default 30 days). Proxies refuse an expired bundle and fail closed, so publish
a new revision well before then; a warning is printed when the bundle expires
within 7 days or already has (an old SOURCE_DATE_EPOCH, say).

The bundle goes to --output-file (- for stdout, the summary then goes to
stderr); -o chooses the format of the summary.`,
		Example: `  meshguard policy bundle --signing-key keys/signing.jwk --revision 42 --scope grid-prod --output-file policy.bundle policies/
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) meshguard policy bundle --signing-key keys/signing.jwk --revision 43 --output-file policy.bundle policies/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return usagef("--signing-key is required (the private JWK from meshguard keys generate)")
			}
			in := newInputs(cmd)
			keyJSON, err := in.read("--signing-key", keyPath)
			if err != nil {
				return err
			}
			key, err := bundle.ParseSigningKey(keyJSON)
			if err != nil {
				return usagef("%s: %w", keyPath, err)
			}
			createdAt, err := creationTime(created)
			if err != nil {
				return usage(err)
			}
			files, sources, err := collectBundleFiles(bundle.SourcesDir, args, true)
			if err != nil {
				return usage(err)
			}
			dataFiles, dataSources, err := collectBundleFiles(bundle.DataDir, data, false)
			if err != nil {
				return usage(err)
			}
			for name, b := range dataFiles {
				files[name], sources[name] = b, dataSources[name]
			}
			// Proxies load the compiled engine image instead of parsing and
			// compiling the YAML, which is what makes hot reloads of large
			// bundles fast; the sources stay in the bundle for people and
			// for `meshguard policy verify` and the distributor, which check
			// that they agree.
			b, err := bundle.Pack(files, bundle.PackOptions{Sources: sources, BuildOptions: bundle.BuildOptions{
				Revision: revision, Created: createdAt, Expires: createdAt.Add(expires), Scope: scope, Key: key,
			}})
			if errors.Is(err, bundle.ErrNoSources) {
				return usagef("no policy files (.yaml, .yml) found")
			}
			if errors.Is(err, bundle.ErrPolicy) {
				return failedf("%w, no bundle written", err)
			}
			if err != nil {
				return usage(err)
			}
			if err := writeOutputFile(cmd, out, b, 0o644); err != nil {
				return err
			}
			res := bundleResult{File: out, Revision: revision, Files: len(files) + 1, KeyID: key.KeyID(),
				Expires: createdAt.Add(expires).UTC(), Digest: "sha256:" + sha256Hex(b)}
			if err := format.printTo(summaryOut(cmd, out), res); err != nil {
				return err
			}
			// A SOURCE_DATE_EPOCH from an old commit yields a bundle that is
			// already expired, or nearly: say so before it is published.
			warnExpiry(cmd.ErrOrStderr(), "bundle", revision, createdAt.Add(expires), time.Now())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyPath, "signing-key", "", "private signing JWK (signing.jwk from meshguard keys generate)")
	aliasFlag(f, "signing-key", "key")
	f.Uint64Var(&revision, "revision", 0, "bundle revision (must increase with every bundle)")
	f.DurationVar(&expires, "expires", 30*24*time.Hour, "validity after the creation time")
	f.StringSliceVar(&scope, "scope", nil, "audience the bundle is for (repeatable; empty = any)")
	f.StringSliceVar(&data, "data", nil, "data file or directory to add under data/ (repeatable)")
	f.StringVar(&created, "created", "", "creation time (RFC 3339 or Unix seconds; default $SOURCE_DATE_EPOCH or now)")
	f.StringVar(&out, "output-file", "", "bundle file to write, or - for stdout")
	_ = cmd.MarkFlagRequired("revision")
	_ = cmd.MarkFlagRequired("output-file")
	format = addOutputFlag(cmd, output.All...)
	return cmd
}

// bundleResult is what policy bundle prints.
type bundleResult struct {
	File     string    `json:"file"`
	Revision uint64    `json:"revision"`
	Files    int       `json:"files"`
	KeyID    string    `json:"kid"`
	Expires  time.Time `json:"expires"`
	Digest   string    `json:"digest"`
}

// Text is the summary line.
func (r bundleResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "wrote %s: revision %d, %d files, kid %s, expires %s, %s\n",
		r.File, r.Revision, r.Files, r.KeyID, r.Expires.Format(time.RFC3339), r.Digest)
	return err
}

// Rows is one row.
func (r bundleResult) Rows() ([]string, [][]string) {
	return []string{"file", "revision", "files", "kid", "expires", "digest"},
		[][]string{{r.File, strconv.FormatUint(r.Revision, 10), strconv.Itoa(r.Files), r.KeyID, r.Expires.Format(time.RFC3339), r.Digest}}
}

// creationTime resolves --created, then SOURCE_DATE_EPOCH, then now.
func creationTime(flag string) (time.Time, error) {
	src, v := "--created", flag
	if v == "" {
		src, v = "SOURCE_DATE_EPOCH", os.Getenv("SOURCE_DATE_EPOCH")
	}
	if v == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(secs, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 or Unix seconds", src, v)
	}
	return t.UTC(), nil
}

// collectBundleFiles maps inputs to bundle paths under prefix and returns
// the contents and each bundle path's source path.
func collectBundleFiles(prefix string, inputs []string, yamlOnly bool) (map[string][]byte, map[string]string, error) {
	files, sources := map[string][]byte{}, map[string]string{}
	add := func(rel, src string) error {
		name := prefix + filepath.ToSlash(rel)
		if prev, ok := sources[name]; ok {
			return fmt.Errorf("%s and %s would both be %s in the bundle", prev, src, name)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		files[name], sources[name] = b, src
		return nil
	}
	for _, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			return nil, nil, err
		}
		if !st.IsDir() {
			if err := add(filepath.Base(in), in); err != nil {
				return nil, nil, err
			}
			continue
		}
		var paths []string
		err = filepath.WalkDir(in, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if ext := filepath.Ext(p); yamlOnly && ext != ".yaml" && ext != ".yml" {
				return nil
			}
			paths = append(paths, p)
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		sort.Strings(paths)
		for _, p := range paths {
			rel, err := filepath.Rel(in, p)
			if err != nil {
				return nil, nil, err
			}
			if err := add(rel, p); err != nil {
				return nil, nil, err
			}
		}
	}
	return files, sources, nil
}

func newPolicyVerifyCmd() *cobra.Command {
	var keysPath, scope string
	var minRevision uint64
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "verify --verify-keys verify.jwk BUNDLE|-",
		Short: "Verify a signed policy bundle and print its manifest",
		Long: `Verify a signed policy bundle exactly as the distributor and the guard filter
do: size limits, paths, signature (EdDSA or ES256, kid in the key set), exact
file set and hashes, validity window, scope and, with --min-revision, that the
revision is above the last accepted one; then, as the distributor does before
publishing, that the compiled engine image (what proxies enforce) is exactly
what the policy sources in the bundle compile to. Exit code 1 on any failure.
- reads the bundle from stdin; -o csv prints the files, one a row.`,
		Example: "  meshguard policy verify --verify-keys keys/verify.jwk --scope grid-prod --min-revision 41 policy.bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keysPath == "" {
				return usagef("--verify-keys is required (the public JWK Set, verify.jwk)")
			}
			in := newInputs(cmd)
			keys, err := readKeySet(in, keysPath)
			if err != nil {
				return err
			}
			data, err := in.read("bundle", args[0])
			if err != nil {
				return err
			}
			b, err := bundle.Open(data, bundle.VerifyOptions{Keys: keys, MinRevision: minRevision, Scope: scope})
			if err != nil {
				return failedf("%s: verification failed: %w", args[0], err)
			}
			return format.print(cmd, newVerifyResult(args[0], b))
		},
	}
	f := cmd.Flags()
	f.StringVar(&keysPath, "verify-keys", "", "public JWK Set (verify.jwk)")
	aliasFlag(f, "verify-keys", "keys")
	f.Uint64Var(&minRevision, "min-revision", 0, "last accepted revision; the bundle's must be above it")
	f.StringVar(&scope, "scope", "", "audience that must be in the bundle's scope")
	format = addOutputFlag(cmd, output.All...)
	return cmd
}

// verifyResult is what policy verify prints: the verified manifest.
type verifyResult struct {
	Bundle   string       `json:"bundle"`
	Digest   string       `json:"digest"`
	Revision uint64       `json:"revision"`
	KeyID    string       `json:"kid"`
	Created  time.Time    `json:"created"`
	Expires  time.Time    `json:"expires"`
	Scope    []string     `json:"scope"`
	Files    []bundleFile `json:"files"`
}

type bundleFile struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
}

func newVerifyResult(name string, b *bundle.Bundle) verifyResult {
	m := b.Manifest
	r := verifyResult{Bundle: name, Digest: b.Digest, Revision: m.Revision, KeyID: m.KeyID, Created: m.Created, Expires: m.Expires,
		Scope: append([]string{}, m.Scope...), Files: []bundleFile{}}
	for n, sum := range m.Files {
		r.Files = append(r.Files, bundleFile{Path: n, SHA256: sum, Size: len(b.Files[n])})
	}
	sort.Slice(r.Files, func(i, j int) bool { return r.Files[i].Path < r.Files[j].Path })
	return r
}

// Text is the manifest as labelled lines, then the files.
func (r verifyResult) Text(w io.Writer) error {
	sc := "(any)"
	if len(r.Scope) > 0 {
		sc = strings.Join(r.Scope, ", ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "verified %s\ndigest   %s\nrevision %d\nkid      %s\ncreated  %s\nexpires  %s\nscope    %s\nfiles    %d\n",
		output.Clean(r.Bundle), r.Digest, r.Revision, output.Clean(r.KeyID), r.Created.Format(time.RFC3339), r.Expires.Format(time.RFC3339),
		output.Clean(sc), len(r.Files))
	for _, f := range r.Files {
		fmt.Fprintf(&b, "  %s  %8d  %s\n", f.SHA256, f.Size, output.Clean(f.Path))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Rows are the files.
func (r verifyResult) Rows() ([]string, [][]string) {
	rows := make([][]string, 0, len(r.Files))
	for _, f := range r.Files {
		rows = append(rows, []string{f.Path, f.SHA256, strconv.Itoa(f.Size)})
	}
	return []string{"path", "sha256", "size"}, rows
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
