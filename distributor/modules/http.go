package modules

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/meshguard/meshguard/distributor/store"
)

// HTTPOptions configure the plain HTTP module handler.
type HTTPOptions struct {
	// Logger receives server-side errors (default slog.Default()).
	Logger *slog.Logger
	// MaxModuleBytes bounds a module (default MaxModuleBytes).
	MaxModuleBytes int64
	// CacheBytes bounds the unpacked modules kept in memory (default 64
	// MiB); a module above a quarter of it is served from a file instead.
	CacheBytes int64
	// SpoolDir holds modules unpacked to files (default: a directory under
	// os.TempDir()); SpoolBytes bounds them (default 1 GiB).
	SpoolDir   string
	SpoolBytes int64
	// Metrics, when set, receives the cache's collectors.
	Metrics prometheus.Registerer
}

// HTTPHandler serves modules stored in OCI form over plain HTTP, for Envoy
// remote code sources and Istio http(s):// WasmPlugin URLs:
//
//	GET|HEAD /modules/<repo>/<tag-or-digest>.wasm         the module
//	GET|HEAD /modules/<repo>/<tag-or-digest>.wasm.sha256  its sha256, hex, as text
//
// The module response carries ETag "<sha256 hex>" and X-Content-Sha256;
// If-None-Match with that ETag gets 304.
//
// Unpacked modules are cached by manifest digest (immutable): small ones
// in memory, large ones in files, each tier bounded in bytes and evicted
// least recently used first. Requests for a module being unpacked wait
// for that one unpacking (single flight), and unpacking streams, so the
// heap stays within CacheBytes plus copy buffers whatever the modules.
type HTTPHandler struct {
	st     store.Store
	opt    HTTPOptions
	flight singleflight.Group
	mem    *lru
	disk   *lru

	unpacks prometheus.Counter
	hits    prometheus.Counter
}

// entry is an unpacked module.
type entry struct {
	sha  string
	size int64
	data []byte // in memory, or
	path string // in a spool file
}

// NewHTTPHandler returns the /modules/ handler over st.
func NewHTTPHandler(st store.Store, opt HTTPOptions) *HTTPHandler {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.MaxModuleBytes <= 0 {
		opt.MaxModuleBytes = MaxModuleBytes
	}
	if opt.CacheBytes <= 0 {
		opt.CacheBytes = 64 << 20
	}
	if opt.SpoolBytes <= 0 {
		opt.SpoolBytes = 1 << 30
	}
	h := &HTTPHandler{st: st, opt: opt, mem: newLRU(opt.CacheBytes), disk: newLRU(opt.SpoolBytes)}
	h.disk.evicted = func(e *entry) { os.Remove(e.path) } // open readers keep serving it
	h.unpacks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshguard_modules_unpacked_total",
		Help: "Modules unpacked from their OCI layer for /modules/ (cache misses).",
	})
	h.hits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshguard_modules_cache_hits_total",
		Help: "/modules/ requests served from the unpacked-module cache.",
	})
	if opt.Metrics != nil {
		for _, c := range []prometheus.Collector{h.unpacks, h.hits} {
			if err := opt.Metrics.Register(c); err != nil {
				opt.Logger.Warn("modules: metrics registration", "err", err)
			}
		}
	}
	return h
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
	e, err := h.module(r, repo, m)
	if err != nil {
		h.fail(w, err)
		return
	}
	etag := `"` + e.sha + `"`
	hd := w.Header()
	hd.Set("ETag", etag)
	hd.Set("X-Content-Sha256", e.sha)
	hd.Set("Cache-Control", "no-cache")
	if sum {
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(e.sha+"\n"))
		return
	}
	hd.Set("Content-Type", "application/wasm")
	// ServeContent handles If-None-Match (304), HEAD and Range.
	if e.data != nil {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(e.data))
		return
	}
	f, err := os.Open(e.path)
	if err != nil {
		// Evicted between lookup and open: unpack again next time.
		h.disk.remove(m.Digest)
		h.fail(w, fmt.Errorf("modules: spool file: %w", err))
		return
	}
	defer f.Close()
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (h *HTTPHandler) fail(w http.ResponseWriter, err error) {
	var fe *FetchError
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "module not found", http.StatusNotFound)
		return
	case errors.As(err, &fe):
		// Storage trouble, not the content's fault.
	case errors.As(err, new(userError)):
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	h.opt.Logger.Error("modules: serving module", "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

// userError marks content that is not a module.
type userError struct{ error }

// module returns the unpacked module of manifest m, unpacking it once
// however many requests ask at the same time.
func (h *HTTPHandler) module(r *http.Request, repo string, m store.Manifest) (*entry, error) {
	if e := h.mem.get(m.Digest); e != nil {
		h.hits.Inc()
		return e, nil
	}
	if e := h.disk.get(m.Digest); e != nil {
		h.hits.Inc()
		return e, nil
	}
	v, err, _ := h.flight.Do(m.Digest.String(), func() (any, error) {
		// The unpacking outlives the request that started it.
		ctx := context.WithoutCancel(r.Context())
		return h.unpack(ctx, repo, m)
	})
	if err != nil {
		return nil, err
	}
	return v.(*entry), nil
}

func (h *HTTPHandler) unpack(ctx context.Context, repo string, m store.Manifest) (*entry, error) {
	h.unpacks.Inc()
	dir, err := h.spoolDir()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "module-*.wasm")
	if err != nil {
		return nil, fmt.Errorf("modules: spool: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	n, sha, err := ExtractTo(f, m.Data, func(d digest.Digest) (io.ReadCloser, error) {
		rc, _, err := h.st.OpenBlob(ctx, repo, d)
		return rc, err
	}, h.opt.MaxModuleBytes)
	if err != nil {
		var fe *FetchError
		if errors.Is(err, store.ErrNotFound) || errors.As(err, &fe) {
			return nil, err
		}
		return nil, userError{err}
	}
	e := &entry{sha: sha, size: n}
	if n <= h.opt.CacheBytes/4 {
		e.data = make([]byte, n)
		if _, err := f.ReadAt(e.data, 0); err != nil {
			return nil, fmt.Errorf("modules: spool: %w", err)
		}
		h.mem.put(m.Digest, e)
		return e, nil
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("modules: spool: %w", err)
	}
	keep = true
	e.path = f.Name()
	h.disk.put(m.Digest, e)
	return e, nil
}

// spoolDir creates the spool directory on first use.
func (h *HTTPHandler) spoolDir() (string, error) {
	h.disk.mu.Lock()
	defer h.disk.mu.Unlock()
	if h.opt.SpoolDir == "" {
		d, err := os.MkdirTemp("", "meshguard-modules-")
		if err != nil {
			return "", fmt.Errorf("modules: spool: %w", err)
		}
		h.opt.SpoolDir = d
	}
	if err := os.MkdirAll(h.opt.SpoolDir, 0o750); err != nil {
		return "", fmt.Errorf("modules: spool: %w", err)
	}
	return h.opt.SpoolDir, nil
}

// lru is a byte-bounded least-recently-used map of unpacked modules.
type lru struct {
	mu      sync.Mutex
	budget  int64
	used    int64
	order   *list.List // front: most recent; values *lruItem
	items   map[digest.Digest]*list.Element
	evicted func(*entry)
}

type lruItem struct {
	key digest.Digest
	e   *entry
}

func newLRU(budget int64) *lru {
	return &lru{budget: budget, order: list.New(), items: map[digest.Digest]*list.Element{}}
}

func (c *lru) get(k digest.Digest) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.items[k]
	if el == nil {
		return nil
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruItem).e
}

// put adds e, evicting the least recently used entries beyond the budget
// (an entry larger than the whole budget is not kept).
func (c *lru) put(k digest.Digest, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&lruItem{k, e})
	c.used += e.size
	for c.used > c.budget && c.order.Len() > 0 {
		c.removeLocked(c.order.Back())
	}
}

func (c *lru) remove(k digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.items[k]; el != nil {
		c.removeLocked(el)
	}
}

func (c *lru) removeLocked(el *list.Element) {
	it := el.Value.(*lruItem)
	c.order.Remove(el)
	delete(c.items, it.key)
	c.used -= it.e.size
	if c.evicted != nil {
		c.evicted(it.e)
	}
}
