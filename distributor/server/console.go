package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/console"
	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/pollers"
	"github.com/meshguard/meshguard/distributor/state"
)

// Status is the distributor's state for operators (GET /v1/status, the
// console and `meshguard status`).
type Status struct {
	Time        time.Time       `json:"time"`
	Channels    []ChannelStatus `json:"channels"`
	DecisionLog LogStatus       `json:"decision_log"`
	// Pollers are the size of the poller table and how many entries it
	// dropped (bounded; the least recently seen go first).
	Pollers PollerTable `json:"pollers"`
}

// ChannelStatus is one bundle channel.
type ChannelStatus struct {
	Name string `json:"name"`
	// Latest is the revision served (nil before the first publish).
	Latest *bundles.RevisionInfo `json:"latest,omitempty"`
	// Revisions are the retained revisions, newest first.
	Revisions []bundles.RevisionInfo `json:"revisions"`
	// Expiry warns when the latest revision has expired or expires soon.
	Expiry *ExpiryStatus `json:"expiry,omitempty"`
	// Pollers are the proxies that polled the channel, most recent first.
	Pollers []pollers.Entry `json:"pollers"`
}

// ExpiryStatus is a channel's expiry warning.
type ExpiryStatus struct {
	Expired bool   `json:"expired"`
	Warning string `json:"warning"`
}

// PollerTable describes the bounded poller table.
type PollerTable struct {
	Tracked int    `json:"tracked"`
	Evicted uint64 `json:"evicted"`
}

// LogStatus is the decision log's size, head and integrity.
type LogStatus struct {
	Records  uint64           `json:"records"`
	Head     decisionlog.Head `json:"head"`
	Segments int              `json:"segments"`
	Bytes    int64            `json:"bytes"`
	// Indexed is how many records the console's index covers.
	Indexed   uint64                `json:"indexed"`
	Integrity decisionlog.Integrity `json:"integrity"`
	// Checkpoint is the latest checkpoint a verifier can hold the log to.
	Checkpoint Checkpoint `json:"checkpoint"`
}

// Checkpoint is the latest signed checkpoint the log commits to: a C2SP
// tlog-checkpoint of Seq records with Merkle tree root Hash, signed by the
// log's own key (Key is its verifier key; Note the signed text).
type Checkpoint struct {
	Kind   string `json:"kind"`
	Seq    uint64 `json:"seq"`
	Hash   string `json:"hash"`
	Signed bool   `json:"signed"`
	Origin string `json:"origin,omitempty"`
	Key    string `json:"key,omitempty"`
	Note   string `json:"note,omitempty"`
}

// RecordAnswer is one decision record with the integrity checks that
// apply to it (GET /v1/decisions/records/{seq}).
type RecordAnswer struct {
	decisionlog.StoredRecord
	// Checks are the integrity checks for the record: its inclusion proof
	// against the latest signed checkpoint, and the tree verification.
	Checks []RecordCheck `json:"checks"`
}

// RecordCheck is one integrity check's result for a record.
type RecordCheck struct {
	Name string `json:"name"`
	// Status is "verified", "pending" (not checked yet) or "failed".
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// consoleRoutes registers the status and query API (under /v1/ and, for
// the console, under /ui/api/ where a browser's credentials for /ui/
// apply) and the console itself.
func (s *Server) consoleRoutes() {
	audit := fixed(auth.ActionAudit)
	for _, prefix := range []string{"/v1", "/ui/api"} {
		wrap := func(h http.HandlerFunc) http.HandlerFunc { return h }
		route := func(r string) string { return r }
		if prefix == "/ui/api" {
			wrap = func(h http.HandlerFunc) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					console.SecurityHeaders(w.Header())
					h(w, r)
				}
			}
			// "ui_" routes answer with a Basic challenge, like the pages.
			route = func(r string) string { return "ui_" + r }
		}
		s.handle("GET "+prefix+"/status", route("status"), audit, 0, wrap(s.getStatus))
		s.handle("GET "+prefix+"/decisions/search", route("decisions_search"), audit, 0, wrap(s.searchDecisions))
		s.handle("GET "+prefix+"/decisions/records/{seq}", route("decisions_record"), audit, 0, wrap(s.getRecord))
		s.handle("GET "+prefix+"/decisions/stats", route("decisions_stats"), audit, 0, wrap(s.decisionStats))
		s.handle("GET "+prefix+"/decisions/values/{column}", route("decisions_values"), audit, 0, wrap(s.decisionValues))
		if prefix == "/ui/api" {
			s.consoleRegistryRoutes(func(pattern, route string, h http.HandlerFunc) { s.handle(pattern, route, audit, 0, wrap(h)) })
		}
	}
	ui := console.Handler()
	s.handle("GET /ui/", "ui", audit, 0, ui.ServeHTTP)
	s.handle("GET /ui", "ui", audit, 0, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
}

// pollerName is the poller's authenticated identity; an anonymous caller
// is named by its address without the port, which changes per connection.
func pollerName(id auth.Identity) string {
	if id.Token != "" || id.SPIFFEID != "" {
		return id.String()
	}
	host, _, err := net.SplitHostPort(id.Remote)
	if err != nil {
		host = id.Remote
	}
	return "anonymous@" + host
}

// recordPoll notes an answered bundle poll in the poller table.
func (s *Server) recordPoll(r *http.Request, channel string, served uint64, status int) {
	p := pollers.Poll{Channel: channel, Identity: pollerName(identityOf(r)), Served: served, Status: status, Time: time.Now().UTC()}
	p.Proxy, _ = pollers.ProxyID(r.Header.Get(pollers.HeaderProxy))
	p.Enforcing, _ = pollers.Enforcing(r.Header.Get(pollers.HeaderEnforcing))
	s.pollers.Record(p)
}

// StatusNow gathers the distributor's status.
func (s *Server) StatusNow() (Status, error) {
	now := time.Now().UTC()
	st := Status{Time: now, Channels: []ChannelStatus{}}
	warn := s.expiryWarnings(now)
	latest := s.reg.LatestInfos()
	names := make([]string, 0, len(latest))
	for n := range latest {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cs := ChannelStatus{Name: n, Pollers: s.pollers.List(n)}
		if ri := latest[n]; ri.Revision > 0 {
			cs.Latest = &ri
		}
		revs, err := s.reg.Revisions(n)
		if err != nil {
			return Status{}, err
		}
		slices.Reverse(revs)
		cs.Revisions = revs
		if w, ok := warn[n]; ok {
			cs.Expiry = &ExpiryStatus{Expired: w.expired, Warning: w.text}
		}
		st.Channels = append(st.Channels, cs)
	}
	st.Pollers.Tracked, st.Pollers.Evicted = s.pollers.Stats()
	head := s.dlog.Head()
	segs, size, err := s.dlog.Size()
	if err != nil {
		return Status{}, err
	}
	in := s.search.Integrity()
	cp := s.dlog.Latest()
	st.DecisionLog = LogStatus{Records: head.Seq, Head: head, Segments: segs, Bytes: size, Integrity: in,
		Checkpoint: Checkpoint{Kind: "signed checkpoint (C2SP tlog-checkpoint)", Seq: cp.Size, Hash: cp.Root.String(),
			Signed: cp.Signed != nil, Origin: cp.Origin, Key: s.dlog.Key().Public, Note: string(cp.Signed)}}
	if ix, ok := s.search.(interface{ Indexed() uint64 }); ok {
		st.DecisionLog.Indexed = ix.Indexed()
	}
	return st, nil
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.StatusNow()
	s.answer(w, r, st, err)
}

// noStore keeps audit answers out of caches.
func noStore(w http.ResponseWriter) { w.Header().Set("Cache-Control", "no-store") }

// queryParams are the parameters each query endpoint takes besides the filter.
var (
	filterParams = []string{"decision", "rule", "subject", "device", "path", "proxy", "uploader", "revision", "since", "until"}
	searchParams = append([]string{"before", "limit"}, filterParams...)
	statsParams  = append([]string{"buckets", "top"}, filterParams...)
	queryParams  = append([]string{"after", "limit"}, filterParams...)
)

// parseQuery reads a query string strictly: only the allowed parameters,
// each at most once, so a misspelt filter is an error instead of
// silently matching everything.
func parseQuery(q url.Values, allowed []string) (decisionlog.Filter, error) {
	var f decisionlog.Filter
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return f, fmt.Errorf("unknown parameter %q (want %v)", k, allowed)
		}
		if len(vs) != 1 {
			return f, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	f.Decision, f.Rule, f.Subject, f.Device = q.Get("decision"), q.Get("rule"), q.Get("subject"), q.Get("device")
	f.Path, f.Proxy, f.Uploader = q.Get("path"), q.Get("proxy"), q.Get("uploader")
	if v := q.Get("revision"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return f, fmt.Errorf("revision=%q: want a bundle revision number", v)
		}
		f.Revision = &n
	}
	for name, t := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			p, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fmt.Errorf("%s=%q: want an RFC 3339 time", name, v)
			}
			*t = p
		}
	}
	return f, f.Validate()
}

// intParam reads an optional positive integer parameter.
func intParam(q url.Values, name string, limit uint64) (uint64, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 || n > limit {
		return 0, fmt.Errorf("%s=%q: want a number from 1 to %d", name, v, limit)
	}
	return n, nil
}

func (s *Server) searchDecisions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseQuery(q, searchParams)
	var before, limit uint64
	if err == nil {
		before, err = intParam(q, "before", 1<<63)
	}
	if err == nil {
		limit, err = intParam(q, "limit", decisionlog.MaxPageSize)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := s.search.Search(r.Context(), f, decisionlog.PageRequest{Before: before, Limit: int(limit)})
	s.answer(w, r, page, err)
}

func (s *Server) decisionStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseQuery(q, statsParams)
	var buckets, top uint64
	if err == nil {
		buckets, err = intParam(q, "buckets", decisionlog.MaxBuckets)
	}
	if err == nil {
		top, err = intParam(q, "top", decisionlog.MaxTopRules)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := s.search.Stats(r.Context(), f, decisionlog.StatsRequest{Buckets: int(buckets), TopRules: int(top)})
	s.answer(w, r, st, err)
}

func (s *Server) decisionValues(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var err error
	for k := range q {
		if k != "limit" {
			err = fmt.Errorf("unknown parameter %q (want limit)", k)
		}
	}
	var limit uint64
	if err == nil {
		limit, err = intParam(q, "limit", 1000)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	vs, err := s.search.Values(r.Context(), r.PathValue("column"), int(limit))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.answer(w, r, vs, nil)
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("seq %q: want a record sequence number", r.PathValue("seq")))
		return
	}
	rec, err := s.search.Record(r.Context(), seq)
	if err != nil {
		if errors.Is(err, decisionlog.ErrNoRecord) {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		s.queryError(w, r, err)
		return
	}
	in := s.search.Integrity()
	checks := []RecordCheck{s.inclusionCheck(r, seq)}
	c := RecordCheck{Name: "tree hashes recomputed from the records (" + in.Method + ")"}
	switch {
	case rec.Verified:
		c.Status, c.Detail = "verified", fmt.Sprintf("records 1..%d are canonical and give the stored tree (root %s at %d records), which includes this record", in.Verified, in.Head.Hash, in.Head.Seq)
	case in.Problem != "" && seq >= in.BadSeq:
		c.Status, c.Detail = "failed", fmt.Sprintf("the tree check fails at seq %d, at or before this record: %s", in.BadSeq, in.Problem)
	default:
		c.Status, c.Detail = "pending", fmt.Sprintf("verified through seq %d so far; this record is not checked yet", in.Verified)
	}
	checks = append(checks, c)
	noStore(w)
	writeJSON(w, http.StatusOK, RecordAnswer{StoredRecord: rec, Checks: checks})
}

// answer writes a query's result (kept out of caches), or its failure:
// the client's cancellation quietly, anything else as a server error.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.queryError(w, r, err)
		return
	}
	noStore(w)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) queryError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	if errors.Is(err, state.ErrUnavailable) {
		s.log.Warn("decision query: state database unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "state database unavailable; retry")
		return
	}
	s.log.Error("decision query failed", "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

// inclusionCheck proves record seq in the latest signed checkpoint's tree
// and checks the proof as an auditor would (tlog.CheckRecord, the leaf
// hash recomputed from the stored line).
func (s *Server) inclusionCheck(r *http.Request, seq uint64) RecordCheck {
	c := RecordCheck{Name: "inclusion proof against the latest signed checkpoint"}
	cp := s.dlog.Latest()
	if cp.Signed == nil || seq > cp.Size {
		c.Status, c.Detail = "pending", fmt.Sprintf("not yet in a signed checkpoint (the latest covers records 1..%d); one is signed every %s while the log grows",
			cp.Size, s.cfg.Decisions.CheckpointInterval)
		return c
	}
	line, err := s.recordLine(r.Context(), seq)
	var p decisionlog.InclusionProof
	if err == nil {
		p, err = s.dlog.ProveInclusion(seq, cp.Size, line)
	}
	if err == nil {
		err = p.Check(cp)
	}
	if err != nil {
		c.Status, c.Detail = "failed", err.Error()
		return c
	}
	c.Status, c.Detail = "verified", fmt.Sprintf("leaf %s of the checkpoint of %d records (root %s) signed by %s: an audit path of %d hashes, checked with tlog.CheckRecord",
		p.LeafHash, cp.Size, cp.Root, cp.Origin, len(p.Proof))
	return c
}
