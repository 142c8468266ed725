package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// FS is a Store on the local filesystem.
//
// Layout under the root directory:
//
//	blobs/<alg>/<hex[0:2]>/<hex>            content (blobs and manifests)
//	repositories/<name>/_blobs/<alg>/<hex>  blob link (empty file)
//	repositories/<name>/_manifests/<alg>/<hex>  manifest link (holds the media type)
//	repositories/<name>/_tags/<tag>         tag (holds the manifest digest)
//	uploads/<id>                            chunked upload in progress
//	tmp/                                    staging for atomic writes
//
// Every file becomes visible only through a rename of a fully written and
// fsync'd temporary file followed by an fsync of the directory, so a crash
// never exposes a partial blob. Uploads and temporary files left by a crash
// are discarded by OpenFS.
type FS struct {
	root string
}

var _ Store = (*FS)(nil)

// OpenFS opens (creating if needed) a filesystem store rooted at dir and
// discards uploads and temporary files left behind by an earlier process.
func OpenFS(dir string) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &FS{root: abs}
	for _, sub := range []string{"tmp", "uploads"} {
		if err := os.RemoveAll(filepath.Join(abs, sub)); err != nil {
			return nil, fmt.Errorf("store: cleaning %s: %w", sub, err)
		}
	}
	for _, sub := range []string{"blobs", "repositories", "tmp", "uploads"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return s, nil
}

// Root returns the store's directory.
func (s *FS) Root() string { return s.root }

// repoPattern is the OCI distribution-spec repository name grammar.
var repoPattern = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// tagPattern is the OCI distribution-spec tag grammar.
var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// ValidRepository reports whether name is a valid repository name.
func ValidRepository(name string) bool {
	return len(name) <= 255 && repoPattern.MatchString(name)
}

// ValidTag reports whether tag is a valid tag.
func ValidTag(tag string) bool { return tagPattern.MatchString(tag) }

func (s *FS) repoDir(repo string) (string, error) {
	if !ValidRepository(repo) {
		return "", fmt.Errorf("store: invalid repository name %q: %w", repo, ErrNotFound)
	}
	return filepath.Join(s.root, "repositories", filepath.FromSlash(repo)), nil
}

func (s *FS) blobPath(d digest.Digest) string {
	h := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), h[:2], h)
}

func (s *FS) linkPath(repo, kind string, d digest.Digest) (string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return "", err
	}
	if !validDigest(d) {
		return "", ErrUnsupportedDigest
	}
	return filepath.Join(dir, kind, string(d.Algorithm()), d.Encoded()), nil
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	return err
}

// StatBlob implements Store.
func (s *FS) StatBlob(_ context.Context, repo string, d digest.Digest) (int64, error) {
	link, err := s.linkPath(repo, "_blobs", d)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(link); err != nil {
		return 0, notFound(err)
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, notFound(err)
	}
	return fi.Size(), nil
}

// OpenBlob implements Store.
func (s *FS) OpenBlob(_ context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	link, err := s.linkPath(repo, "_blobs", d)
	if err != nil {
		return nil, 0, err
	}
	if _, err := os.Stat(link); err != nil {
		return nil, 0, notFound(err)
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, 0, notFound(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// tempFile creates a staging file under tmp/.
func (s *FS) tempFile() (*os.File, error) {
	return os.CreateTemp(filepath.Join(s.root, "tmp"), "w-")
}

// publish fsyncs and closes f, then renames it to dst and fsyncs dst's directory.
func publish(f *os.File, dst string) error {
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeSmall atomically writes data to dst.
func (s *FS) writeSmall(dst string, data []byte) error {
	f, err := s.tempFile()
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	return publish(f, dst)
}

// commitBlob moves a verified staging file into the blob store (or drops it
// when the blob already exists) and links it into repo.
func (s *FS) commitBlob(f *os.File, repo string, d digest.Digest) error {
	link, err := s.linkPath(repo, "_blobs", d)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	dst := s.blobPath(d)
	if _, err := os.Stat(dst); err == nil {
		f.Close()
		os.Remove(f.Name())
	} else if err := publish(f, dst); err != nil {
		return fmt.Errorf("store: committing blob %s: %w", d, err)
	}
	if _, err := os.Stat(link); err == nil {
		return nil
	}
	if err := s.writeSmall(link, nil); err != nil {
		return fmt.Errorf("store: linking blob %s into %s: %w", d, repo, err)
	}
	return nil
}

// PutBlob implements Store.
func (s *FS) PutBlob(_ context.Context, repo string, d digest.Digest, r io.Reader, limit int64) (int64, error) {
	if !validDigest(d) {
		return 0, ErrUnsupportedDigest
	}
	if _, err := s.repoDir(repo); err != nil {
		return 0, err
	}
	f, err := s.tempFile()
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	v := d.Algorithm().Hash()
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(f, v), src)
	if err == nil && limit > 0 && n > limit {
		err = ErrTooLarge
	}
	if err == nil && digest.NewDigestFromEncoded(d.Algorithm(), hex.EncodeToString(v.Sum(nil))) != d {
		err = ErrDigestMismatch
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return 0, fmt.Errorf("store: blob %s: %w", d, err)
	}
	return n, s.commitBlob(f, repo, d)
}

// MountBlob implements Store.
func (s *FS) MountBlob(ctx context.Context, from, to string, d digest.Digest) error {
	if _, err := s.StatBlob(ctx, from, d); err != nil {
		return err
	}
	link, err := s.linkPath(to, "_blobs", d)
	if err != nil {
		return err
	}
	return s.writeSmall(link, nil)
}

// DeleteBlob implements Store. The content stays in blobs/ (other
// repositories may link it); only the repository's link goes.
func (s *FS) DeleteBlob(_ context.Context, repo string, d digest.Digest) error {
	link, err := s.linkPath(repo, "_blobs", d)
	if err != nil {
		return err
	}
	if err := os.Remove(link); err != nil {
		return notFound(err)
	}
	return nil
}

var uploadIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (s *FS) uploadPath(id string) (string, error) {
	if !uploadIDPattern.MatchString(id) {
		return "", ErrNotFound
	}
	return filepath.Join(s.root, "uploads", id), nil
}

// NewUpload implements Store.
func (s *FS) NewUpload(_ context.Context, repo string) (string, error) {
	if _, err := s.repoDir(repo); err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	f, err := os.OpenFile(filepath.Join(s.root, "uploads", id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("store: new upload: %w", err)
	}
	return id, f.Close()
}

// UploadSize implements Store.
func (s *FS) UploadSize(_ context.Context, _, id string) (int64, error) {
	p, err := s.uploadPath(id)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, notFound(err)
	}
	return fi.Size(), nil
}

// AppendUpload implements Store. The id never changes.
func (s *FS) AppendUpload(_ context.Context, _, id string, offset int64, r io.Reader, limit int64) (string, int64, error) {
	p, err := s.uploadPath(id)
	if err != nil {
		return id, 0, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return id, 0, notFound(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return id, 0, err
	}
	size := fi.Size()
	if offset >= 0 && offset != size {
		return id, size, ErrInvalidOffset
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		return id, size, err
	}
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit-size+1)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		// Keep the upload consistent: drop the partial chunk.
		_ = f.Truncate(size)
		return id, size, fmt.Errorf("store: upload %s: %w", id, err)
	}
	if limit > 0 && size+n > limit {
		_ = f.Truncate(size)
		return id, size, ErrTooLarge
	}
	return id, size + n, nil
}

// CommitUpload implements Store.
func (s *FS) CommitUpload(_ context.Context, repo, id string, d digest.Digest) (int64, error) {
	if !validDigest(d) {
		return 0, ErrUnsupportedDigest
	}
	p, err := s.uploadPath(id)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return 0, notFound(err)
	}
	v := d.Algorithm().Hash()
	n, err := io.Copy(v, f)
	if err != nil {
		f.Close()
		return 0, fmt.Errorf("store: upload %s: %w", id, err)
	}
	if digest.NewDigestFromEncoded(d.Algorithm(), hex.EncodeToString(v.Sum(nil))) != d {
		f.Close()
		return 0, ErrDigestMismatch
	}
	return n, s.commitBlob(f, repo, d)
}

// AbortUpload implements Store.
func (s *FS) AbortUpload(_ context.Context, _, id string) error {
	p, err := s.uploadPath(id)
	if err != nil {
		return err
	}
	return notFound(os.Remove(p))
}

func (s *FS) tagPath(repo, tag string) (string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return "", err
	}
	if !ValidTag(tag) {
		return "", fmt.Errorf("store: invalid tag %q: %w", tag, ErrNotFound)
	}
	return filepath.Join(dir, "_tags", tag), nil
}

// PutManifest implements Store.
func (s *FS) PutManifest(_ context.Context, repo, tag string, m Manifest) error {
	if !validDigest(m.Digest) || m.Digest.Algorithm().FromBytes(m.Data) != m.Digest {
		return ErrDigestMismatch
	}
	link, err := s.linkPath(repo, "_manifests", m.Digest)
	if err != nil {
		return err
	}
	dst := s.blobPath(m.Digest)
	if _, err := os.Stat(dst); err != nil {
		if err := s.writeSmall(dst, m.Data); err != nil {
			return fmt.Errorf("store: manifest %s: %w", m.Digest, err)
		}
	}
	if err := s.writeSmall(link, []byte(m.MediaType)); err != nil {
		return fmt.Errorf("store: manifest %s: %w", m.Digest, err)
	}
	if tag == "" {
		return nil
	}
	tp, err := s.tagPath(repo, tag)
	if err != nil {
		return err
	}
	if err := s.writeSmall(tp, []byte(m.Digest)); err != nil {
		return fmt.Errorf("store: tag %s: %w", tag, err)
	}
	return nil
}

// resolve turns a tag or digest reference into a digest.
func (s *FS) resolve(repo, reference string) (digest.Digest, error) {
	if d, err := digest.Parse(reference); err == nil {
		if !validDigest(d) {
			return "", ErrUnsupportedDigest
		}
		return d, nil
	}
	tp, err := s.tagPath(repo, reference)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(tp)
	if err != nil {
		return "", notFound(err)
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("store: corrupt tag %s: %w", tp, err)
	}
	return d, nil
}

// GetManifest implements Store.
func (s *FS) GetManifest(_ context.Context, repo, reference string) (Manifest, error) {
	d, err := s.resolve(repo, reference)
	if err != nil {
		return Manifest{}, err
	}
	link, err := s.linkPath(repo, "_manifests", d)
	if err != nil {
		return Manifest{}, err
	}
	mt, err := os.ReadFile(link)
	if err != nil {
		return Manifest{}, notFound(err)
	}
	data, err := os.ReadFile(s.blobPath(d))
	if err != nil {
		return Manifest{}, notFound(err)
	}
	return Manifest{MediaType: string(mt), Digest: d, Data: data}, nil
}

// DeleteManifest implements Store.
func (s *FS) DeleteManifest(ctx context.Context, repo, reference string) error {
	if _, err := digest.Parse(reference); err != nil {
		tp, err := s.tagPath(repo, reference)
		if err != nil {
			return err
		}
		return notFound(os.Remove(tp))
	}
	d, err := s.resolve(repo, reference)
	if err != nil {
		return err
	}
	link, err := s.linkPath(repo, "_manifests", d)
	if err != nil {
		return err
	}
	if err := os.Remove(link); err != nil {
		return notFound(err)
	}
	tags, _ := s.Tags(ctx, repo)
	for _, t := range tags {
		if td, err := s.resolve(repo, t); err == nil && td == d {
			tp, _ := s.tagPath(repo, t)
			_ = os.Remove(tp)
		}
	}
	return nil
}

// Tags implements Store.
func (s *FS) Tags(_ context.Context, repo string) ([]string, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, notFound(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "_tags"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	tags := make([]string, 0, len(ents))
	for _, e := range ents {
		if ValidTag(e.Name()) {
			tags = append(tags, e.Name())
		}
	}
	sort.Strings(tags)
	return tags, nil
}

// Manifests implements Store.
func (s *FS) Manifests(_ context.Context, repo string) ([]digest.Digest, error) {
	dir, err := s.repoDir(repo)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		ents, err := os.ReadDir(filepath.Join(dir, "_manifests", string(alg)))
		if err != nil {
			continue
		}
		for _, e := range ents {
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if validDigest(d) {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// Repositories implements Store.
func (s *FS) Repositories(_ context.Context) ([]string, error) {
	base := filepath.Join(s.root, "repositories")
	var repos []string
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() || p == base {
			return nil
		}
		if strings.HasPrefix(e.Name(), "_") {
			if e.Name() == "_blobs" || e.Name() == "_manifests" || e.Name() == "_tags" {
				rel, _ := filepath.Rel(base, filepath.Dir(p))
				repos = append(repos, filepath.ToSlash(rel))
			}
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(repos)
	return dedupe(repos), nil
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
