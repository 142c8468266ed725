package audit

import (
	"strconv"
	"time"
)

// Backoff of failed uploads.
const (
	// FirstBackoff is the wait after the first failure.
	FirstBackoff = time.Second
	// MaxRetryAfter bounds the wait a Retry-After may ask for, so a
	// hostile or broken distributor cannot stall the trail for hours.
	MaxRetryAfter = 10 * time.Minute
)

// Backoff returns the wait before retry number failures (1 for the first
// retry): exponential from FirstBackoff, capped at max, with jitter in
// [d/2, d) from r (uniform in [0, 1)) so the proxies of a fleet that lost
// the distributor together do not come back in step.
func Backoff(failures int, max time.Duration, r float64) time.Duration {
	d := FirstBackoff
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + time.Duration(r*float64(d/2))
}

// httpDate is the IMF-fixdate of RFC 9110 §5.6.7.
const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// RetryAfter parses a Retry-After value (RFC 9110 §10.2.3: delay seconds
// or an HTTP date) relative to now; ok is false for anything else. The
// wait is at least 0 and at most MaxRetryAfter.
func RetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	} else if v[0] >= '0' && v[0] <= '9' {
		if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
			return MaxRetryAfter, true
		}
		return 0, false
	}
	t, err := time.Parse(httpDate, v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// Refusal reports whether an upload's status says the batch can never be
// stored as it is (so retrying the same bytes would loop forever): 400
// (a record the distributor rejects), 413 (too large), 422, 415.
func Refusal(status int) bool {
	switch status {
	case 400, 413, 415, 422:
		return true
	}
	return false
}
