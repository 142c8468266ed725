// Package oci serves the OCI distribution API v2 (pull, push, content
// discovery including referrers, content management) over a store.Store.
//
// The handler is anonymous: authentication and authorization are applied by
// the caller (distributor/server) around it. Mount it at /v2/.
//
// Conformance decisions the spec leaves to the registry:
//
//   - Manifests with non-distributable layers (the OCI ...nondistributable...
//     media types, Docker's foreign layers) are refused with
//     MANIFEST_INVALID: such layers are fetched from elsewhere (their urls),
//     while a filter module must be served whole, and verified, from here.
//   - A push by digest may tag the manifest with ?tag=a&tag=b (up to 16);
//     the answer names them in OCI-Tag headers.
//   - sha256 and sha512 digests are accepted everywhere; others are
//     DIGEST_INVALID.
//   - One request at a time may work on an upload: a commit or chunk while
//     another chunk is still arriving gets 409 BLOB_UPLOAD_INVALID, too
//     many open uploads 429 TOOMANYREQUESTS.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/distributor/store"
)

// Options configure the handler. Zero values pick safe defaults.
type Options struct {
	// AllowDelete enables DELETE of manifests, tags and blobs.
	AllowDelete bool
	// MaxManifestBytes bounds a manifest upload (default 4 MiB).
	MaxManifestBytes int64
	// MaxBlobBytes bounds a blob upload (default 512 MiB).
	MaxBlobBytes int64
	// MaxInflatedBytes bounds what each gzip'd layer of a pushed image
	// manifest inflates to (default MaxBlobBytes): a small layer that
	// inflates to gigabytes is refused at push, not when it is unpacked.
	MaxInflatedBytes int64
	// Logger receives server-side errors (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, receives the handler's Prometheus collectors.
	Metrics prometheus.Registerer
}

// Handler serves the OCI distribution API.
type Handler struct {
	st   store.Store
	opt  Options
	reqs *prometheus.CounterVec
	sent prometheus.Counter
}

// NewHandler returns an http.Handler serving /v2/ over st.
func NewHandler(st store.Store, opt Options) *Handler {
	if opt.MaxManifestBytes <= 0 {
		opt.MaxManifestBytes = 4 << 20
	}
	if opt.MaxBlobBytes <= 0 {
		opt.MaxBlobBytes = 512 << 20
	}
	if opt.MaxInflatedBytes <= 0 {
		opt.MaxInflatedBytes = opt.MaxBlobBytes
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	h := &Handler{
		st:  st,
		opt: opt,
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_oci_requests_total",
			Help: "OCI distribution API requests by operation and status code.",
		}, []string{"op", "code"}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_oci_blob_bytes_sent_total",
			Help: "Blob bytes served by the OCI distribution API.",
		}),
	}
	if opt.Metrics != nil {
		for _, c := range []prometheus.Collector{h.reqs, h.sent} {
			if err := opt.Metrics.Register(c); err != nil {
				opt.Logger.Warn("oci: metrics registration", "err", err)
			}
		}
	}
	return h
}

// Error codes of the distribution spec.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeNameUnknown         = "NAME_UNKNOWN"
	codeSizeInvalid         = "SIZE_INVALID"
	codeUnsupported         = "UNSUPPORTED"
	codeTooManyRequests     = "TOOMANYREQUESTS"
)

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// rw records the status for metrics.
type rw struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *rw) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
	w.ResponseWriter.WriteHeader(c)
}

func (w *rw) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *rw) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	// Upload headers may already declare an empty body; a body longer than
	// the declared length makes the server drop the connection.
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{{Code: code, Message: msg}}})
}

// route is a parsed /v2/ path.
type route struct {
	op   string // base, catalog, tags, manifest, blob, upload, referrers
	name string
	ref  string // tag/digest, digest, or upload id
}

// parsePath splits a /v2/... path into a route; ok is false for unknown paths.
func parsePath(p string) (route, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		if p == "/v2" {
			return route{op: "base"}, true
		}
		return route{}, false
	}
	if rest == "" {
		return route{op: "base"}, true
	}
	if rest == "_catalog" {
		return route{op: "catalog"}, true
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return route{op: "tags", name: name}, true
	}
	for _, sep := range []struct{ s, op string }{
		{"/blobs/uploads/", "upload"},
		{"/blobs/", "blob"},
		{"/manifests/", "manifest"},
		{"/referrers/", "referrers"},
	} {
		if i := strings.LastIndex(rest, sep.s); i > 0 {
			ref := rest[i+len(sep.s):]
			if strings.Contains(ref, "/") {
				return route{}, false
			}
			return route{op: sep.op, name: rest[:i], ref: ref}, true
		}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads"); ok {
		return route{op: "upload", name: name}, true
	}
	return route{}, false
}

// Repository returns the repository a /v2/ path acts on ("" for the base
// and catalog paths); ok is false for paths the API does not have.
func Repository(path string) (name string, ok bool) {
	rt, ok := parsePath(path)
	return rt.name, ok
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &rw{ResponseWriter: w}
	rt, ok := parsePath(r.URL.Path)
	op := rt.op
	if !ok {
		op = "unknown"
	}
	defer func() {
		h.reqs.WithLabelValues(op, strconv.Itoa(rec.code)).Inc()
	}()
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if !ok {
		writeError(rec, http.StatusNotFound, codeNameInvalid, "unknown path")
		return
	}
	if rt.op != "base" && rt.op != "catalog" && !store.ValidRepository(rt.name) {
		writeError(rec, http.StatusBadRequest, codeNameInvalid, "invalid repository name")
		return
	}
	switch rt.op {
	case "base":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(rec)
			return
		}
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(rec, "{}")
		}
	case "catalog":
		h.catalog(rec, r)
	case "tags":
		h.tags(rec, r, rt)
	case "manifest":
		h.manifest(rec, r, rt)
	case "blob":
		h.blob(rec, r, rt)
	case "upload":
		h.upload(rec, r, rt)
	case "referrers":
		h.referrers(rec, r, rt)
	}
}

func methodNotAllowed(w http.ResponseWriter) {
	writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "method not allowed")
}

// notFoundText is the client message for each not-found code; the store's
// own error text (paths, a backing registry's URL) stays in the log.
var notFoundText = map[string]string{
	codeBlobUnknown:       "blob unknown to registry",
	codeBlobUploadUnknown: "blob upload unknown to registry",
	codeManifestUnknown:   "manifest unknown to registry",
	codeNameUnknown:       "repository name not known to registry",
	codeManifestInvalid:   "manifest invalid",
}

// storeError maps store errors to API errors. Messages are fixed texts:
// the error itself, which may name files or the backing registry, is
// logged only.
func (h *Handler) storeError(w http.ResponseWriter, err error, notFoundCode string) {
	h.opt.Logger.Debug("oci: request failed", "err", err)
	switch {
	case errors.Is(err, store.ErrNotFound):
		msg := notFoundText[notFoundCode]
		if msg == "" {
			msg = "not found"
		}
		writeError(w, http.StatusNotFound, notFoundCode, msg)
	case errors.Is(err, store.ErrDigestMismatch):
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "content does not match the digest")
	case errors.Is(err, store.ErrUnsupportedDigest):
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "unsupported or malformed digest (sha256 and sha512 are supported)")
	case errors.Is(err, store.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeSizeInvalid, fmt.Sprintf("content exceeds the limit of %d bytes", h.opt.MaxBlobBytes))
	case errors.Is(err, store.ErrInvalidOffset):
		writeError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, "chunk does not start where the upload ends")
	case errors.Is(err, store.ErrUploadBusy):
		writeError(w, http.StatusConflict, codeBlobUploadInvalid, "upload is busy with another request; retry when it has finished")
	case errors.Is(err, store.ErrTooManyUploads):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, codeTooManyRequests, "too many open uploads; retry later")
	case errors.Is(err, store.ErrUnsupported):
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "operation not supported by the storage backend")
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The body was cut off by the server's minimum-rate deadline.
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, codeBlobUploadInvalid, "request body arrived too slowly")
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, codeSizeInvalid, fmt.Sprintf("content exceeds the limit of %d bytes", mbe.Limit))
			return
		}
		h.opt.Logger.Error("oci: storage error", "err", err)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "internal storage error")
	}
}

// pageParams parses n and last.
func pageParams(r *http.Request) (n int, last string, err error) {
	q := r.URL.Query()
	n = -1
	if s := q.Get("n"); s != "" {
		n, err = strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, "", fmt.Errorf("invalid n %q", s)
		}
	}
	return n, q.Get("last"), nil
}

// page applies n/last pagination to a sorted list and sets the Link header.
func page(w http.ResponseWriter, r *http.Request, items []string, n int, last string) []string {
	if last != "" {
		i := sort.SearchStrings(items, last)
		if i < len(items) && items[i] == last {
			i++
		}
		items = items[i:]
	}
	if n >= 0 && len(items) > n {
		items = items[:n]
		if n > 0 {
			q := url.Values{"n": {strconv.Itoa(n)}, "last": {items[n-1]}}
			w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, q.Encode()))
		}
	}
	return items
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w)
		return
	}
	n, last, err := pageParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeUnsupported, err.Error())
		return
	}
	repos, err := h.st.Repositories(r.Context())
	if err != nil {
		h.storeError(w, err, codeNameUnknown)
		return
	}
	repos = page(w, r, repos, n, last)
	writeJSON(w, map[string]any{"repositories": repos})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w)
		return
	}
	n, last, err := pageParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeUnsupported, err.Error())
		return
	}
	tags, err := h.st.Tags(r.Context(), rt.name)
	if err != nil {
		h.storeError(w, err, codeNameUnknown)
		return
	}
	tags = page(w, r, tags, n, last)
	writeJSON(w, map[string]any{"name": rt.name, "tags": tags})
}

// parseDigest accepts sha256 and sha512 digests.
func parseDigest(s string) (digest.Digest, bool) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", false
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return "", false
	}
	return d, true
}

func (h *Handler) blob(w http.ResponseWriter, r *http.Request, rt route) {
	d, ok := parseDigest(rt.ref)
	if !ok {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		f, size, err := h.st.OpenBlob(r.Context(), rt.name, d)
		if err != nil {
			h.storeError(w, err, codeBlobUnknown)
			return
		}
		defer f.Close()
		hd := w.Header()
		hd.Set("Docker-Content-Digest", d.String())
		hd.Set("Content-Type", "application/octet-stream")
		hd.Set("ETag", `"`+d.String()+`"`)
		hd.Set("Cache-Control", "max-age=31536000, immutable")
		if r.Method == http.MethodHead {
			hd.Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
			return
		}
		rec, _ := w.(*rw)
		before := int64(0)
		if rec != nil {
			before = rec.n
		}
		http.ServeContent(w, r, "", time.Time{}, f)
		if rec != nil {
			h.sent.Add(float64(rec.n - before))
		}
	case http.MethodDelete:
		if !h.opt.AllowDelete {
			writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "deletes are disabled")
			return
		}
		if err := h.st.DeleteBlob(r.Context(), rt.name, d); err != nil {
			h.storeError(w, err, codeBlobUnknown)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		methodNotAllowed(w)
	}
}
