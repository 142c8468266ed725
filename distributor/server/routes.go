package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/internal/contract"
)

// Response headers of the bundle API.
const (
	HeaderRevision = "X-Meshguard-Revision"
	// HeaderHeadSeq and HeaderHeadHash are the size and Merkle tree root
	// (base64) of the exported log.
	HeaderHeadSeq  = "X-Meshguard-Head-Seq"
	HeaderHeadHash = "X-Meshguard-Head-Hash"
	// HeaderAnchor is the retention anchor (JSON, decisionlog.Anchor): the
	// exported log's tree grows from it.
	HeaderAnchor = "X-Meshguard-Anchor"
)

type identityKey struct{}

func identityOf(r *http.Request) auth.Identity {
	id, _ := r.Context().Value(identityKey{}).(auth.Identity)
	return id
}

// statusWriter records the status code for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authz names what a request needs: an action, on a resource when the
// resource may have its own allowlist.
type authz func(*http.Request) (auth.Action, auth.Resource)

// handle registers h behind identification, authorisation, the body size
// limit and metrics. action picks the allowlist from the request (nil: open).
func (s *Server) handle(pattern, route string, action authz, maxBody int64, h http.HandlerFunc) {
	requests := s.m.requests.MustCurryWith(map[string]string{"route": route})
	duration := s.m.duration.WithLabelValues(route)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			requests.WithLabelValues(r.Method, strconv.Itoa(code)).Inc()
			duration.Observe(time.Since(start).Seconds())
			if code >= 400 {
				s.log.Info("request", "route", route, "method", r.Method, "path", r.URL.Path, "code", code,
					"identity", identityOf(r).String(), "duration", time.Since(start))
			}
		}()
		if action == nil {
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, auth.Identity{Remote: r.RemoteAddr}))
		} else {
			id, err := s.policy.Identify(r)
			if err != nil {
				s.m.rejected.WithLabelValues(route, "unauthenticated").Inc()
				s.challenge(sw, route)
				s.refuse(sw, r, route, http.StatusUnauthorized, err.Error())
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
			a, res := action(r)
			if !s.policy.AllowedOn(a, id, res) {
				if route == "oci" && id.Token == "" && id.SPIFFEID == "" {
					// Registry clients send credentials (a pull secret) only
					// after a Basic challenge.
					s.m.rejected.WithLabelValues(route, "unauthenticated").Inc()
					s.challenge(sw, route)
					s.refuse(sw, r, route, http.StatusUnauthorized, "credentials required")
					return
				}
				s.m.rejected.WithLabelValues(route, "forbidden").Inc()
				what := string(a)
				if res.Kind != "" {
					what = fmt.Sprintf("%s %s %q", a, res.Kind, res.Name)
				}
				s.refuse(sw, r, route, http.StatusForbidden, fmt.Sprintf("%s may not %s", id, what))
				return
			}
		}
		if maxBody > 0 {
			if r.ContentLength > maxBody {
				s.m.rejected.WithLabelValues(route, "too_large").Inc()
				s.refuse(sw, r, route, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the limit of %d", r.ContentLength, maxBody))
				return
			}
			r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		}
		if b := s.budgets[classOf(route, r)]; b != nil {
			release, ok := b.acquire(r.Context())
			if !ok {
				s.m.rejected.WithLabelValues(route, "busy").Inc()
				sw.Header().Set("Retry-After", "5")
				s.refuse(sw, r, route, http.StatusServiceUnavailable, "the distributor is at its concurrency limit for these requests; retry shortly")
				return
			}
			defer release()
		}
		if hasBody(r) && s.cfg.Limits.BodyMinRate > 0 {
			r.Body = newRateBody(sw, r.Body, s.cfg.Limits.BodyTimeout, float64(s.cfg.Limits.BodyMinRate))
		}
		h(sw, r)
	})
}

// challenge asks for credentials the way the route's clients understand.
func (s *Server) challenge(w http.ResponseWriter, route string) {
	// Registry clients and browsers answer a Basic challenge (a browser
	// asks its user; the password is the token).
	if route == "oci" || route == "ui" || strings.HasPrefix(route, "ui_") {
		w.Header().Set("WWW-Authenticate", `Basic realm="meshguard"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshguard"`)
	}
}

// ociCodes are the distribution-spec error codes of the statuses the
// server itself answers on /v2/ (UNAVAILABLE and UNKNOWN as CNCF
// Distribution uses them).
var ociCodes = map[int]string{
	http.StatusUnauthorized:          "UNAUTHORIZED",
	http.StatusForbidden:             "DENIED",
	http.StatusRequestEntityTooLarge: "SIZE_INVALID",
	http.StatusTooManyRequests:       "TOOMANYREQUESTS",
	http.StatusServiceUnavailable:    "UNAVAILABLE",
	http.StatusInsufficientStorage:   "UNAVAILABLE",
	http.StatusRequestTimeout:        "UNKNOWN",
}

// refuse answers a request the server turns away before (or instead of)
// its handler, in the route's error format: the distribution spec's
// {"errors":[{code,message}]} on /v2/, {"error": msg} elsewhere.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, route string, code int, msg string) {
	if r != nil && hasBody(r) {
		// Answer at once and drop the connection: waiting for (or
		// draining) the body of a request that is refused anyway would let
		// a client without credentials hold the connection.
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	if route == "oci" {
		c := ociCodes[code]
		if c == "" {
			c = "UNKNOWN"
		}
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		writeJSON(w, code, map[string]any{"errors": []map[string]string{{"code": c, "message": msg}}})
		return
	}
	writeError(w, code, msg)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// Compact: stored decision records are passed through byte for byte.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// internalError logs err with a reference and answers 500 with only that
// reference: error text names files, paths or a backing registry and
// stays in the log.
func (s *Server) internalError(w http.ResponseWriter, route, what string, err error, attrs ...any) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	ref := hex.EncodeToString(b[:])
	if errors.Is(err, state.ErrUnavailable) {
		// The state database is down or restarting: say so and let
		// clients retry rather than report a bug.
		s.log.Warn(what, append([]any{"route", route, "ref", ref, "err", err}, attrs...)...)
		w.Header().Set("Retry-After", "1")
		s.refuse(w, nil, route, http.StatusServiceUnavailable, "state database unavailable; retry (reference "+ref+" in the distributor log)")
		return
	}
	s.log.Error(what, append([]any{"route", route, "ref", ref, "err", err}, attrs...)...)
	s.refuse(w, nil, route, http.StatusInternalServerError, "internal error (reference "+ref+" in the distributor log)")
}

// hasBody reports whether a request carries (or may carry) a body.
func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody)
}

// readBody reads a limited body, answering 413 when it is too large.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, route string) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.m.rejected.WithLabelValues(route, "too_large").Inc()
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit))
			return nil, false
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.m.rejected.WithLabelValues(route, "too_slow").Inc()
			s.refuse(w, r, route, http.StatusRequestTimeout, err.Error())
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	if rb, ok := r.Body.(*rateBody); ok {
		rb.done()
	}
	return body, true
}

func fixed(a auth.Action) authz {
	return func(*http.Request) (auth.Action, auth.Resource) { return a, auth.Resource{} }
}

// onChannel: action a on the channel named in the path.
func onChannel(a auth.Action) authz {
	return func(r *http.Request) (auth.Action, auth.Resource) {
		return a, auth.Resource{Kind: auth.KindChannel, Name: r.PathValue("channel")}
	}
}

// readOrWrite: reads need read, writes need write.
func readOrWrite(r *http.Request, write auth.Action) auth.Action {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return auth.ActionRead
	}
	return write
}

// onOCIRepository: /v2/ reads need read, writes push, on the repository in
// the path (the base path and the catalog need the global allowlists).
func onOCIRepository(r *http.Request) (auth.Action, auth.Resource) {
	a := readOrWrite(r, auth.ActionPush)
	if name, ok := oci.Repository(r.URL.Path); ok && name != "" {
		return a, auth.Resource{Kind: auth.KindRepository, Name: name}
	}
	return a, auth.Resource{}
}

// onModuleRepository is onOCIRepository for /modules/ paths.
func onModuleRepository(r *http.Request) (auth.Action, auth.Resource) {
	a := readOrWrite(r, auth.ActionPush)
	if repo, _, _, ok := modules.ParseModulePath(r.URL.Path); ok {
		return a, auth.Resource{Kind: auth.KindRepository, Name: repo}
	}
	return a, auth.Resource{}
}

// mountGuard drops a cross-repository mount from a repository the caller
// may not read (the upload then starts empty, as the spec allows), so a
// mount cannot copy a blob out of a repository with its own read list.
func (s *Server) mountGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodPost && q.Has("mount") {
			from := q.Get("from")
			if !s.policy.AllowedOn(auth.ActionRead, identityOf(r), auth.Resource{Kind: auth.KindRepository, Name: from}) {
				q.Del("mount")
				q.Del("from")
				r2 := r.Clone(r.Context())
				r2.URL.RawQuery = q.Encode()
				r = r2
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) routes(opts Options) error {
	lim := s.cfg.Limits
	s.handle("GET /healthz", "healthz", nil, 0, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /readyz", "readyz", nil, 0, s.readyz)
	s.handle("GET /metrics", "metrics", fixed(auth.ActionMetrics), 0, s.metricsHandler().ServeHTTP)

	s.handle("GET "+contract.BundlesPath, "bundles", fixed(auth.ActionRead), 0, func(w http.ResponseWriter, r *http.Request) {
		// Only the channels the caller may read.
		out := map[string]uint64{}
		for ch, rev := range s.reg.Channels() {
			if s.policy.AllowedOn(auth.ActionRead, identityOf(r), auth.Resource{Kind: auth.KindChannel, Name: ch}) {
				out[ch] = rev
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	s.handle("POST "+contract.BundlesPath+"/{channel}", "bundle_publish", onChannel(auth.ActionPublish), int64(lim.BundleBytes), s.publishBundle)
	s.handle("GET "+contract.BundlesPath+"/{channel}", "bundle_get", onChannel(auth.ActionRead), 0, s.getBundle)
	s.handle("GET "+contract.BundlesPath+"/{channel}/revisions", "bundle_revisions", onChannel(auth.ActionRead), 0, s.listRevisions)
	s.handle("GET "+contract.BundlesPath+"/{channel}/revisions/{rev}", "bundle_revision", onChannel(auth.ActionRead), 0, s.getRevision)

	s.handle("POST "+contract.DecisionsPath, "decisions_ingest", fixed(auth.ActionIngest), int64(lim.DecisionsBytes), s.ingest)
	s.handle("GET "+contract.DecisionsPath, "decisions_query", fixed(auth.ActionAudit), 0, s.queryDecisions)
	s.handle("GET "+contract.DecisionsHeadPath, "decisions_head", fixed(auth.ActionAudit), 0, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.dlog.Head())
	})
	s.handle("GET "+contract.DecisionsLogPath, "decisions_log", fixed(auth.ActionAudit), 0, s.exportDecisions)
	s.handle("GET "+contract.DecisionsCheckpointPath, "decisions_checkpoint", fixed(auth.ActionAudit), 0, s.getCheckpoint)
	s.handle("POST "+contract.DecisionsCheckpointPath, "decisions_checkpoint_sign", fixed(auth.ActionAudit), 1<<10, s.signCheckpoint)
	s.handle("GET "+contract.DecisionsKeyPath, "decisions_key", fixed(auth.ActionAudit), 0, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, s.dlog.Key().Public+"\n")
	})
	s.handle("GET "+contract.DecisionsProofPath+"/{seq}", "decisions_proof", fixed(auth.ActionAudit), 0, s.proveInclusion)
	s.handle("GET "+contract.DecisionsConsistencyPath, "decisions_consistency", fixed(auth.ActionAudit), 0, s.proveConsistency)
	s.consoleRoutes()
	s.registryRoutes()

	// Module and OCI storage (distributor/modules, distributor/oci).
	ociH, modulesH := opts.OCI, opts.Modules
	if ociH == nil || modulesH == nil {
		o, m, err := s.storageHandlers()
		if err != nil {
			return err
		}
		if ociH == nil {
			ociH = o
		}
		if modulesH == nil {
			modulesH = m
		}
	}
	if ociH != nil {
		s.handle("/v2/", "oci", onOCIRepository, int64(lim.ModuleBytes), s.diskGuard("oci", s.mountGuard(ociH)).ServeHTTP)
	}
	if modulesH != nil {
		s.handle("/modules/", "modules", onModuleRepository, int64(lim.ModuleBytes), modulesH.ServeHTTP)
	}
	return nil
}

// readyFailure is what /readyz says about each failing check.
var readyFailure = map[string]string{
	"bundle_storage": "bundle storage not writable",
	"database":       "state database unreachable",
	"decision_log":   "decision log not writable",
	"bundle_keys":    "bundle verification keys unavailable",
	"tls_svid":       "no TLS SVID",
	"storage":        "module storage unreachable",
	"disk":           "data directory below its free-space watermark",
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ready := true
	// /readyz is anonymous: it names the failing check, the log says why
	// (paths and registry addresses stay out of the answer).
	check := func(name string, err error) {
		s.readyMu.Lock()
		changed := fmt.Sprint(err) != s.readyLast[name]
		s.readyLast[name] = fmt.Sprint(err)
		s.readyMu.Unlock()
		if err != nil {
			checks[name] = readyFailure[name]
			ready = false
			if changed {
				s.log.Warn("readiness check failing", "check", name, "err", err)
			}
		} else {
			checks[name] = "ok"
			if changed {
				s.log.Info("readiness check passing", "check", name)
			}
		}
	}
	if s.db != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		check("database", s.db.Ping(ctx))
		cancel()
	} else {
		check("bundle_storage", s.reg.Writable())
	}
	check("decision_log", s.dlog.Writable())
	keysErr := s.keysErr
	if kv, ok := s.verifier.(interface{ Err() error }); ok && keysErr == nil {
		keysErr = kv.Err()
	}
	check("bundle_keys", keysErr)
	if s.tlsSrc != nil {
		_, err := s.tlsSrc.SVID.GetX509SVID()
		check("tls_svid", err)
	}
	// An external registry (storage backend oci) must answer.
	if p, ok := s.store.(interface{ Ping(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		check("storage", p.Ping(ctx))
		cancel()
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": ready, "checks": checks}
	// Expiry warns without failing readiness: an unready distributor would
	// also refuse the publish that fixes it.
	ws := map[string]string{}
	for ch, w := range s.expiryWarnings(time.Now()) {
		ws["bundle_expiry/"+ch] = w.text
	}
	// A full disk refuses writes (507) but reads go on: a warning too.
	if low, _ := s.disk.low(); low {
		ws["disk"] = readyFailure["disk"]
	}
	if len(ws) > 0 {
		body["warnings"] = ws
	}
	writeJSON(w, code, body)
}

// PublishResult is the body of a successful publish (201).
type PublishResult struct {
	Channel  string `json:"channel"`
	Revision uint64 `json:"revision"`
	Digest   string `json:"digest"`
	// Expires is when the bundle stops verifying (proxies fail closed then).
	Expires time.Time `json:"expires,omitzero"`
}

func (s *Server) publishBundle(w http.ResponseWriter, r *http.Request) {
	const route = "bundle_publish"
	name := r.PathValue("channel")
	if !bundles.ValidChannel(name) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("channel %q: name must match [a-z0-9][a-z0-9._-]{0,62}", name))
		return
	}
	if !s.diskOK(w, r, route) {
		return
	}
	body, ok := s.readBody(w, r, route)
	if !ok {
		return
	}
	ri, err := s.reg.Publish(name, body)
	switch {
	case err == nil:
		s.m.publishes.WithLabelValues(name, "ok").Inc()
		s.m.revision.WithLabelValues(name).Set(float64(ri.Revision))
		s.setExpiry(name, ri)
		s.log.Info("bundle published", "channel", name, "revision", ri.Revision, "digest", ri.Digest,
			"size", ri.Size, "by", identityOf(r).String())
		w.Header().Set("Location", fmt.Sprintf("%s/revisions/%d", contract.ChannelPath(name), ri.Revision))
		writeJSON(w, http.StatusCreated, PublishResult{Channel: name, Revision: ri.Revision, Digest: ri.Digest, Expires: ri.Expires})
	case errors.Is(err, errKeysUnavailable):
		s.m.publishes.WithLabelValues(name, "unavailable").Inc()
		writeError(w, http.StatusServiceUnavailable, "bundle verification keys are unavailable; nothing can be published until they are fixed (see the distributor log)")
	case errors.Is(err, bundles.ErrConflict):
		s.m.publishes.WithLabelValues(name, "conflict").Inc()
		s.m.rejected.WithLabelValues(route, "conflict").Inc()
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, bundles.ErrInvalid):
		s.m.publishes.WithLabelValues(name, "invalid").Inc()
		s.m.rejected.WithLabelValues(route, "invalid").Inc()
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, bundles.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, bundles.ErrBadChannel):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		s.m.publishes.WithLabelValues(name, "error").Inc()
		s.internalError(w, route, "bundle publish failed", err, "channel", name)
	}
}

// etagMatch reports whether an If-None-Match header names etag.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// parseWait reads ?wait= as a Go duration ("30s") or whole seconds ("30").
func parseWait(v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil || n < 0 {
			return 0, fmt.Errorf("wait=%q: want a duration such as 30s", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait=%q is negative", v)
	}
	if max <= 0 {
		max = 60 * time.Second
	}
	return min(d, max), nil
}

func bundleHeaders(w http.ResponseWriter, ri bundles.RevisionInfo) {
	h := w.Header()
	h.Set("ETag", ri.ETag())
	h.Set(HeaderRevision, strconv.FormatUint(ri.Revision, 10))
	h.Set("Cache-Control", "no-cache")
}

func (s *Server) getBundle(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	wait, err := parseWait(r.URL.Query().Get("wait"), s.cfg.Bundles.MaxWait)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	inm := r.Header.Get("If-None-Match")
	snap, err := s.reg.Latest(name)
	if err != nil && !(errors.Is(err, bundles.ErrNotFound) && wait > 0) {
		s.bundleError(w, err)
		return
	}
	if wait > 0 && (snap == nil || etagMatch(inm, snap.ETag)) {
		etag := ""
		if snap != nil {
			etag = snap.ETag
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		s.m.longPolls.Inc()
		next, werr := s.reg.Wait(ctx, name, etag)
		s.m.longPolls.Dec()
		cancel()
		if werr != nil {
			s.bundleError(w, werr)
			return
		}
		if next != nil {
			snap = next
		} else if snap == nil {
			writeError(w, http.StatusNotFound, fmt.Sprintf("channel %q has no bundle yet", name))
			return
		}
	}
	bundleHeaders(w, snap.Info)
	if inm != "" && etagMatch(inm, snap.ETag) {
		s.recordPoll(r, name, snap.Info.Revision, http.StatusNotModified)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.recordPoll(r, name, snap.Info.Revision, http.StatusOK)
	w.Header().Set("Content-Type", bundles.MediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(snap.Data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(snap.Data)
	}
}

func (s *Server) bundleError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, bundles.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, bundles.ErrBadChannel):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		s.internalError(w, "bundles", "bundle read failed", err)
	}
}

func (s *Server) listRevisions(w http.ResponseWriter, r *http.Request) {
	revs, err := s.reg.Revisions(r.PathValue("channel"))
	if err != nil {
		s.bundleError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, revs)
}

func (s *Server) getRevision(w http.ResponseWriter, r *http.Request) {
	rev, err := bundles.ParseRevision(r.PathValue("rev"))
	if err != nil {
		s.bundleError(w, err)
		return
	}
	ri, data, err := s.reg.Revision(r.PathValue("channel"), rev)
	if err != nil {
		s.bundleError(w, err)
		return
	}
	bundleHeaders(w, ri)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("Content-Type", bundles.MediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

// IngestResult is the body of a successful decision upload (200).
type IngestResult struct {
	Accepted int `json:"accepted"`
	// Duplicates were already in the log (same uploader and decision_id):
	// a retry of records whose acknowledgement was lost.
	Duplicates int    `json:"duplicates,omitempty"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
}

func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	const route = "decisions_ingest"
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	ndjson := ct == "application/x-ndjson" || ct == "application/jsonl"
	id := identityOf(r)
	if !s.diskOK(w, r, route) {
		return
	}
	// Bytes are charged before the body is read when its length is known,
	// so a refused client sends nothing more.
	byteRate := s.cfg.Limits.IngestBytesRate > 0
	if byteRate && r.ContentLength > 0 {
		if int(r.ContentLength) > s.byteLimiter.Burst() {
			s.m.rejected.WithLabelValues(route, "too_large").Inc()
			s.refuse(w, r, route, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the ingest byte burst of %d", r.ContentLength, s.byteLimiter.Burst()))
			return
		}
		if !s.allowBytes(w, r, route, id, int(r.ContentLength)) {
			return
		}
	}
	cr := &countingReader{r: r.Body}
	recs, err := decisionlog.DecodeReader(cr, ndjson, int(s.cfg.Decisions.MaxRecordBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			s.m.rejected.WithLabelValues(route, "too_large").Inc()
			s.refuse(w, r, route, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit))
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.m.rejected.WithLabelValues(route, "too_slow").Inc()
			s.refuse(w, r, route, http.StatusRequestTimeout, errBodyTooSlow.Error())
		default:
			s.m.rejected.WithLabelValues(route, "invalid").Inc()
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	if rb, ok := r.Body.(*rateBody); ok {
		rb.done()
	}
	for i, rec := range recs {
		// Registry records are the distributor's own: a proxy cannot
		// forge a registration into the trail.
		var d string
		if json.Unmarshal(rec[contract.FieldDecision], &d) == nil && d == contract.DecisionRegistry {
			s.m.rejected.WithLabelValues(route, "invalid").Inc()
			writeError(w, http.StatusBadRequest, fmt.Sprintf("record %d: decision %q is written by the distributor's registry only", i, contract.DecisionRegistry))
			return
		}
	}
	if byteRate && r.ContentLength <= 0 && !s.allowBytes(w, r, route, id, int(cr.n)) {
		return
	}
	if len(recs) > s.limiter.Burst() && s.cfg.Limits.IngestRate > 0 {
		s.m.rejected.WithLabelValues(route, "too_large").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d records in one upload exceed the ingest burst of %d", len(recs), s.limiter.Burst()))
		return
	}
	if ok, wait := s.limiter.Allow(id.Key(), len(recs)); !ok {
		s.m.rejected.WithLabelValues(route, "rate_limited").Inc()
		w.Header().Set("Retry-After", retryAfter(wait))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("ingest rate limit for %s exceeded; retry in %s", id, wait.Round(time.Millisecond)))
		return
	}
	if s.bindings != nil {
		if err := s.checkProxies(id, recs); err != nil {
			s.m.rejected.WithLabelValues(route, "wrong_proxy").Inc()
			s.log.Warn("decision upload refused: records for another proxy", "identity", id.String(), "err", err)
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	decisionlog.Stamp(recs, id.Principal(), time.Now())
	res, err := s.dlog.Append(recs)
	if err != nil {
		s.internalError(w, route, "decision log append failed", err)
		return
	}
	s.m.ingested.Add(float64(res.Accepted))
	if res.Duplicates > 0 {
		s.m.duplicates.Add(float64(res.Duplicates))
	}
	if res.Accepted > 0 {
		s.m.decisionSeq.Set(float64(res.Last))
	}
	writeJSON(w, http.StatusOK, IngestResult{Accepted: res.Accepted, Duplicates: res.Duplicates, FirstSeq: res.First, LastSeq: res.Last})
}

func (s *Server) queryDecisions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var query decisionlog.Query
	var err error
	query.Filter, err = parseQuery(q, queryParams)
	if v := q.Get("limit"); v != "" && err == nil {
		if query.Limit, err = strconv.Atoi(v); err != nil || query.Limit < 1 {
			err = fmt.Errorf("limit=%q: want a positive integer", v)
		}
	}
	if v := q.Get("after"); v != "" && err == nil {
		if query.AfterSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			err = fmt.Errorf("after=%q: want a sequence number", v)
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// The answer is streamed as records are found: {"records":[...],
	// "next":N}. A failure after the first byte aborts the response, so a
	// client never takes a cut answer for a complete one.
	bw := bufio.NewWriterSize(w, 32<<10)
	started := false
	next, err := s.dlog.QueryEach(query, func(line []byte) error {
		if !started {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			bw.WriteString(`{"records":[`)
			started = true
		} else {
			bw.WriteByte(',')
		}
		_, werr := bw.Write(line)
		return werr
	})
	if err != nil {
		if !started {
			s.internalError(w, "decisions_query", "decision query failed", err)
			return
		}
		s.log.Error("decision query failed while streaming", "err", err)
		panic(http.ErrAbortHandler)
	}
	if !started {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		bw.WriteString(`{"records":[`)
	}
	bw.WriteString(`]`)
	if next != 0 {
		fmt.Fprintf(bw, `,"next":%d`, next)
	}
	bw.WriteString("}\n")
	if err := bw.Flush(); err != nil {
		s.log.Debug("decision query answer not delivered", "err", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// allowBytes takes n bytes from the identity's ingest byte bucket,
// answering 429 when they are not there.
func (s *Server) allowBytes(w http.ResponseWriter, r *http.Request, route string, id auth.Identity, n int) bool {
	ok, wait := s.byteLimiter.Allow(id.Key(), n)
	if !ok {
		s.m.rejected.WithLabelValues(route, "rate_limited").Inc()
		w.Header().Set("Retry-After", retryAfter(wait))
		s.refuse(w, r, route, http.StatusTooManyRequests, fmt.Sprintf("ingest byte rate limit for %s exceeded; retry in %s", id, wait.Round(time.Millisecond)))
	}
	return ok
}

func (s *Server) exportDecisions(w http.ResponseWriter, r *http.Request) {
	head := s.dlog.Head()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(HeaderHeadSeq, strconv.FormatUint(head.Seq, 10))
	w.Header().Set(HeaderHeadHash, head.Hash)
	if a := s.dlog.Anchor(); a.Seq > 0 {
		b, _ := json.Marshal(a)
		w.Header().Set(HeaderAnchor, string(b))
	}
	if err := s.dlog.WriteLog(w, head); err != nil {
		s.log.Warn("decision log export interrupted", "err", err)
	}
}

// getCheckpoint answers the latest signed checkpoint as the note text.
func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) {
	writeCheckpoint(w, s.dlog.Latest())
}

// signCheckpoint signs a checkpoint of the log as it is now (no body).
func (s *Server) signCheckpoint(w http.ResponseWriter, r *http.Request) {
	if n, _ := io.Copy(io.Discard, r.Body); n > 0 {
		writeError(w, http.StatusBadRequest, "a checkpoint request has no body")
		return
	}
	c, err := s.dlog.Checkpoint()
	if err != nil {
		s.internalError(w, "decisions_checkpoint_sign", "checkpoint signing failed", err)
		return
	}
	s.log.Info("decision log checkpoint signed on request", "size", c.Size, "by", identityOf(r).String())
	writeCheckpoint(w, c)
}

func writeCheckpoint(w http.ResponseWriter, c decisionlog.Checkpoint) {
	if c.Signed == nil {
		writeError(w, http.StatusServiceUnavailable, "no checkpoint signed yet")
		return
	}
	noStore(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(c.Signed)
}

// proveInclusion answers the inclusion proof of record {seq} in the tree
// of size records (default: the latest checkpoint's).
func (s *Server) proveInclusion(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("seq %q: want a record sequence number", r.PathValue("seq")))
		return
	}
	size, err := sizeParam(q, "size", s.dlog.Latest().Size)
	if err == nil {
		err = onlyParams(q, "size")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	line, err := s.recordLine(r.Context(), seq)
	if err == nil {
		var p decisionlog.InclusionProof
		if p, err = s.dlog.ProveInclusion(seq, size, line); err == nil {
			noStore(w)
			writeJSON(w, http.StatusOK, p)
			return
		}
	}
	if errors.Is(err, decisionlog.ErrNoRecord) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.internalError(w, "decisions_proof", "inclusion proof failed", err)
}

// proveConsistency answers the consistency proof of the tree of from
// records with the tree of size records (default: the latest checkpoint's).
func (s *Server) proveConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	err := onlyParams(q, "from", "size")
	var from, size uint64
	if err == nil {
		from, err = sizeParam(q, "from", 0)
	}
	if err == nil && !q.Has("from") {
		err = errors.New("from: want the tree size of the earlier checkpoint")
	}
	if err == nil {
		size, err = sizeParam(q, "size", s.dlog.Latest().Size)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := s.dlog.ProveConsistency(from, size)
	if errors.Is(err, decisionlog.ErrNoRecord) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		s.internalError(w, "decisions_consistency", "consistency proof failed", err)
		return
	}
	noStore(w)
	writeJSON(w, http.StatusOK, p)
}

// sizeParam reads an optional tree size (def when absent).
func sizeParam(q url.Values, name string, def uint64) (uint64, error) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("parameter %q given %d times", name, len(vs))
	}
	n, err := strconv.ParseUint(vs[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a tree size", name, vs[0])
	}
	return n, nil
}

// onlyParams refuses parameters other than names.
func onlyParams(q url.Values, names ...string) error {
	for k := range q {
		if !slices.Contains(names, k) {
			return fmt.Errorf("unknown parameter %q (want %v)", k, names)
		}
	}
	return nil
}

// checkProxies refuses an upload with a record whose proxy field its
// authenticated uploader may not claim (decisions.proxy_bindings).
func (s *Server) checkProxies(id auth.Identity, recs []decisionlog.Record) error {
	m := s.bindings.Matcher(id)
	for i, r := range recs {
		p, _ := r.StringField(contract.FieldProxy)
		if m == nil || p == "" || !m(p) {
			if err := s.bindings.Check(id, p); err != nil {
				return fmt.Errorf("record %d: %w; nothing of this upload was stored", i, err)
			}
		}
	}
	return nil
}
