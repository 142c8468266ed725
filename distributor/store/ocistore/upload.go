package ocistore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// maxUploadID bounds an upload id before it is decoded.
const maxUploadID = 4096

// sessionPattern is the last path segment of an upload URL (a UUID for
// CNCF Distribution, an opaque token elsewhere).
var sessionPattern = regexp.MustCompile(`^[A-Za-z0-9._~=+-]{1,512}$`)

// sizePattern is a canonical non-negative decimal that fits in an int64.
var sizePattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,17})$`)

// encodeUploadID packs the upload's size and its session location (path
// and query; the registry's host always comes from the configuration)
// into an id that is one URL path segment.
func encodeUploadID(size int64, loc *url.URL) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(size, 10) + " " + loc.String()))
}

// decodeUploadID unpacks an id for registry repository full. Ids come from
// clients, so the location must be an upload URL of that repository: the
// store never calls anything else on a client's behalf.
func decodeUploadID(full, id string) (size int64, loc *url.URL, err error) {
	if id == "" || len(id) > maxUploadID {
		return 0, nil, fmt.Errorf("ocistore: malformed upload id: %w", store.ErrNotFound)
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return 0, nil, fmt.Errorf("ocistore: malformed upload id: %w", store.ErrNotFound)
	}
	sz, rest, ok := strings.Cut(string(raw), " ")
	if !ok || !sizePattern.MatchString(sz) {
		return 0, nil, fmt.Errorf("ocistore: malformed upload id: %w", store.ErrNotFound)
	}
	size, err = strconv.ParseInt(sz, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("ocistore: malformed upload id: %w", store.ErrNotFound)
	}
	loc, err = checkUploadLocation(full, rest)
	if err != nil {
		return 0, nil, fmt.Errorf("ocistore: upload id: %w: %w", err, store.ErrNotFound)
	}
	return size, loc, nil
}

// checkUploadLocation accepts "/v2/<full>/blobs/uploads/<session>[?query]"
// with nothing escaped, no host, no fragment and none of the query
// parameters the store sets itself.
func checkUploadLocation(full, loc string) (*url.URL, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return nil, errors.New("location does not parse")
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || u.Fragment != "" || u.RawFragment != "" || u.ForceQuery {
		return nil, errors.New("location is not a path and query")
	}
	if u.RawPath != "" {
		return nil, errors.New("location path is escaped")
	}
	session, ok := strings.CutPrefix(u.Path, "/v2/"+full+"/blobs/uploads/")
	if !ok || !sessionPattern.MatchString(session) || session == "." || session == ".." {
		return nil, fmt.Errorf("location is not an upload of %s", full)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("location query does not parse")
	}
	for _, k := range []string{"digest", "mount", "from"} {
		if q.Has(k) {
			return nil, fmt.Errorf("location query sets %s", k)
		}
	}
	return &url.URL{Path: u.Path, RawQuery: u.RawQuery}, nil
}

// location reads and checks the Location of a registry's upload response.
func (s *Store) location(full string, resp *http.Response) (*url.URL, error) {
	h := resp.Header.Get("Location")
	if h == "" {
		return nil, errors.New("ocistore: registry sent no upload location")
	}
	u, err := resp.Request.URL.Parse(h)
	if err != nil {
		return nil, fmt.Errorf("ocistore: registry upload location: %w", err)
	}
	if !s.sameHost(u.Host) {
		return nil, fmt.Errorf("ocistore: registry moved the upload to another host (%s); not supported", u.Host)
	}
	loc, err := checkUploadLocation(full, (&url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}).String())
	if err != nil {
		return nil, fmt.Errorf("ocistore: registry upload location: %w", err)
	}
	return loc, nil
}

// sessionURL is the absolute URL of upload session loc, with the digest
// parameter of the final PUT when d is set.
func (s *Store) sessionURL(loc *url.URL, d digest.Digest) string {
	q := loc.RawQuery
	if d != "" {
		if q != "" {
			q += "&"
		}
		q += "digest=" + url.QueryEscape(d.String())
	}
	return s.endpoint(loc.Path, q)
}

// status asks the registry for an upload's size and current location.
// "Range: 0-0" means 0 or 1 byte; hint (the size the id carries) decides.
func (s *Store) status(ctx context.Context, full string, loc *url.URL, hint int64) (int64, *url.URL, error) {
	resp, err := s.call(ctx, full, http.MethodGet, s.sessionURL(loc, ""), nil, nil, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return 0, nil, err
	}
	resp.Body.Close()
	fresh := loc
	if resp.Header.Get("Location") != "" {
		if fresh, err = s.location(full, resp); err != nil {
			return 0, nil, err
		}
	}
	last, ok := parseRange(resp.Header.Get("Range"))
	switch {
	case !ok:
		return 0, fresh, nil
	case last == 0 && hint != 1:
		return 0, fresh, nil
	}
	return last + 1, fresh, nil
}

// sessionCall sends a request to upload session loc. CNCF Distribution
// keeps the upload's size in a signed _state parameter and refuses a stale
// one with 416 (a client that lost a response, or two replicas); the
// status call needs no state and returns a fresh location, where the
// request is sent once more.
func (s *Store) sessionCall(ctx context.Context, full string, loc *url.URL, hint int64, method string, d digest.Digest, b body, hdr http.Header, ok ...int) (*http.Response, *url.URL, error) {
	resp, err := s.call(ctx, full, method, s.sessionURL(loc, d), b, hdr, ok...)
	if err == nil || !errors.Is(err, store.ErrInvalidOffset) {
		return resp, loc, err
	}
	_, fresh, serr := s.status(ctx, full, loc, hint)
	if serr != nil || fresh.String() == loc.String() {
		return nil, loc, err
	}
	resp, err = s.call(ctx, full, method, s.sessionURL(fresh, d), b, hdr, ok...)
	return resp, fresh, err
}

// NewUpload implements store.Store: it opens an upload session in the
// registry and returns an id carrying its location.
func (s *Store) NewUpload(ctx context.Context, repo string) (string, error) {
	full, err := s.full(repo)
	if err != nil {
		return "", err
	}
	loc, err := s.startUpload(ctx, full, "")
	if err != nil {
		return "", err
	}
	if loc == nil {
		return "", errors.New("ocistore: registry completed an upload that had no content")
	}
	return encodeUploadID(0, loc), nil
}

// session resolves repo and decodes an upload id of it: the repository's
// full name, the size the id records and the registry's session location.
func (s *Store) session(repo, id string) (full string, hint int64, loc *url.URL, err error) {
	if full, err = s.full(repo); err != nil {
		return "", 0, nil, err
	}
	hint, loc, err = decodeUploadID(full, id)
	return full, hint, loc, err
}

// UploadSize implements store.Store with the registry's upload status.
func (s *Store) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	full, hint, loc, err := s.session(repo, id)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	size, _, err := s.status(ctx, full, loc, hint)
	return size, err
}

// AppendUpload implements store.Store. The chunk is read (and the limit
// checked) before the registry sees it, then sent as one PATCH with an
// exact Content-Range the registry verifies. It returns a new id: the
// registry's next location and the new size.
func (s *Store) AppendUpload(ctx context.Context, repo, id string, offset int64, r io.Reader, limit int64) (string, int64, error) {
	full, hint, loc, err := s.session(repo, id)
	if err != nil {
		return id, 0, err
	}
	start := hint
	if offset >= 0 && offset != hint {
		// The id's size may be stale (a lost response); the registry decides.
		sctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
		size, fresh, err := s.status(sctx, full, loc, hint)
		cancel()
		if err != nil {
			return id, 0, err
		}
		if offset != size {
			return encodeUploadID(size, fresh), size, fmt.Errorf("ocistore: chunk at %d, upload has %d bytes: %w", offset, size, store.ErrInvalidOffset)
		}
		start, loc = size, fresh
	}
	max := int64(-1)
	if limit > 0 {
		if max = limit - start; max < 0 {
			return id, start, store.ErrTooLarge
		}
	}
	sp, err := s.spool(r, max, nil)
	if err != nil {
		return id, start, err
	}
	defer sp.Close()
	if sp.size == 0 {
		return id, start, nil
	}
	patch := func(loc *url.URL, start int64) (*http.Response, *url.URL, error) {
		hdr := http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", start, start+sp.size-1)},
		}
		return s.sessionCall(ctx, full, loc, start, http.MethodPatch, "", sp, hdr, http.StatusAccepted, http.StatusNoContent)
	}
	resp, used, err := patch(loc, start)
	if errors.Is(err, store.ErrInvalidOffset) {
		sctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
		size, fresh, serr := s.status(sctx, full, used, start)
		cancel()
		switch {
		case serr != nil:
			return id, start, err
		case offset >= 0 || size == start:
			return encodeUploadID(size, fresh), size, err
		case limit > 0 && size+sp.size > limit:
			return encodeUploadID(size, fresh), size, store.ErrTooLarge
		}
		// No offset asked for and the id's size was stale: append at the end.
		start = size
		resp, used, err = patch(fresh, start)
	}
	if err != nil {
		return id, start, err
	}
	resp.Body.Close()
	size := start + sp.size
	if last, ok := parseRange(resp.Header.Get("Range")); ok && last+1 != size {
		return id, start, fmt.Errorf("ocistore: registry reports %d bytes after a chunk that should end at %d", last+1, size)
	}
	next := used
	if resp.Header.Get("Location") != "" {
		if next, err = s.location(full, resp); err != nil {
			return id, start, err
		}
	}
	return encodeUploadID(size, next), size, nil
}

// CommitUpload implements store.Store. The registry checks the digest
// (its DIGEST_INVALID is store.ErrDigestMismatch); the content cannot be
// read back to check it here first.
func (s *Store) CommitUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error) {
	if !validDigest(d) {
		return 0, store.ErrUnsupportedDigest
	}
	full, hint, loc, err := s.session(repo, id)
	if err != nil {
		return 0, err
	}
	resp, _, err := s.sessionCall(ctx, full, loc, hint, http.MethodPut, d, nil, nil, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return 0, fmt.Errorf("ocistore: committing blob %s: %w", d, err)
	}
	resp.Body.Close()
	// A registry names the blob by its canonical digest (CNCF Distribution:
	// always sha256), so a sha512 upload comes back as sha256; the registry
	// verified d at the PUT, and StatBlob below checks d is there. Only a
	// different digest of the same algorithm is a mismatch.
	if got, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && got.Algorithm() == d.Algorithm() && got != d {
		return 0, fmt.Errorf("ocistore: registry committed %s, not %s: %w", got, d, store.ErrDigestMismatch)
	}
	return s.StatBlob(ctx, repo, d)
}

// AbortUpload implements store.Store.
func (s *Store) AbortUpload(ctx context.Context, repo, id string) error {
	full, hint, loc, err := s.session(repo, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	resp, _, err := s.sessionCall(ctx, full, loc, hint, http.MethodDelete, "", nil, nil, http.StatusNoContent, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
