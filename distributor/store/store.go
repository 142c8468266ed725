// Package store holds OCI content for the distributor: content-addressed
// blobs linked into repositories, manifests, tags and resumable uploads.
//
// Store is the storage contract used by distributor/oci and
// distributor/modules. FS is the embedded backend (local filesystem,
// crash-safe writes).
package store

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"

	// Register sha256 and sha512 with go-digest.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Errors returned by every Store implementation; test with errors.Is.
var (
	// ErrNotFound means the blob, manifest, tag, repository or upload does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch means uploaded content does not hash to the claimed digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidOffset means a chunk does not start where the upload ends.
	ErrInvalidOffset = errors.New("chunk offset does not match upload size")
	// ErrUnsupportedDigest means the digest algorithm is not sha256 or sha512,
	// or the digest is malformed.
	ErrUnsupportedDigest = errors.New("unsupported or malformed digest")
	// ErrTooLarge means content exceeds the configured limit.
	ErrTooLarge = errors.New("content too large")
	// ErrUnsupported means the backend cannot perform the operation (an
	// external registry that cannot delete a tag alone, or has no catalog).
	ErrUnsupported = errors.New("operation not supported by the storage backend")
	// ErrUploadBusy means another request is working on the same upload
	// (a chunk still arriving while the client commits, or two chunks at
	// once); the upload is unchanged.
	ErrUploadBusy = errors.New("upload is busy with another request")
	// ErrTooManyUploads means the limit of open upload sessions is reached.
	ErrTooManyUploads = errors.New("too many open uploads")
)

// Manifest is a stored manifest.
type Manifest struct {
	MediaType string
	Digest    digest.Digest
	Data      []byte
}

// Store is the distributor's content storage. Repository names and tags are
// validated by the caller (distributor/oci); implementations still refuse
// names that could escape their namespace. All methods are safe for
// concurrent use.
type Store interface {
	// StatBlob returns the size of a blob linked into repo.
	StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	// OpenBlob opens a blob linked into repo for reading (seekable, for
	// Range requests) and returns its size.
	OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error)
	// PutBlob stores r as blob d in repo, verifying the digest; at most
	// limit bytes are read when limit > 0. Returns the size.
	PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, limit int64) (int64, error)
	// MountBlob links an existing blob of repo from into repo to.
	MountBlob(ctx context.Context, from, to string, d digest.Digest) error
	// DeleteBlob unlinks blob d from repo.
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error

	// NewUpload starts a chunked upload and returns its id.
	NewUpload(ctx context.Context, repo string) (string, error)
	// UploadSize returns the number of bytes received so far.
	UploadSize(ctx context.Context, repo, id string) (int64, error)
	// AppendUpload appends r at offset (which must equal the current size;
	// offset < 0 appends at the end) and returns the id to use for the next
	// call on this upload and the new size; limit > 0 bounds the total size.
	// The id changes when the backend keeps upload state in it (an external
	// registry's session URL advances with every chunk), so callers must
	// hand the returned id to the client as the next Location. With
	// ErrInvalidOffset it returns a valid id and the current size.
	AppendUpload(ctx context.Context, repo, id string, offset int64, r io.Reader, limit int64) (next string, size int64, err error)
	// CommitUpload verifies the upload hashes to d and makes it blob d of
	// repo; a successful commit consumes the upload.
	CommitUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error)
	// AbortUpload discards an upload.
	AbortUpload(ctx context.Context, repo, id string) error

	// PutManifest stores a manifest (already validated by the caller) in
	// repo and, when tag is not empty, points tag at it.
	PutManifest(ctx context.Context, repo, tag string, m Manifest) error
	// GetManifest resolves a tag or digest reference in repo.
	GetManifest(ctx context.Context, repo, reference string) (Manifest, error)
	// DeleteManifest removes a manifest by digest (and every tag pointing
	// at it), or only the tag when reference is a tag.
	DeleteManifest(ctx context.Context, repo, reference string) error
	// Tags lists the tags of repo in lexical order; ErrNotFound if the
	// repository does not exist.
	Tags(ctx context.Context, repo string) ([]string, error)
	// Manifests lists the manifest digests stored in repo.
	Manifests(ctx context.Context, repo string) ([]digest.Digest, error)
	// Repositories lists repository names in lexical order.
	Repositories(ctx context.Context) ([]string, error)
}

// ReferrerLister is an optional Store extension for backends that can look
// up referrers directly (an external registry's referrers API or referrers
// tag schema) instead of having every manifest of a repository scanned.
type ReferrerLister interface {
	// Referrers returns the digests of manifests in repo that may have
	// subject as their subject; callers re-read and filter them.
	Referrers(ctx context.Context, repo string, subject digest.Digest) ([]digest.Digest, error)
}

// validDigest reports whether d is a well-formed sha256 or sha512 digest.
func validDigest(d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	a := d.Algorithm()
	return a == digest.SHA256 || a == digest.SHA512
}
