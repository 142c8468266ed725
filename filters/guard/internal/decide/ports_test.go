// The core runs natively in its tests; the fixture packs bundles with the
// policy front end, which is not built for wasip1.
//go:build !wasip1

package decide

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// The ports of a native proxy: one shared store and clock, and per worker
// VM the telemetry, log and records a test reads back. They are real
// implementations kept in memory, not expectations.

// proxy is one proxy's shared data and clock.
type proxy struct {
	store *shared.Memory
	now   time.Time
	seeds uint64
}

// nextSeed is a worker's seed, unique in the proxy.
func (p *proxy) nextSeed() uint64 { p.seeds++; return p.seeds }

func newProxy() *proxy { return &proxy{store: shared.NewMemory(), now: epoch} }

// epoch is when the tests run.
var epoch = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func (p *proxy) clock() time.Time { return p.now }

// worker is one VM's guard and what it reported.
type worker struct {
	*Guard
	tel  *telemetry
	log  *logs
	recs *records
}

func (p *proxy) worker(t testing.TB, cfg []byte) *worker {
	t.Helper()
	w := &worker{tel: newTelemetry(), log: &logs{}, recs: &records{}}
	w.Guard = New(cfg, Ports{Shared: p.store, Telemetry: w.tel, Log: w.log, Audit: w.recs, Clock: p.clock},
		Options{Proxy: "sidecar~10.0.0.7~meter-api", Seed: p.nextSeed()})
	return w
}

// telemetry counts what Telemetry reports; it allocates nothing once a
// rule was seen.
type telemetry struct {
	decided                              map[string]int
	rules                                map[string]int
	failed                               map[string]int
	limited                              int
	callerLimited, callerDry             int
	loaded                               []uint64
	expires                              time.Time
	rejected                             int
	sunsets                              []time.Time
	hits, misses, signatures, sharedHits uint64
}

func newTelemetry() *telemetry {
	return &telemetry{decided: map[string]int{}, rules: map[string]int{}, failed: map[string]int{}}
}

func (m *telemetry) Decided(result string, rules []string) {
	m.decided[result]++
	for _, r := range rules {
		m.rules[r]++
	}
}
func (m *telemetry) Failed(decision string) { m.failed[decision]++ }
func (m *telemetry) RateLimited()           { m.limited++ }
func (m *telemetry) CallerLimited(dryRun bool) {
	if dryRun {
		m.callerDry++
	} else {
		m.callerLimited++
	}
}
func (m *telemetry) BundleLoaded(rev uint64, expires time.Time) {
	m.loaded = append(m.loaded, rev)
	m.expires = expires
}
func (m *telemetry) BundleRejected() { m.rejected++ }

func (m *telemetry) NextSunset(at time.Time) { m.sunsets = append(m.sunsets, at) }
func (m *telemetry) Tokens(hits, misses, signatures, sharedHits uint64) {
	m.hits += hits
	m.misses += misses
	m.signatures += signatures
	m.sharedHits += sharedHits
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Log(level Level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Repeat("!", int(level))+msg)
}

// has reports whether a line contains s.
func (l *logs) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

// records keeps copies of the records (the recorder contract: the record
// is valid during the call only).
type records struct{ list []audit.Record }

func (r *records) Record(rec *audit.Record) {
	c := *rec
	c.RuleIDs = slices.Clone(rec.RuleIDs)
	for _, s := range []*string{&c.DecisionID, &c.Reason, &c.Subject, &c.DeviceID, &c.DeviceClass, &c.Version,
		&c.Method, &c.Path, &c.Authority, &c.Proxy, &c.Source, &c.Peer, &c.TokenSubject, &c.Forwarder, &c.JTI, &c.TargetDevice, &c.User, &c.UserIssuer} {
		*s = strings.Clone(*s)
	}
	r.list = append(r.list, c)
}

func (r *records) last(t testing.TB) audit.Record {
	t.Helper()
	require.NotEmpty(t, r.list, "no record")
	return r.list[len(r.list)-1]
}

// request is a Request: headers, peer properties and what was removed.
// Headers hands out a fresh copy each time (into a reused buffer, so a
// decision stays allocation-free), as the host does.
type request struct {
	hdrs    Headers
	buf     Headers
	peer    string
	local   string
	version string
	source  string
	removed []string
	// replaced are the headers set by ReplaceHeader, in order.
	replaced [][2]string
	// panics makes PeerURISAN panic (an internal error mid-decision).
	panics bool
	// meta is dynamic metadata by "filter/key/claim".
	meta map[string]string
}

func (r *request) Metadata(filter, key, claim string) (string, bool) {
	v, ok := r.meta[filter+"/"+key+"/"+claim]
	return v, ok
}

func get(path string, hdrs ...[2]string) *request { return req("GET", path, hdrs...) }

func req(method, path string, hdrs ...[2]string) *request {
	h := Headers{{":method", method}, {":path", path}, {":authority", "meter-api"}, {":scheme", "https"}}
	return &request{hdrs: append(h, hdrs...), source: "10.0.0.9:41234"}
}

func (r *request) from(peer string) *request { r.peer = peer; return r }

func (r *request) Headers() Headers {
	r.buf = append(r.buf[:0], r.hdrs...)
	return r.buf
}
func (r *request) RemoveHeader(name string) { r.removed = append(r.removed, name) }
func (r *request) ReplaceHeader(name, v string) {
	r.replaced = append(r.replaced, [2]string{name, v})
}
func (r *request) LocalURISAN() string { return r.local }
func (r *request) PeerURISAN() string {
	if r.panics {
		panic("host went away")
	}
	return r.peer
}
func (r *request) PeerVersion() string { return r.version }
func (r *request) Source() string      { return r.source }
