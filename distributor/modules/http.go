package modules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshguard/meshguard/distributor/store"
)

// HTTPOptions configure the plain HTTP module handler.
type HTTPOptions struct {
	// Logger receives server-side errors (default slog.Default()).
	Logger *slog.Logger
	// CacheEntries bounds the modules kept unpacked in memory (default 64).
	CacheEntries int
}

// HTTPHandler serves modules stored in OCI form over plain HTTP, for Envoy
// remote code sources and Istio http(s):// WasmPlugin URLs:
//
//	GET|HEAD /modules/<repo>/<tag-or-digest>.wasm         the module
//	GET|HEAD /modules/<repo>/<tag-or-digest>.wasm.sha256  its sha256, hex, as text
//
// The module response carries ETag "<sha256 hex>" and X-Content-Sha256;
// If-None-Match with that ETag gets 304.
type HTTPHandler struct {
	st  store.Store
	opt HTTPOptions

	mu    sync.Mutex
	cache map[digest.Digest]*unpacked // by manifest digest (immutable)
}

type unpacked struct {
	wasm []byte
	sha  string
}

// NewHTTPHandler returns the /modules/ handler over st.
func NewHTTPHandler(st store.Store, opt HTTPOptions) *HTTPHandler {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.CacheEntries <= 0 {
		opt.CacheEntries = 64
	}
	return &HTTPHandler{st: st, opt: opt, cache: map[digest.Digest]*unpacked{}}
}

// ParseModulePath splits /modules/<repo>/<ref>.wasm[.sha256].
func ParseModulePath(p string) (repo, ref string, sum bool, ok bool) {
	rest, ok := strings.CutPrefix(p, "/modules/")
	if !ok {
		return "", "", false, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", "", false, false
	}
	repo, file := rest[:i], rest[i+1:]
	if r, ok := strings.CutSuffix(file, ".wasm.sha256"); ok {
		ref, sum = r, true
	} else if r, ok := strings.CutSuffix(file, ".wasm"); ok {
		ref = r
	} else {
		return "", "", false, false
	}
	if !store.ValidRepository(repo) {
		return "", "", false, false
	}
	if d, err := digest.Parse(ref); err == nil {
		return repo, d.String(), sum, true
	}
	if !store.ValidTag(ref) {
		return "", "", false, false
	}
	return repo, ref, sum, true
}

// ServeHTTP implements http.Handler.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	repo, ref, sum, ok := ParseModulePath(r.URL.Path)
	if !ok {
		http.Error(w, "want /modules/<repository>/<tag>.wasm or .wasm.sha256", http.StatusNotFound)
		return
	}
	m, err := h.st.GetManifest(r.Context(), repo, ref)
	if err != nil {
		h.fail(w, err)
		return
	}
	u, err := h.module(r, repo, m)
	if err != nil {
		h.fail(w, err)
		return
	}
	etag := `"` + u.sha + `"`
	hd := w.Header()
	hd.Set("ETag", etag)
	hd.Set("X-Content-Sha256", u.sha)
	hd.Set("Cache-Control", "no-cache")
	if sum {
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(u.sha+"\n"))
		return
	}
	hd.Set("Content-Type", "application/wasm")
	// ServeContent handles If-None-Match (304), HEAD and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(u.wasm))
}

func (h *HTTPHandler) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "module not found", http.StatusNotFound)
		return
	}
	var ue userError
	if errors.As(err, &ue) {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	h.opt.Logger.Error("modules: serving module", "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

// userError marks content that is not a module.
type userError struct{ error }

func (h *HTTPHandler) module(r *http.Request, repo string, m store.Manifest) (*unpacked, error) {
	h.mu.Lock()
	u := h.cache[m.Digest]
	h.mu.Unlock()
	if u != nil {
		return u, nil
	}
	wasm, err := Extract(m.Data, func(d digest.Digest) (io.ReadCloser, error) {
		f, _, err := h.st.OpenBlob(r.Context(), repo, d)
		return f, err
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		return nil, userError{err}
	}
	s := sha256.Sum256(wasm)
	u = &unpacked{wasm: wasm, sha: hex.EncodeToString(s[:])}
	h.mu.Lock()
	if len(h.cache) >= h.opt.CacheEntries {
		for k := range h.cache { // evict an arbitrary entry
			delete(h.cache, k)
			break
		}
	}
	h.cache[m.Digest] = u
	h.mu.Unlock()
	return u, nil
}
