package ocistore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// memSpool is how much of a chunk is held in memory before it spills to a
// scratch file.
const memSpool = 1 << 20

// spool is content read ahead of an upload.
type spool struct {
	mem  []byte
	file *os.File
	size int64
}

func (sp *spool) Size() int64 { return sp.size }

func (sp *spool) NewReader() io.Reader {
	if sp.file != nil {
		return io.NewSectionReader(sp.file, 0, sp.size)
	}
	return bytes.NewReader(sp.mem)
}

func (sp *spool) Close() {
	if sp.file != nil {
		sp.file.Close()
		os.Remove(sp.file.Name())
	}
}

// spool reads r to its end, at most max bytes (max < 0: no bound; one
// byte more is ErrTooLarge), feeding h when not nil.
func (s *Store) spool(r io.Reader, max int64, h hash.Hash) (*spool, error) {
	src := r
	if max >= 0 {
		src = io.LimitReader(r, max+1)
	}
	if h != nil {
		src = io.TeeReader(src, h)
	}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, src, memSpool+1)
	sp := &spool{mem: buf.Bytes(), size: n}
	switch {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, fmt.Errorf("ocistore: reading content: %w", err)
	default:
		f, err := os.CreateTemp(s.opt.ScratchDir, "ocistore-")
		if err != nil {
			return nil, fmt.Errorf("ocistore: scratch file: %w", err)
		}
		sp.file, sp.mem = f, nil
		if _, err := f.Write(buf.Bytes()); err != nil {
			sp.Close()
			return nil, fmt.Errorf("ocistore: scratch file: %w", err)
		}
		m, err := io.Copy(f, src)
		sp.size += m
		if err != nil {
			sp.Close()
			return nil, fmt.Errorf("ocistore: reading content: %w", err)
		}
	}
	if max >= 0 && sp.size > max {
		sp.Close()
		return nil, store.ErrTooLarge
	}
	return sp, nil
}

func (s *Store) blobURL(full string, d digest.Digest) string {
	return s.endpoint("/v2/"+full+"/blobs/"+d.String(), "")
}

// StatBlob implements store.Store.
func (s *Store) StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	full, err := s.full(repo)
	if err != nil {
		return 0, err
	}
	if !validDigest(d) {
		return 0, store.ErrUnsupportedDigest
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	resp, err := s.call(ctx, full, http.MethodHead, s.blobURL(full, d), nil, nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("ocistore: registry sent no size for blob %s", d)
	}
	return resp.ContentLength, nil
}

// getBlob starts reading blob d of full at offset from, with a Range
// request; a registry that ignores Range is skipped forward.
func (s *Store) getBlob(ctx context.Context, full string, d digest.Digest, from int64) (*http.Response, error) {
	hdr := http.Header{}
	if from > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	resp, err := s.call(ctx, full, http.MethodGet, s.blobURL(full, d), nil, hdr, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	switch {
	case from == 0 && resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", from)) {
			resp.Body.Close()
			return nil, fmt.Errorf("ocistore: blob %s: asked for bytes from %d, got %q", d, from, resp.Header.Get("Content-Range"))
		}
	default:
		if _, err := io.CopyN(io.Discard, resp.Body, from); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("ocistore: blob %s: skipping to %d: %w", d, from, err)
		}
	}
	return resp, nil
}

// OpenBlob implements store.Store. The reader fetches lazily: a Seek only
// moves the position and the next Read after a jump issues a Range request.
func (s *Store) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	full, err := s.full(repo)
	if err != nil {
		return nil, 0, err
	}
	if !validDigest(d) {
		return nil, 0, store.ErrUnsupportedDigest
	}
	// Start the transfer at once: most opens read the whole blob.
	resp, err := s.getBlob(ctx, full, d, 0)
	if err != nil {
		return nil, 0, err
	}
	size := resp.ContentLength
	if size < 0 {
		resp.Body.Close()
		if size, err = s.StatBlob(ctx, repo, d); err != nil {
			return nil, 0, err
		}
		resp = nil
	}
	b := &blobReader{s: s, ctx: ctx, full: full, d: d, size: size, h: d.Algorithm().Hash()}
	if resp != nil {
		b.body = resp.Body
	}
	return b, size, nil
}

// blobReader is a seekable reader over a blob in the registry.
type blobReader struct {
	s       *Store
	ctx     context.Context
	full    string
	d       digest.Digest
	size    int64
	pos     int64         // where the next Read starts
	body    io.ReadCloser // open response body, positioned at bodyPos
	bodyPos int64
	// h hashes bytes [0, hashed) while reads are sequential from the start;
	// nil once that stops or the digest has been checked.
	h      hash.Hash
	hashed int64
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		return 0, io.EOF
	}
	if b.body != nil && b.bodyPos != b.pos {
		b.body.Close()
		b.body = nil
	}
	if b.body == nil {
		resp, err := b.s.getBlob(b.ctx, b.full, b.d, b.pos)
		if err != nil {
			return 0, err
		}
		b.body, b.bodyPos = resp.Body, b.pos
	}
	if rem := b.size - b.pos; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := b.body.Read(p)
	if b.h != nil {
		if b.hashed == b.pos {
			b.h.Write(p[:n])
			b.hashed += int64(n)
		} else {
			b.h = nil
		}
	}
	b.pos += int64(n)
	b.bodyPos += int64(n)
	if b.pos == b.size {
		if b.h != nil {
			got := digest.NewDigest(b.d.Algorithm(), b.h)
			b.h = nil
			if got != b.d {
				return n, fmt.Errorf("ocistore: registry served %s for blob %s: %w", got, b.d, store.ErrDigestMismatch)
			}
		}
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *blobReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = b.pos + offset
	case io.SeekEnd:
		abs = b.size + offset
	default:
		return b.pos, errors.New("ocistore: invalid whence")
	}
	if abs < 0 {
		return b.pos, errors.New("ocistore: negative position")
	}
	b.pos = abs
	return abs, nil
}

func (b *blobReader) Close() error {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	return nil
}

// PutBlob implements store.Store. The content is read and checked first,
// then sent in one PUT; a blob the repository already has is not sent.
func (s *Store) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, limit int64) (int64, error) {
	if !validDigest(d) {
		return 0, store.ErrUnsupportedDigest
	}
	full, err := s.full(repo)
	if err != nil {
		return 0, err
	}
	max := int64(-1)
	if limit > 0 {
		max = limit
	}
	h := d.Algorithm().Hash()
	sp, err := s.spool(r, max, h)
	if err != nil {
		return 0, fmt.Errorf("ocistore: blob %s: %w", d, err)
	}
	defer sp.Close()
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return 0, fmt.Errorf("ocistore: blob %s: content hashes to %s: %w", d, got, store.ErrDigestMismatch)
	}
	if n, err := s.StatBlob(ctx, repo, d); err == nil && n == sp.size {
		return n, nil
	}
	if err := s.upload(ctx, full, d, sp); err != nil {
		return 0, err
	}
	return sp.size, nil
}

// upload sends checked content as blob d of full: POST, then PUT.
func (s *Store) upload(ctx context.Context, full string, d digest.Digest, sp *spool) error {
	loc, err := s.startUpload(ctx, full, "")
	if err != nil {
		return err
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err := s.call(ctx, full, http.MethodPut, s.sessionURL(loc, d), sp, hdr, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		s.cancelUpload(full, loc)
		return err
	}
	resp.Body.Close()
	return nil
}

// startUpload opens an upload session on full (with mount parameters when
// query is set) and returns its location; a 201 (mounted) returns nil.
func (s *Store) startUpload(ctx context.Context, full, query string) (*url.URL, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	u := s.endpoint("/v2/"+full+"/blobs/uploads/", query)
	resp, err := s.call(ctx, full, http.MethodPost, u, nil, nil, http.StatusAccepted, http.StatusCreated)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil, nil
	}
	return s.location(full, resp)
}

// cancelUpload deletes an upload session after a failure, best effort and
// detached from the failed request's context; the registry's upload purge
// removes what this misses.
func (s *Store) cancelUpload(full string, loc *url.URL) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.Timeout)
	defer cancel()
	if _, _, err := s.sessionCall(ctx, full, loc, -1, http.MethodDelete, "", nil, nil, http.StatusNoContent, http.StatusOK, http.StatusAccepted); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("ocistore: could not cancel an upload session", "repository", full, "err", err)
	}
}

// MountBlob implements store.Store: a cross-repository mount, or a copy
// when the registry does not mount (it answers 202 with an upload).
func (s *Store) MountBlob(ctx context.Context, from, to string, d digest.Digest) error {
	if !validDigest(d) {
		return store.ErrUnsupportedDigest
	}
	fromFull, err := s.full(from)
	if err != nil {
		return err
	}
	toFull, err := s.full(to)
	if err != nil {
		return err
	}
	q := url.Values{"mount": {d.String()}, "from": {fromFull}}
	loc, err := s.startUpload(ctx, toFull, q.Encode())
	if err != nil {
		return err
	}
	if loc == nil {
		return nil
	}
	s.cancelUpload(toFull, loc)
	rc, size, err := s.OpenBlob(ctx, from, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := s.PutBlob(ctx, to, d, rc, size); err != nil {
		return fmt.Errorf("ocistore: copying blob %s from %s to %s: %w", d, from, to, err)
	}
	return nil
}

// DeleteBlob implements store.Store (the registry unlinks the blob from
// the repository; its garbage collector reclaims the content).
func (s *Store) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	full, err := s.full(repo)
	if err != nil {
		return err
	}
	if !validDigest(d) {
		return store.ErrUnsupportedDigest
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	resp, err := s.call(ctx, full, http.MethodDelete, s.blobURL(full, d), nil, nil, http.StatusAccepted, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// parseRange parses an upload's Range header ("0-<last>", or "bytes=0-<last>").
func parseRange(h string) (last int64, ok bool) {
	h = strings.TrimPrefix(strings.TrimSpace(h), "bytes=")
	a, b, found := strings.Cut(h, "-")
	if !found || a != "0" {
		return 0, false
	}
	n, err := strconv.ParseInt(b, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
