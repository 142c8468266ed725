package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// Response headers of the bundle API.
const (
	HeaderRevision = "X-Meshguard-Revision"
	HeaderHeadSeq  = "X-Meshguard-Head-Seq"
	HeaderHeadHash = "X-Meshguard-Head-Hash"
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

// handle registers h behind identification, authorisation, the body size
// limit and metrics. action picks the allowlist from the request (nil: open).
func (s *Server) handle(pattern, route string, action func(*http.Request) auth.Action, maxBody int64, h http.HandlerFunc) {
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
				if route == "oci" || route == "ui" || strings.HasPrefix(route, "ui_") {
					// Registry clients and browsers answer a Basic challenge
					// (a browser asks its user; the password is the token).
					sw.Header().Set("WWW-Authenticate", `Basic realm="meshguard"`)
				} else {
					sw.Header().Set("WWW-Authenticate", `Bearer realm="meshguard"`)
				}
				writeError(sw, http.StatusUnauthorized, err.Error())
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
			a := action(r)
			if !s.policy.Allowed(a, id) {
				if route == "oci" && id.Token == "" && id.SPIFFEID == "" {
					// Registry clients send credentials (a pull secret) only
					// after a Basic challenge.
					s.m.rejected.WithLabelValues(route, "unauthenticated").Inc()
					sw.Header().Set("WWW-Authenticate", `Basic realm="meshguard"`)
					writeError(sw, http.StatusUnauthorized, "credentials required")
					return
				}
				s.m.rejected.WithLabelValues(route, "forbidden").Inc()
				writeError(sw, http.StatusForbidden, fmt.Sprintf("%s may not %s", id, a))
				return
			}
		}
		if maxBody > 0 {
			if r.ContentLength > maxBody {
				s.m.rejected.WithLabelValues(route, "too_large").Inc()
				writeError(sw, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the limit of %d", r.ContentLength, maxBody))
				return
			}
			r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		}
		h(sw, r)
	})
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
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

func fixed(a auth.Action) func(*http.Request) auth.Action {
	return func(*http.Request) auth.Action { return a }
}

// byMethod: reads need read, writes need write.
func byMethod(write auth.Action) func(*http.Request) auth.Action {
	return func(r *http.Request) auth.Action {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return auth.ActionRead
		}
		return write
	}
}

func (s *Server) routes(opts Options) error {
	lim := s.cfg.Limits
	s.handle("GET /healthz", "healthz", nil, 0, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.handle("GET /readyz", "readyz", nil, 0, s.readyz)
	s.handle("GET /metrics", "metrics", fixed(auth.ActionMetrics), 0, s.metricsHandler().ServeHTTP)

	s.handle("GET /v1/bundles", "bundles", fixed(auth.ActionRead), 0, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.reg.Channels())
	})
	s.handle("POST /v1/bundles/{channel}", "bundle_publish", fixed(auth.ActionPublish), int64(lim.BundleBytes), s.publishBundle)
	s.handle("GET /v1/bundles/{channel}", "bundle_get", fixed(auth.ActionRead), 0, s.getBundle)
	s.handle("GET /v1/bundles/{channel}/revisions", "bundle_revisions", fixed(auth.ActionRead), 0, s.listRevisions)
	s.handle("GET /v1/bundles/{channel}/revisions/{rev}", "bundle_revision", fixed(auth.ActionRead), 0, s.getRevision)

	s.handle("POST /v1/decisions", "decisions_ingest", fixed(auth.ActionIngest), int64(lim.DecisionsBytes), s.ingest)
	s.handle("GET /v1/decisions", "decisions_query", fixed(auth.ActionAudit), 0, s.queryDecisions)
	s.handle("GET /v1/decisions/head", "decisions_head", fixed(auth.ActionAudit), 0, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.dlog.Head())
	})
	s.handle("GET /v1/decisions/log", "decisions_log", fixed(auth.ActionAudit), 0, s.exportDecisions)
	s.consoleRoutes()

	// Module and OCI storage (distributor/modules, distributor/oci).
	oci, modules := opts.OCI, opts.Modules
	if oci == nil || modules == nil {
		o, m, err := s.storageHandlers()
		if err != nil {
			return err
		}
		if oci == nil {
			oci = o
		}
		if modules == nil {
			modules = m
		}
	}
	if oci != nil {
		s.handle("/v2/", "oci", byMethod(auth.ActionPush), int64(lim.ModuleBytes), oci.ServeHTTP)
	}
	if modules != nil {
		s.handle("/modules/", "modules", byMethod(auth.ActionPush), int64(lim.ModuleBytes), modules.ServeHTTP)
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ready := true
	check := func(name string, err error) {
		if err != nil {
			checks[name] = err.Error()
			ready = false
		} else {
			checks[name] = "ok"
		}
	}
	check("bundle_storage", s.reg.Writable())
	check("decision_log", s.dlog.Writable())
	check("bundle_keys", s.keysErr)
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
	if warn := s.expiryWarnings(time.Now()); len(warn) > 0 {
		ws := map[string]string{}
		for ch, w := range warn {
			ws["bundle_expiry/"+ch] = w.text
		}
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
		w.Header().Set("Location", fmt.Sprintf("/v1/bundles/%s/revisions/%d", name, ri.Revision))
		writeJSON(w, http.StatusCreated, PublishResult{Channel: name, Revision: ri.Revision, Digest: ri.Digest, Expires: ri.Expires})
	case errors.Is(err, errNoKeys):
		writeError(w, http.StatusServiceUnavailable, err.Error())
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
		s.log.Error("bundle publish failed", "channel", name, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
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
		writeError(w, http.StatusInternalServerError, err.Error())
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
	Accepted int    `json:"accepted"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	const route = "decisions_ingest"
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	ndjson := ct == "application/x-ndjson" || ct == "application/jsonl"
	body, ok := s.readBody(w, r, route)
	if !ok {
		return
	}
	recs, err := decisionlog.Decode(body, ndjson)
	if err != nil {
		s.m.rejected.WithLabelValues(route, "invalid").Inc()
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	id := identityOf(r)
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
	decisionlog.Stamp(recs, id.String(), time.Now())
	first, last, err := s.dlog.Append(recs)
	if err != nil {
		s.log.Error("decision log append failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.m.ingested.Add(float64(len(recs)))
	s.m.decisionSeq.Set(float64(last))
	writeJSON(w, http.StatusOK, IngestResult{Accepted: len(recs), FirstSeq: first, LastSeq: last})
}

func (s *Server) queryDecisions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var query decisionlog.Query
	var err error
	parseTime := func(name string) time.Time {
		v := q.Get(name)
		if v == "" || err != nil {
			return time.Time{}
		}
		t, perr := time.Parse(time.RFC3339Nano, v)
		if perr != nil {
			err = fmt.Errorf("%s=%q: want RFC 3339", name, v)
		}
		return t
	}
	query.Since, query.Until = parseTime("since"), parseTime("until")
	query.Subject, query.Decision = q.Get("subject"), q.Get("decision")
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
	res, err := s.dlog.Query(query)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) exportDecisions(w http.ResponseWriter, r *http.Request) {
	head := s.dlog.Head()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(HeaderHeadSeq, strconv.FormatUint(head.Seq, 10))
	w.Header().Set(HeaderHeadHash, head.Hash)
	if err := s.dlog.WriteLog(w, head); err != nil {
		s.log.Warn("decision log export interrupted", "err", err)
	}
}
