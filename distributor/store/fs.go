package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

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
//	corrupt/                                blobs that failed their digest check
//
// Every file becomes visible only through a rename of a fully written and
// fsync'd temporary file followed by an fsync of the directory, so a crash
// never exposes a partial blob. Uploads and temporary files left by a crash
// are discarded by OpenFS.
//
// Content is trusted only after hashing: an upload is committed by copying
// it into a fresh staging file while hashing it, so no write into the upload
// can reach the blob afterwards; one request at a time may work on an
// upload (others get ErrUploadBusy); an existing blob is re-hashed before a
// new push is linked to it; and every blob is hashed on its first read by
// this process (and by Scrub), a corrupted one being moved to corrupt/.
type FS struct {
	root string
	opt  FSOptions

	mu        sync.Mutex
	uploads   map[string]*upload
	lastPurge time.Time
	verified  map[digest.Digest]fileStamp // blobs hashed since open
}

// FSOptions tune an FS. Zero values pick the defaults.
type FSOptions struct {
	// MaxUploads bounds the open upload sessions (default 1024).
	MaxUploads int
	// UploadTTL is how long an upload may sit idle before it is purged
	// (default 1h).
	UploadTTL time.Duration
	// Logger receives integrity problems (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// upload is an open upload session.
type upload struct {
	mu      sync.Mutex // held by the one request working on the upload
	repo    string
	touched time.Time // guarded by FS.mu
}

// fileStamp identifies the file content was verified in.
type fileStamp struct {
	size  int64
	mtime time.Time
}

// maxVerified bounds the verified-blob memo; past it the memo starts over.
const maxVerified = 1 << 16

var _ Store = (*FS)(nil)

// OpenFS opens (creating if needed) a filesystem store rooted at dir and
// discards uploads and temporary files left behind by an earlier process.
func OpenFS(dir string, opt FSOptions) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if opt.MaxUploads <= 0 {
		opt.MaxUploads = 1024
	}
	if opt.UploadTTL <= 0 {
		opt.UploadTTL = time.Hour
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &FS{root: abs, opt: opt, uploads: map[string]*upload{}, verified: map[digest.Digest]fileStamp{}}
	for _, sub := range []string{"tmp", "uploads"} {
		if err := os.RemoveAll(filepath.Join(abs, sub)); err != nil {
			return nil, fmt.Errorf("store: cleaning %s: %w", sub, err)
		}
	}
	for _, sub := range []string{"blobs", "repositories", "tmp", "uploads", "corrupt"} {
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
	if err := s.verify(f, fi, d); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// verify hashes the blob in f unless this process already did for the same
// file, and quarantines it when the content does not match d.
func (s *FS) verify(f *os.File, fi os.FileInfo, d digest.Digest) error {
	stamp := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	s.mu.Lock()
	known, ok := s.verified[d]
	s.mu.Unlock()
	if ok && known == stamp {
		return nil
	}
	h := d.Algorithm().Hash()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("store: reading blob %s: %w", d, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("store: reading blob %s: %w", d, err)
	}
	if got := digest.NewDigestFromEncoded(d.Algorithm(), hex.EncodeToString(h.Sum(nil))); got != d {
		s.quarantine(d, got)
		return fmt.Errorf("store: blob %s failed its digest check and was quarantined: %w", d, ErrNotFound)
	}
	s.mu.Lock()
	if len(s.verified) >= maxVerified {
		clear(s.verified)
	}
	s.verified[d] = stamp
	s.mu.Unlock()
	return nil
}

// quarantine moves a corrupted blob out of blobs/ so it is never served or
// linked again; the next push of the content stores it afresh.
func (s *FS) quarantine(d, got digest.Digest) {
	dst := filepath.Join(s.root, "corrupt", fmt.Sprintf("%s-%s-%d", d.Algorithm(), d.Encoded(), s.opt.Now().UnixNano()))
	err := os.Rename(s.blobPath(d), dst)
	s.mu.Lock()
	delete(s.verified, d)
	s.mu.Unlock()
	s.opt.Logger.Error("store: blob content does not match its digest; quarantined", "digest", d.String(), "content_digest", got.String(), "moved_to", dst, "err", err)
}

// ScrubReport is the outcome of Scrub.
type ScrubReport struct {
	Checked     int
	Quarantined []digest.Digest
}

// Scrub hashes every stored blob and quarantines those whose content does
// not match their name. It stops early when ctx ends.
func (s *FS) Scrub(ctx context.Context) (ScrubReport, error) {
	var rep ScrubReport
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		base := filepath.Join(s.root, "blobs", string(alg))
		err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if e.IsDir() {
				return nil
			}
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if !validDigest(d) {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return nil // removed meanwhile
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return nil
			}
			s.mu.Lock()
			delete(s.verified, d) // a scrub re-reads everything
			s.mu.Unlock()
			rep.Checked++
			if err := s.verify(f, fi, d); errors.Is(err, ErrNotFound) {
				rep.Quarantined = append(rep.Quarantined, d)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("store: scrub: %w", err)
		}
	}
	return rep, nil
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
	if s.intact(dst, d) {
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

// intact reports whether a stored blob exists and hashes to d. A corrupted
// one is quarantined so the caller's verified copy replaces it.
func (s *FS) intact(path string, d digest.Digest) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return s.verify(f, fi, d) == nil
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

// purgeLocked drops uploads idle for longer than the TTL (at most every
// few seconds unless force). s.mu is held.
func (s *FS) purgeLocked(force bool) {
	now := s.opt.Now()
	if !force && now.Sub(s.lastPurge) < 5*time.Second {
		return
	}
	s.lastPurge = now
	for id, u := range s.uploads {
		if now.Sub(u.touched) <= s.opt.UploadTTL || !u.mu.TryLock() {
			continue
		}
		delete(s.uploads, id)
		os.Remove(filepath.Join(s.root, "uploads", id))
		u.mu.Unlock()
	}
}

// acquire takes the upload id of repo for one request; release ends it.
// An upload of another repository is unknown here, as is a busy one.
func (s *FS) acquire(repo, id string) (*upload, string, error) {
	p, err := s.uploadPath(id)
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(false)
	u := s.uploads[id]
	if u == nil || u.repo != repo {
		return nil, "", fmt.Errorf("store: upload %s of %s: %w", id, repo, ErrNotFound)
	}
	if !u.mu.TryLock() {
		return nil, "", fmt.Errorf("store: upload %s: %w", id, ErrUploadBusy)
	}
	u.touched = s.opt.Now()
	return u, p, nil
}

func (s *FS) release(u *upload) {
	s.mu.Lock()
	u.touched = s.opt.Now()
	s.mu.Unlock()
	u.mu.Unlock()
}

// forget ends an upload whose lock the caller holds.
func (s *FS) forget(id string, u *upload, path string) {
	s.mu.Lock()
	if s.uploads[id] == u {
		delete(s.uploads, id)
	}
	s.mu.Unlock()
	os.Remove(path)
	u.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.uploads) >= s.opt.MaxUploads {
		s.purgeLocked(true)
		if len(s.uploads) >= s.opt.MaxUploads {
			return "", fmt.Errorf("store: %d uploads are open: %w", len(s.uploads), ErrTooManyUploads)
		}
	}
	f, err := os.OpenFile(filepath.Join(s.root, "uploads", id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("store: new upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("store: new upload: %w", err)
	}
	s.uploads[id] = &upload{repo: repo, touched: s.opt.Now()}
	return id, nil
}

// UploadSize implements Store.
func (s *FS) UploadSize(_ context.Context, repo, id string) (int64, error) {
	p, err := s.uploadPath(id)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	u := s.uploads[id]
	s.mu.Unlock()
	if u == nil || u.repo != repo {
		return 0, fmt.Errorf("store: upload %s of %s: %w", id, repo, ErrNotFound)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, notFound(err)
	}
	return fi.Size(), nil
}

// AppendUpload implements Store. The id never changes.
func (s *FS) AppendUpload(_ context.Context, repo, id string, offset int64, r io.Reader, limit int64) (string, int64, error) {
	u, p, err := s.acquire(repo, id)
	if err != nil {
		return id, 0, err
	}
	defer s.release(u)
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

// CommitUpload implements Store. The upload is copied into a fresh staging
// file while it is hashed, and that copy becomes the blob.
func (s *FS) CommitUpload(_ context.Context, repo, id string, d digest.Digest) (int64, error) {
	if !validDigest(d) {
		return 0, ErrUnsupportedDigest
	}
	u, p, err := s.acquire(repo, id)
	if err != nil {
		return 0, err
	}
	src, err := os.Open(p)
	if err != nil {
		s.release(u)
		return 0, notFound(err)
	}
	defer src.Close()
	f, err := s.tempFile()
	if err != nil {
		s.release(u)
		return 0, fmt.Errorf("store: %w", err)
	}
	v := d.Algorithm().Hash()
	n, err := io.Copy(io.MultiWriter(f, v), src)
	if err == nil && digest.NewDigestFromEncoded(d.Algorithm(), hex.EncodeToString(v.Sum(nil))) != d {
		err = ErrDigestMismatch
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		s.release(u)
		if errors.Is(err, ErrDigestMismatch) {
			return 0, err
		}
		return 0, fmt.Errorf("store: upload %s: %w", id, err)
	}
	if err := s.commitBlob(f, repo, d); err != nil {
		s.release(u)
		return 0, err
	}
	s.forget(id, u, p)
	return n, nil
}

// AbortUpload implements Store.
func (s *FS) AbortUpload(_ context.Context, repo, id string) error {
	u, p, err := s.acquire(repo, id)
	if err != nil {
		return err
	}
	s.forget(id, u, p)
	return nil
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
	if got := d.Algorithm().FromBytes(data); got != d {
		s.quarantine(d, got)
		return Manifest{}, fmt.Errorf("store: manifest %s failed its digest check and was quarantined: %w", d, ErrNotFound)
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
