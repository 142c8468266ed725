package server

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/meshguard/meshguard/distributor/bundles"
)

// defaultExpiryWarning is bundles.expiry_warning when unset.
const defaultExpiryWarning = 7 * 24 * time.Hour

// setExpiry exports a channel's latest bundle creation and expiry times.
func (s *Server) setExpiry(channel string, ri bundles.RevisionInfo) {
	if !ri.Created.IsZero() {
		s.m.created.WithLabelValues(channel).Set(float64(ri.Created.Unix()))
	}
	if !ri.Expires.IsZero() {
		s.m.expiry.WithLabelValues(channel).Set(float64(ri.Expires.Unix()))
	}
}

// expiryWarnings describes every channel whose latest bundle has expired or
// expires within the warning window, sorted by channel. Proxies fail closed
// once their bundle expires, so this is the last call to publish a new one.
func (s *Server) expiryWarnings(now time.Time) map[string]expiryWarning {
	window := s.cfg.Bundles.ExpiryWarning
	if window <= 0 {
		window = defaultExpiryWarning
	}
	out := map[string]expiryWarning{}
	for ch, ri := range s.reg.LatestInfos() {
		if ri.Expires.IsZero() {
			continue
		}
		left := ri.Expires.Sub(now)
		switch {
		case left <= 0:
			out[ch] = expiryWarning{revision: ri.Revision, expired: true,
				text: fmt.Sprintf("revision %d expired at %s: proxies without a newer bundle deny every request", ri.Revision, ri.Expires.Format(time.RFC3339))}
		case left <= window:
			out[ch] = expiryWarning{revision: ri.Revision,
				text: fmt.Sprintf("revision %d expires at %s (in %s): publish a new revision", ri.Revision, ri.Expires.Format(time.RFC3339), left.Round(time.Minute))}
		}
	}
	return out
}

// expiryWarning is one channel's warning; revision and expired say whether
// it is news since the last one logged.
type expiryWarning struct {
	revision uint64
	expired  bool
	text     string
}

// logExpiry logs each new expiry warning once (again when it changes from
// "expires" to "expired" or names another revision).
func (s *Server) logExpiry(now time.Time) {
	warn := s.expiryWarnings(now)
	s.expiryMu.Lock()
	defer s.expiryMu.Unlock()
	chans := make([]string, 0, len(warn))
	for ch := range warn {
		chans = append(chans, ch)
	}
	sort.Strings(chans)
	for _, ch := range chans {
		w := warn[ch]
		if prev, ok := s.expiryWarned[ch]; ok && prev.revision == w.revision && prev.expired == w.expired {
			continue
		}
		s.expiryWarned[ch] = w
		if w.expired {
			s.log.Error("policy bundle expired", "channel", ch, "revision", w.revision, "warning", w.text)
		} else {
			s.log.Warn("policy bundle expires soon", "channel", ch, "revision", w.revision, "warning", w.text)
		}
	}
	for ch := range s.expiryWarned {
		if _, ok := warn[ch]; !ok {
			delete(s.expiryWarned, ch)
		}
	}
}

// watchExpiry logs expiry warnings every interval until ctx ends.
func (s *Server) watchExpiry(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.logExpiry(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
