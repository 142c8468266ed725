package oci

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/distributor/store"
)

// ParseContentRange parses an upload chunk's Content-Range, "start-end"
// (inclusive, as the distribution spec uses) or "bytes start-end/*".
func ParseContentRange(s string) (start, end int64, err error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "bytes ")
	s = strings.TrimPrefix(s, "bytes=")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("content-range %q: want start-end", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, fmt.Errorf("content-range %q: invalid bounds", s)
	}
	return start, end, nil
}

func uploadLocation(name, id string) string {
	return "/v2/" + name + "/blobs/uploads/" + id
}

func setUploadHeaders(w http.ResponseWriter, name, id string, size int64) {
	w.Header().Set("Location", uploadLocation(name, id))
	w.Header().Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	w.Header().Set("Range", fmt.Sprintf("0-%d", end))
	w.Header().Set("Content-Length", "0")
}

func blobCreated(w http.ResponseWriter, name, d string) {
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d)
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	if rt.ref == "" {
		if r.Method != http.MethodPost {
			methodNotAllowed(w)
			return
		}
		q := r.URL.Query()
		if m := q.Get("mount"); m != "" {
			if d, ok := parseDigest(m); ok {
				from := q.Get("from")
				if store.ValidRepository(from) && h.st.MountBlob(ctx, from, rt.name, d) == nil {
					blobCreated(w, rt.name, d.String())
					return
				}
			}
			// Mount failed: fall through to a regular upload session, as the spec allows.
		} else if ds := q.Get("digest"); ds != "" {
			d, ok := parseDigest(ds)
			if !ok {
				writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
				return
			}
			body := http.MaxBytesReader(w, r.Body, h.opt.MaxBlobBytes)
			if _, err := h.st.PutBlob(ctx, rt.name, d, body, h.opt.MaxBlobBytes); err != nil {
				h.storeError(w, err, codeBlobUploadUnknown)
				return
			}
			blobCreated(w, rt.name, d.String())
			return
		}
		id, err := h.st.NewUpload(ctx, rt.name)
		if err != nil {
			h.storeError(w, err, codeNameUnknown)
			return
		}
		// A body on POST without digest is not part of the spec; discard it.
		setUploadHeaders(w, rt.name, id, 0)
		w.WriteHeader(http.StatusAccepted)
		return
	}

	id := rt.ref
	switch r.Method {
	case http.MethodGet:
		size, err := h.st.UploadSize(ctx, rt.name, id)
		if err != nil {
			h.storeError(w, err, codeBlobUploadUnknown)
			return
		}
		setUploadHeaders(w, rt.name, id, size)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		offset := int64(-1)
		if cr := r.Header.Get("Content-Range"); cr != "" {
			start, end, err := ParseContentRange(cr)
			if err != nil {
				writeError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, err.Error())
				return
			}
			if cl := r.ContentLength; cl >= 0 && cl != end-start+1 {
				writeError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, "Content-Range does not match Content-Length")
				return
			}
			offset = start
		}
		body := http.MaxBytesReader(w, r.Body, h.opt.MaxBlobBytes)
		next, size, err := h.st.AppendUpload(ctx, rt.name, id, offset, body, h.opt.MaxBlobBytes)
		if err != nil {
			if errors.Is(err, store.ErrInvalidOffset) {
				setUploadHeaders(w, rt.name, next, size)
			}
			h.storeError(w, err, codeBlobUploadUnknown)
			return
		}
		setUploadHeaders(w, rt.name, next, size)
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		d, ok := parseDigest(r.URL.Query().Get("digest"))
		if !ok {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, "missing or invalid digest")
			return
		}
		if r.ContentLength != 0 {
			offset := int64(-1)
			if cr := r.Header.Get("Content-Range"); cr != "" {
				start, _, err := ParseContentRange(cr)
				if err != nil {
					writeError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, err.Error())
					return
				}
				offset = start
			}
			body := http.MaxBytesReader(w, r.Body, h.opt.MaxBlobBytes)
			next, _, err := h.st.AppendUpload(ctx, rt.name, id, offset, body, h.opt.MaxBlobBytes)
			if err != nil {
				h.storeError(w, err, codeBlobUploadUnknown)
				return
			}
			id = next
		}
		// A successful commit consumes the upload; nothing to clean up.
		if _, err := h.st.CommitUpload(ctx, rt.name, id, d); err != nil {
			h.storeError(w, err, codeBlobUploadUnknown)
			return
		}
		blobCreated(w, rt.name, d.String())
	case http.MethodDelete:
		if err := h.st.AbortUpload(ctx, rt.name, id); err != nil {
			h.storeError(w, err, codeBlobUploadUnknown)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w)
	}
}

// drain reads at most limit bytes of r, failing beyond that.
func drain(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, store.ErrTooLarge
	}
	return b, nil
}
