package decide

import (
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// Request is what the core reads of one request and may change before it
// goes upstream. The filter's adapter implements it over the host's
// hostcalls; everything it returns is valid during Decide only.
type Request interface {
	// Headers returns the request headers in order, names lower-case (as
	// Envoy hands them over). Decide calls it at most once.
	Headers() Headers
	// RemoveHeader removes every value of name from the request.
	RemoveHeader(name string)
	// ReplaceHeader sets name to the one value v (the normalised :path).
	ReplaceHeader(name, v string)
	// PeerURISAN returns the first URI SAN of the peer certificate
	// (connection.uri_san_peer_certificate), "" without one.
	PeerURISAN() string
	// LocalURISAN returns the first URI SAN of the proxy's own certificate
	// on the downstream connection (connection.uri_san_local_certificate),
	// "" without one.
	LocalURISAN() string
	// PeerVersion returns the Istio peer metadata version label
	// (filter_state.downstream_peer.version), "" without one.
	PeerVersion() string
	// Source returns the downstream address (source.address).
	Source() string
}

// Level is a log level.
type Level uint8

// Log levels.
const (
	LevelInfo Level = iota
	LevelWarn
	LevelError
	LevelCritical
)

// Logger writes the guard's log lines (the proxy log).
type Logger interface {
	Log(level Level, msg string)
}

// Telemetry counts what the guard does (Proxy-Wasm metrics in the filter).
type Telemetry interface {
	// Decided counts an enforced decision: result is allow, deny or
	// dry-run-deny; rules are the deciding rules (a view, do not keep).
	Decided(result string, rules []string)
	// Failed counts a request answered without a decision: decision is
	// unavailable (no usable policy) or error.
	Failed(decision string)
	// RateLimited counts a write refused by its device's rate limit.
	RateLimited()
	// CallerLimited counts a request over a caller rate limit: refused
	// (429), or with dryRun recorded and let through.
	CallerLimited(dryRun bool)
	// BundleLoaded reports the bundle now enforced.
	BundleLoaded(revision uint64, expires time.Time)
	// NextSunset reports the nearest version sunset ahead in the enforced
	// policy (zero: none), when a bundle is installed and whenever the one
	// reported has passed.
	NextSunset(at time.Time)
	// BundleRejected counts a bundle that was refused.
	BundleRejected()
	// Tokens adds token verification work: local cache hits and misses,
	// signature checks and shared-cache hits since the last call.
	Tokens(hits, misses, signatures, sharedHits uint64)
}

// Recorder takes decision records (the proxy log and the upload buffer in
// the filter). The record and its strings are valid during the call only:
// encode or copy what is kept. A recorder that aggregates records (the
// unavailable and error refusals) sets r.DecisionID to the id of the
// aggregated record, which the reply then names.
type Recorder interface {
	Record(r *audit.Record)
}

// Ports are the host services the core uses besides the request.
type Ports struct {
	// Shared is the plugin's shared data (all worker VMs of the proxy).
	Shared    shared.Store
	Telemetry Telemetry
	Log       Logger
	Audit     Recorder
	// Clock returns the current time.
	Clock func() time.Time
}
