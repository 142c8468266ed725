package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the distributor's Prometheus metrics, on a private registry.
type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	rejected      *prometheus.CounterVec
	publishes     *prometheus.CounterVec
	revision      *prometheus.GaugeVec
	expiry        *prometheus.GaugeVec
	created       *prometheus.GaugeVec
	longPolls     prometheus.Gauge
	ingested      prometheus.Counter
	conns         prometheus.Gauge
	budgetActive  *prometheus.GaugeVec
	budgetWaiting *prometheus.GaugeVec
	budgetQueued  *prometheus.HistogramVec
	connsRefused  prometheus.Counter
	duplicates    prometheus.Counter
	decisionSeq   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_distributor_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshguard_distributor_http_request_duration_seconds",
			Help:    "HTTP request latency by route (long polls included).",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 30, 60},
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_distributor_rejected_requests_total",
			Help: "Requests rejected before doing work, by route and reason (unauthenticated, forbidden, too_large, too_slow, rate_limited, invalid, wrong_proxy, conflict, busy, disk_full).",
		}, []string{"route", "reason"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_distributor_bundle_publishes_total",
			Help: "Bundle publish attempts by channel and result (ok, conflict, invalid, error).",
		}, []string{"channel", "result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_distributor_bundle_revision",
			Help: "Latest bundle revision per channel.",
		}, []string{"channel"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_distributor_bundle_expiry_timestamp_seconds",
			Help: "Unix time at which each channel's latest bundle expires; proxies fail closed after it.",
		}, []string{"channel"}),
		created: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_distributor_bundle_created_timestamp_seconds",
			Help: "Unix time at which each channel's latest bundle was created (signed); time() minus it is the bundle's age.",
		}, []string{"channel"}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_distributor_bundle_long_polls",
			Help: "Bundle long polls currently waiting.",
		}),
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_distributor_decision_records_ingested_total",
			Help: "Decision records durably appended to the log.",
		}),
		budgetActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_distributor_requests_in_progress",
			Help: "Requests in progress per concurrency class (pull, push, ingest, poll).",
		}, []string{"class"}),
		budgetWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_distributor_requests_queued",
			Help: "Requests waiting for their class's concurrency budget.",
		}, []string{"class"}),
		budgetQueued: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshguard_distributor_request_queue_seconds",
			Help:    "Time requests waited for their class's concurrency budget.",
			Buckets: []float64{.001, .01, .1, .5, 1, 5, 30},
		}, []string{"class"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_distributor_open_connections",
			Help: "Client connections open now.",
		}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_distributor_connections_refused_total",
			Help: "Connections closed at accept because limits.max_connections were open.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_distributor_decision_records_duplicate_total",
			Help: "Decision records dropped at ingest because the same uploader already stored the same decision_id (client retries).",
		}),
		decisionSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_distributor_decision_log_head_seq",
			Help: "Sequence number of the last decision record.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.rejected, m.publishes, m.revision, m.expiry, m.created, m.longPolls,
		m.ingested, m.duplicates, m.decisionSeq, m.conns, m.connsRefused, m.budgetActive, m.budgetWaiting, m.budgetQueued,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
