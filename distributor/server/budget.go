package server

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Request classes with a concurrency budget of their own. Module pulls
// are the heavy class: with their own budget they queue among themselves
// instead of taking the CPU and connections that decision ingest and bundle
// long polls (what proxies depend on within a callout timeout) need.
const (
	classPull   = "pull"   // module and blob downloads (/v2/ reads, /modules/)
	classPush   = "push"   // module and blob uploads (/v2/ writes)
	classIngest = "ingest" // decision uploads
	classPoll   = "poll"   // bundle reads and long polls
)

// budget is a counting semaphore whose waiters give up after a timeout.
type budget struct {
	slots   chan struct{}
	wait    time.Duration
	active  prometheus.Gauge
	waiting prometheus.Gauge
	queued  prometheus.Observer
}

func newBudget(n int, wait time.Duration) *budget {
	if n <= 0 {
		return nil
	}
	return &budget{slots: make(chan struct{}, n), wait: wait}
}

// acquire takes a slot, waiting up to the budget's queue time (or until ctx
// ends); release gives it back.
func (b *budget) acquire(ctx context.Context) (release func(), ok bool) {
	if b == nil {
		return func() {}, true
	}
	select {
	case b.slots <- struct{}{}:
	default:
		start := time.Now()
		b.waiting.Inc()
		t := time.NewTimer(b.wait)
		select {
		case b.slots <- struct{}{}:
			t.Stop()
			b.waiting.Dec()
			b.queued.Observe(time.Since(start).Seconds())
		case <-t.C:
			b.waiting.Dec()
			return nil, false
		case <-ctx.Done():
			t.Stop()
			b.waiting.Dec()
			return nil, false
		}
	}
	b.active.Inc()
	return func() { b.active.Dec(); <-b.slots }, true
}

// classOf names the budget a request of route draws on ("" for none).
func classOf(route string, r *http.Request) string {
	switch route {
	case "oci":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return classPull
		}
		return classPush
	case "modules":
		return classPull
	case "decisions_ingest":
		return classIngest
	case "bundle_get", "bundle_revision":
		return classPoll
	}
	return ""
}

// newBudgets builds the budgets of the configuration and their metrics.
func (s *Server) newBudgets() {
	c := s.cfg.Limits.Concurrency
	wait := c.QueueTimeout
	if wait <= 0 {
		wait = 30 * time.Second
	}
	s.budgets = map[string]*budget{}
	for class, n := range map[string]int{classPull: c.Pull, classPush: c.Push, classIngest: c.Ingest, classPoll: c.Poll} {
		b := newBudget(n, wait)
		if b == nil {
			continue
		}
		b.active = s.m.budgetActive.WithLabelValues(class)
		b.waiting = s.m.budgetWaiting.WithLabelValues(class)
		b.queued = s.m.budgetQueued.WithLabelValues(class)
		s.budgets[class] = b
	}
}
