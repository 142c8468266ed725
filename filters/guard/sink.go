package main

import (
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/audit"
	"github.com/meshguard/meshguard/internal/contract"
)

// sink is where decision records go: a line in the proxy log, and with an
// audit sink configured a bounded buffer posted in batches to the
// distributor's decision log. It implements decide.Recorder.
type sink struct {
	cfg      *config.AuditSink
	m        *metrics
	buf      *audit.Buffer
	batch    []byte
	next     time.Time
	flushing bool
}

func (s *sink) configure(cfg *config.AuditSink) {
	if s.cfg = cfg; cfg != nil {
		s.buf = audit.NewBuffer(cfg.BufferSize)
	}
}

// Record implements decide.Recorder.
func (s *sink) Record(r *audit.Record) {
	line := audit.AppendJSON(append(make([]byte, 0, 512), "meshguard decision "...), r)
	if r.Decision == contract.DecisionAllow {
		proxywasm.LogInfo(string(line))
	} else {
		proxywasm.LogWarn(string(line))
	}
	if s.buf != nil && !s.buf.Add(r) {
		s.m.auditDropped.Increment(1)
	}
}

// tick uploads a batch when one is full or the flush interval passed.
func (s *sink) tick(now time.Time) {
	if s.buf == nil || s.flushing || (s.buf.Len() < s.cfg.BatchSize && now.Before(s.next)) {
		return
	}
	s.next = now.Add(s.cfg.FlushInterval.Duration)
	s.flush()
}

// flush posts one batch to the decision-log endpoint; what fails to
// arrive is dropped and counted (the buffer stays bounded).
func (s *sink) flush() {
	if s.buf.Len() == 0 {
		return
	}
	c := s.cfg
	body, n := s.buf.Batch(s.batch[:0], c.BatchSize)
	s.batch = body
	hdrs := [][2]string{{":method", "POST"}, {":path", c.Path}, {":authority", c.Authority}, {"content-type", "application/json"}}
	if c.Token != "" {
		hdrs = append(hdrs, [2]string{"authorization", "Bearer " + c.Token})
	}
	dropped := func(why string, args ...any) {
		s.m.auditFailed.Increment(1)
		s.m.auditDropped.Increment(uint64(n))
		proxywasm.LogWarnf("meshguard: decision upload of %d records "+why+"; dropped", append([]any{n}, args...)...)
	}
	_, err := proxywasm.DispatchHttpCall(c.Cluster, hdrs, body, nil, uint32(c.Timeout.Milliseconds()), func(numHeaders, _, _ int) {
		s.flushing = false
		if numHeaders == 0 {
			dropped("failed")
			return
		}
		hs, _ := proxywasm.GetHttpCallResponseHeaders()
		for _, h := range hs {
			if h[0] == ":status" && (len(h[1]) != 3 || h[1][0] != '2') {
				dropped("answered %s", h[1])
				return
			}
		}
		s.m.auditSent.Increment(uint64(n))
	})
	if err != nil {
		dropped("to cluster %q: %v", c.Cluster, err)
		return
	}
	s.flushing = true
}
