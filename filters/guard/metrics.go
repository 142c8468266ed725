package main

import (
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/internal/contract"
)

// metrics are the guard's Proxy-Wasm metrics; they implement the core's
// decide.Telemetry, and the audit sink counts its uploads here too.
type metrics struct {
	allow, deny, dryRunDeny, errors, unavailable, rateLimited proxywasm.MetricCounter
	callerLimited, callerDryRun                               proxywasm.MetricCounter
	verifyFailures, bundleLoads, cacheHits, cacheMisses       proxywasm.MetricCounter
	signatures, sharedHits                                    proxywasm.MetricCounter
	auditDropped, auditSent, auditFailed, auditRetries        proxywasm.MetricCounter
	auditGaps                                                 proxywasm.MetricCounter
	revision, expiry, sunset                                  proxywasm.MetricGauge
	auditBufferedRecords, auditBufferedBytes                  proxywasm.MetricGauge
	rules                                                     map[ruleResult]proxywasm.MetricCounter
}

// ruleResult keys the per-rule counters (a struct, not a concatenated
// string, so the per-request lookup does not allocate).
type ruleResult struct{ rule, result string }

// maxRuleCounters bounds the per-rule metrics' cardinality.
const maxRuleCounters = 4096

func (m *metrics) define() {
	*m = metrics{
		allow:                proxywasm.DefineCounterMetric("meshguard_decisions_total.result=" + contract.DecisionAllow),
		deny:                 proxywasm.DefineCounterMetric("meshguard_decisions_total.result=" + contract.DecisionDeny),
		dryRunDeny:           proxywasm.DefineCounterMetric("meshguard_decisions_total.result=" + contract.DecisionDryRunDeny),
		errors:               proxywasm.DefineCounterMetric("meshguard_decisions_total.result=" + contract.DecisionError),
		unavailable:          proxywasm.DefineCounterMetric("meshguard_decisions_total.result=" + contract.DecisionUnavailable),
		rateLimited:          proxywasm.DefineCounterMetric("meshguard_rate_limited_total"),
		callerLimited:        proxywasm.DefineCounterMetric("meshguard_caller_rate_limited_total.mode=enforced"),
		callerDryRun:         proxywasm.DefineCounterMetric("meshguard_caller_rate_limited_total.mode=dry_run"),
		verifyFailures:       proxywasm.DefineCounterMetric("meshguard_bundle_verification_failures_total"),
		bundleLoads:          proxywasm.DefineCounterMetric("meshguard_bundle_loads_total"),
		cacheHits:            proxywasm.DefineCounterMetric("meshguard_token_cache_hits_total"),
		cacheMisses:          proxywasm.DefineCounterMetric("meshguard_token_cache_misses_total"),
		signatures:           proxywasm.DefineCounterMetric("meshguard_token_signature_verifications_total"),
		sharedHits:           proxywasm.DefineCounterMetric("meshguard_token_shared_cache_hits_total"),
		auditDropped:         proxywasm.DefineCounterMetric("meshguard_audit_dropped_total"),
		auditSent:            proxywasm.DefineCounterMetric("meshguard_audit_sent_total"),
		auditFailed:          proxywasm.DefineCounterMetric("meshguard_audit_upload_failures_total"),
		auditRetries:         proxywasm.DefineCounterMetric("meshguard_audit_upload_retries_total"),
		auditGaps:            proxywasm.DefineCounterMetric("meshguard_audit_gaps_sent_total"),
		auditBufferedRecords: proxywasm.DefineGaugeMetric("meshguard_audit_buffered_records"),
		auditBufferedBytes:   proxywasm.DefineGaugeMetric("meshguard_audit_buffered_bytes"),
		revision:             proxywasm.DefineGaugeMetric("meshguard_bundle_revision"),
		expiry:               proxywasm.DefineGaugeMetric("meshguard_bundle_expiry_timestamp_seconds"),
		sunset:               proxywasm.DefineGaugeMetric("meshguard_version_sunset_next_timestamp_seconds"),
		rules:                map[ruleResult]proxywasm.MetricCounter{},
	}
}

// Decided implements decide.Telemetry.
func (m *metrics) Decided(result string, rules []string) {
	switch result {
	case contract.DecisionAllow:
		m.allow.Increment(1)
	case contract.DecisionDeny:
		m.deny.Increment(1)
	default:
		m.dryRunDeny.Increment(1)
	}
	for _, r := range rules {
		if c := m.rule(r, result); c != 0 {
			c.Increment(1)
		}
	}
}

// rule counts decisions per rule and result (created on first use).
func (m *metrics) rule(rule, result string) proxywasm.MetricCounter {
	k := ruleResult{rule, result}
	c, ok := m.rules[k]
	if !ok {
		if len(m.rules) >= maxRuleCounters {
			return 0
		}
		c = proxywasm.DefineCounterMetric("meshguard_rule_decisions_total.rule=" + rule + ".result=" + result)
		m.rules[k] = c
	}
	return c
}

// Failed implements decide.Telemetry.
func (m *metrics) Failed(decision string) {
	if decision == contract.DecisionUnavailable {
		m.unavailable.Increment(1)
	} else {
		m.errors.Increment(1)
	}
}

// RateLimited implements decide.Telemetry.
func (m *metrics) RateLimited() { m.rateLimited.Increment(1) }

// CallerLimited implements decide.Telemetry.
func (m *metrics) CallerLimited(dryRun bool) {
	if dryRun {
		m.callerDryRun.Increment(1)
	} else {
		m.callerLimited.Increment(1)
	}
}

// BundleLoaded implements decide.Telemetry.
func (m *metrics) BundleLoaded(revision uint64, expires time.Time) {
	m.bundleLoads.Increment(1)
	m.revision.Add(int64(revision) - m.revision.Value())
	m.expiry.Add(expires.Unix() - m.expiry.Value())
}

// NextSunset implements decide.Telemetry: the gauge is the sunset's Unix
// second (rounded up, so at that second the window has closed), 0 for none.
func (m *metrics) NextSunset(at time.Time) {
	var v int64
	if !at.IsZero() {
		v = at.Unix()
		if at.Nanosecond() != 0 {
			v++
		}
	}
	m.sunset.Add(v - m.sunset.Value())
}

// BundleRejected implements decide.Telemetry.
func (m *metrics) BundleRejected() { m.verifyFailures.Increment(1) }

// Tokens implements decide.Telemetry.
func (m *metrics) Tokens(hits, misses, signatures, sharedHits uint64) {
	for _, c := range [...]struct {
		m proxywasm.MetricCounter
		n uint64
	}{{m.cacheHits, hits}, {m.cacheMisses, misses}, {m.signatures, signatures}, {m.sharedHits, sharedHits}} {
		if c.n != 0 {
			c.m.Increment(c.n)
		}
	}
}
