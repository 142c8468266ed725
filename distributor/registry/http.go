package registry

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Path is the registry API's root.
const Path = "/v1/registry"

// OpenAPI is the API's OpenAPI 3 document (served at Path/openapi.json).
//
//go:embed openapi.json
var OpenAPI []byte

// Page sizes of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// HandlerOptions configure the HTTP handler.
type HandlerOptions struct {
	// Caller names the organisation the request acts for; an error is 403.
	Caller func(*http.Request) (Caller, error)
	// MaxBody bounds a request body (default 64 KiB).
	MaxBody int64
	Logger  *slog.Logger
}

// Handler serves the registry API under Path.
func Handler(svc *Service, opts HandlerOptions) http.Handler {
	if opts.MaxBody <= 0 {
		opts.MaxBody = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &handler{svc: svc, o: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path+"/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI)
	})
	mux.HandleFunc("POST "+Path+"/{kind}", h.create)
	mux.HandleFunc("GET "+Path+"/{kind}", h.list)
	mux.HandleFunc("GET "+Path+"/{kind}/{id}", h.get)
	mux.HandleFunc("PUT "+Path+"/{kind}/{id}", h.update)
	mux.HandleFunc("DELETE "+Path+"/{kind}/{id}", h.delete)
	mux.HandleFunc(Path+"/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such registry resource (see "+Path+"/openapi.json)", nil)
	})
	return mux
}

type handler struct {
	svc *Service
	o   HandlerOptions
}

// Problem is an error answer: a message and, for 400, the invalid fields.
type Problem struct {
	Error  string       `json:"error"`
	Fields []FieldError `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string, fields []FieldError) {
	writeJSON(w, code, Problem{Error: msg, Fields: fields})
}

func (h *handler) caller(w http.ResponseWriter, r *http.Request) (Caller, Kind, bool) {
	k, err := ParseKind(r.PathValue("kind"))
	if err != nil {
		writeErr(w, http.StatusNotFound, err.Error(), nil)
		return Caller{}, "", false
	}
	c, err := h.o.Caller(r)
	if err != nil {
		writeErr(w, http.StatusForbidden, err.Error(), nil)
		return Caller{}, "", false
	}
	return c, k, true
}

func (h *handler) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
			writeErr(w, http.StatusUnsupportedMediaType, "want Content-Type application/json", nil)
			return nil, false
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit), nil)
			return nil, false
		}
		writeErr(w, http.StatusBadRequest, "reading body: "+err.Error(), nil)
		return nil, false
	}
	return b, true
}

// fail maps a Service error to its status.
func (h *handler) fail(w http.ResponseWriter, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		writeErr(w, http.StatusBadRequest, "invalid entry", ve.Fields)
	case errors.Is(err, ErrForbidden):
		writeErr(w, http.StatusForbidden, err.Error(), nil)
	case errors.Is(err, ErrNotFound):
		writeErr(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, ErrExists):
		writeErr(w, http.StatusConflict, err.Error(), nil)
	case errors.Is(err, ErrConflict):
		writeErr(w, http.StatusPreconditionFailed, err.Error()+": GET it again and retry with its ETag", nil)
	case errors.Is(err, ErrPreconditionRequired):
		writeErr(w, http.StatusPreconditionRequired, err.Error(), nil)
	case errors.Is(err, ErrUnknownKind):
		writeErr(w, http.StatusNotFound, err.Error(), nil)
	default:
		h.o.Logger.Error("registry request failed", "err", err)
		writeErr(w, http.StatusInternalServerError, "internal error (see the distributor log)", nil)
	}
}

// ifMatch parses If-Match: one strong ETag of a generation; 0 when absent.
func ifMatch(r *http.Request) (uint64, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" {
		return 0, nil
	}
	if len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' {
		return 0, &ValidationError{Fields: []FieldError{{Field: "If-Match", Message: "want one strong ETag (\"N\") as returned by GET"}}}
	}
	n, err := strconv.ParseUint(v[1:len(v)-1], 10, 64)
	if err != nil || n == 0 {
		return 0, &ValidationError{Fields: []FieldError{{Field: "If-Match", Message: "not an ETag of this registry"}}}
	}
	return n, nil
}

func entry(w http.ResponseWriter, code int, rec Record) {
	w.Header().Set("ETag", rec.ETag())
	writeJSON(w, code, rec)
}

func (h *handler) create(w http.ResponseWriter, r *http.Request) {
	c, k, ok := h.caller(w, r)
	if !ok {
		return
	}
	b, ok := h.body(w, r)
	if !ok {
		return
	}
	rec, err := h.svc.Create(r.Context(), c, k, b)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Location", Path+"/"+string(k)+"/"+url.PathEscape(rec.ID))
	entry(w, http.StatusCreated, rec)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	c, k, ok := h.caller(w, r)
	if !ok {
		return
	}
	rec, err := h.svc.Get(r.Context(), c, k, r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == rec.ETag() {
		w.Header().Set("ETag", rec.ETag())
		w.WriteHeader(http.StatusNotModified)
		return
	}
	entry(w, http.StatusOK, rec)
}

func (h *handler) update(w http.ResponseWriter, r *http.Request) {
	c, k, ok := h.caller(w, r)
	if !ok {
		return
	}
	prev, err := ifMatch(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	b, ok := h.body(w, r)
	if !ok {
		return
	}
	rec, err := h.svc.Update(r.Context(), c, k, r.PathValue("id"), prev, b)
	if err != nil {
		h.fail(w, err)
		return
	}
	entry(w, http.StatusOK, rec)
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	c, k, ok := h.caller(w, r)
	if !ok {
		return
	}
	prev, err := ifMatch(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	if _, err := h.svc.Delete(r.Context(), c, k, r.PathValue("id"), prev); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var listParams = map[string]bool{"limit": true, "page_token": true, "prefix": true, "class": true, "vendor": true, "label": true}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	c, k, ok := h.caller(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	ve := &ValidationError{}
	for name := range q {
		if !listParams[name] {
			ve.add(name, "unknown query parameter (want limit, page_token, prefix, class, vendor, label)")
		}
	}
	limit := DefaultPageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			ve.add("limit", "want an integer from 1 to %d", MaxPageSize)
		}
		limit = n
	}
	var after string
	if v := q.Get("page_token"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) == 0 || len(b) > MaxIDLen {
			ve.add("page_token", "not a page token of this list")
		}
		after = string(b)
	}
	f := Filter{Prefix: q.Get("prefix"), Class: q.Get("class"), Vendor: q.Get("vendor")}
	if k == KindWorkload && (f.Class != "" || f.Vendor != "") {
		ve.add("class", "workloads have no class or vendor")
	}
	for _, l := range q["label"] {
		key, val, ok := strings.Cut(l, "=")
		if !ok || key == "" {
			ve.add("label", "want key=value")
			continue
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[key] = val
	}
	if err := ve.err(); err != nil {
		h.fail(w, err)
		return
	}
	p, err := h.svc.List(r.Context(), c, k, f, after, limit)
	if err != nil {
		h.fail(w, err)
		return
	}
	if p.Next != "" {
		p.Next = base64.RawURLEncoding.EncodeToString([]byte(p.Next))
	}
	writeJSON(w, http.StatusOK, p)
}
