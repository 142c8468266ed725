package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"time"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/internal/contract"
)

// maxBatchBody bounds an upload's body (the distributor's default
// decisions_bytes limit is larger); a batch holds at least one record.
const maxBatchBody = 1 << 20

// sink is where decision records go: a line in the proxy log, and with an
// audit sink configured a buffer bounded in bytes posted in batches to the
// distributor's decision log. A batch stays buffered until the distributor
// stored it; failed uploads are retried with capped exponential backoff
// and jitter (or after the distributor's Retry-After); what a full buffer
// or a refusal forces out is counted in a gap record. Refusals without a
// decision (unavailable, error) are aggregated per flush interval. It
// implements decide.Recorder.
type sink struct {
	cfg      *config.AuditSink
	m        *metrics
	buf      *audit.Buffer
	agg      audit.Aggregator
	interval time.Duration
	aggNext  time.Time
	next     time.Time // next flush
	retryAt  time.Time // while a batch awaits a retry
	failures int       // consecutive failed uploads
	flushing bool
	// shownRecords and shownBytes are this worker's share of the
	// buffered gauges.
	shownRecords, shownBytes int64
	proxy                    string // the node id, on gap records
	proxyID                  string // the proxy's SPIFFE ID as last recorded
	idPrefix                 string
	idSeq                    uint64
	line                     []byte // the log line being written, reused
	rnd                      *rand.Rand
	now                      func() time.Time
}

func (s *sink) configure(cfg *config.AuditSink, proxy string) {
	var seed [16]byte
	_, _ = crand.Read(seed[:])
	s.rnd = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	// Ids of the records the sink writes itself (aggregated, gap): unique
	// across workers and restarts like the core's.
	s.idPrefix = "a" + strconv.FormatUint(binary.LittleEndian.Uint64(seed[:8]), 36) + "-"
	s.proxy, s.now = proxy, time.Now
	s.interval = config.DefaultAuditFlushPeriod
	if s.cfg = cfg; cfg != nil {
		s.buf = audit.NewBuffer(cfg.BufferBytes, cfg.BufferSize)
		s.interval = cfg.FlushInterval.Duration
	}
}

func (s *sink) nextID() string {
	s.idSeq++
	return s.idPrefix + strconv.FormatUint(s.idSeq, 36)
}

// Record implements decide.Recorder. An unavailable or error refusal is
// folded into its interval's aggregated record, whose id it gets.
func (s *sink) Record(r *audit.Record) {
	if r.ProxyID != "" && r.ProxyID != s.proxyID {
		s.proxyID = string([]byte(r.ProxyID))
	}
	if audit.Aggregates(r.Decision) {
		s.agg.Add(r, s.nextID)
		return
	}
	s.emit(r)
}

// logPrefix starts the proxy log line of a decision record.
const logPrefix = "meshguard decision "

// emit logs r and buffers it for upload, encoding it once for both.
func (s *sink) emit(r *audit.Record) {
	s.line = audit.AppendJSON(append(s.line[:0], logPrefix...), r)
	// The host copies the message: a view of the reused line suffices.
	if line := unsafe.String(unsafe.SliceData(s.line), len(s.line)); r.Decision == contract.DecisionAllow {
		proxywasm.LogInfo(line)
	} else {
		proxywasm.LogWarn(line)
	}
	if s.buf != nil {
		if n := s.buf.AddEncoded(s.line[len(logPrefix):], r.Time); n > 0 {
			s.m.auditDropped.Increment(uint64(n))
			if g := s.buf.Pending(); g.Dropped == uint64(n) {
				proxywasm.LogWarnf("meshguard: audit buffer full (%d records, %d bytes): dropping the oldest decision records; a gap record will account for them",
					s.buf.Len(), s.buf.Bytes())
			}
		}
	}
}

// gapRecord is the record accounting for the dropped records of g.
func (s *sink) gapRecord(g audit.Gap) *audit.Record {
	return &audit.Record{Time: s.now(), DecisionID: s.nextID(), Decision: contract.DecisionGap, RuleIDs: []string{},
		Reason: g.Reason(), Proxy: s.proxy, ProxyID: s.proxyID, Dropped: g.Dropped, FirstTime: g.First, LastTime: g.Last}
}

// tick emits the interval's aggregated records and uploads a batch when
// one is full, the flush interval passed or a retry is due.
func (s *sink) tick(now time.Time) {
	if !now.Before(s.aggNext) {
		s.aggNext = now.Add(s.interval)
		s.agg.Flush(s.emit)
	}
	if s.buf == nil {
		return
	}
	// The gauges are the proxy's (one stat for all workers): each worker
	// adds the change of its own buffer.
	if n := int64(s.buf.Len()); n != s.shownRecords {
		s.m.auditBufferedRecords.Add(n - s.shownRecords)
		s.shownRecords = n
	}
	if n := int64(s.buf.Bytes()); n != s.shownBytes {
		s.m.auditBufferedBytes.Add(n - s.shownBytes)
		s.shownBytes = n
	}
	switch {
	case s.flushing:
		return
	case s.buf.InFlight():
		if now.Before(s.retryAt) {
			return
		}
		s.m.auditRetries.Increment(1)
	case s.buf.Len() < s.cfg.BatchSize && now.Before(s.next):
		return
	}
	s.next = now.Add(s.cfg.FlushInterval.Duration)
	s.flush(now)
}

// flush posts the batch in flight (a retry) or a new one.
func (s *sink) flush(now time.Time) {
	c := s.cfg
	body := s.buf.Next(c.BatchSize, maxBatchBody, s.gapRecord)
	if body == nil {
		return
	}
	hdrs := [][2]string{{":method", "POST"}, {":path", c.Path}, {":authority", c.Authority}, {"content-type", "application/json"}}
	if c.Token != "" {
		hdrs = append(hdrs, [2]string{"authorization", "Bearer " + c.Token})
	}
	_, err := proxywasm.DispatchHttpCall(c.Cluster, hdrs, body, nil, uint32(c.Timeout.Milliseconds()), func(numHeaders, _, _ int) {
		s.flushing = false
		s.answered(numHeaders)
	})
	if err != nil {
		s.failed(now, -1, "to cluster "+strconv.Quote(c.Cluster)+": "+err.Error())
		return
	}
	s.flushing = true
}

// answered handles the distributor's answer to an upload.
func (s *sink) answered(numHeaders int) {
	now := s.now()
	if numHeaders == 0 {
		s.failed(now, -1, "failed (no answer)")
		return
	}
	status, retryAfter := 0, time.Duration(-1)
	hs, _ := proxywasm.GetHttpCallResponseHeaders()
	for _, h := range hs {
		switch h[0] {
		case ":status":
			status, _ = strconv.Atoi(h[1])
		case "retry-after":
			if d, ok := audit.RetryAfter(h[1], now); ok {
				retryAfter = d
			}
		}
	}
	n, gap := s.buf.Sent()
	switch {
	case status >= 200 && status < 300:
		s.buf.Done()
		s.m.auditSent.Increment(uint64(n))
		if gap.Dropped != 0 {
			s.m.auditGaps.Increment(1)
			proxywasm.LogWarnf("meshguard: the decision trail has a gap: %d records dropped, decided between %s and %s (%s)",
				gap.Dropped, gap.First.UTC().Format(time.RFC3339Nano), gap.Last.UTC().Format(time.RFC3339Nano), gap.Reason())
		}
		if s.failures > 0 {
			proxywasm.LogInfof("meshguard: decision upload succeeded after %d failed attempts; %d records still buffered", s.failures, s.buf.Len())
		}
		s.failures = 0
		if s.buf.Len() >= s.cfg.BatchSize || s.buf.Pending().Dropped != 0 {
			s.flush(now) // catch up on a backlog without waiting for ticks
		}
	case audit.Refusal(status):
		s.m.auditFailed.Increment(1)
		if !s.buf.Refused() {
			proxywasm.LogCriticalf("meshguard: the distributor refused a gap record (%d) for %d dropped decisions between %s and %s; the trail cannot show this gap",
				status, gap.Dropped, gap.First.Format(time.RFC3339Nano), gap.Last.Format(time.RFC3339Nano))
		} else {
			proxywasm.LogErrorf("meshguard: the distributor refused a decision upload of %d records (%d); splitting it, a single refused record is dropped and counted in a gap record", n, status)
		}
		s.next = now
	default:
		s.failed(now, retryAfter, "answered "+strconv.Itoa(status))
	}
}

// failed schedules the retry of the batch in flight: after the
// distributor's Retry-After when it sent one (>= 0), else after a capped
// exponential backoff with jitter.
func (s *sink) failed(now time.Time, retryAfter time.Duration, why string) {
	s.failures++
	s.m.auditFailed.Increment(1)
	wait := retryAfter
	if wait < 0 {
		wait = audit.Backoff(s.failures, s.cfg.MaxBackoff.Duration, s.rnd.Float64())
	}
	s.retryAt = now.Add(wait)
	n, _ := s.buf.Sent()
	proxywasm.LogWarnf("meshguard: decision upload of %d records %s; kept (%d buffered, %d bytes), retry %d in %s",
		n, why, s.buf.Len(), s.buf.Bytes(), s.failures, wait.Round(time.Millisecond))
}
