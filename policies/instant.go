package policies

import (
	"errors"
	"time"
)

// Instants (a version sunset's until, a test input's now) are RFC 3339
// date-times with an explicit offset, written exactly as
// YYYY-MM-DDTHH:MM:SS[.F](Z|+HH:MM|-HH:MM) with 1 to 9 fraction digits.
var (
	minInstant = time.Unix(0, 0)
	maxInstant = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ParseInstant parses an instant strictly: upper-case T and Z, seconds
// 00-59, no offset -00:00 (RFC 3339 §4.3: an unknown local offset), and the
// instant after 1970-01-01T00:00:00Z and before 2262-01-01T00:00:00Z, so it
// is a positive int64 of Unix nanoseconds.
func ParseInstant(s string) (time.Time, error) {
	const bad = "not an RFC 3339 date-time with an explicit offset (e.g. 2027-01-31T00:00:00Z or 2027-01-31T01:00:00+01:00)"
	digits := func(from, to int) bool {
		for i := from; i < to; i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	if len(s) < 20 || !digits(0, 4) || s[4] != '-' || !digits(5, 7) || s[7] != '-' || !digits(8, 10) || s[10] != 'T' ||
		!digits(11, 13) || s[13] != ':' || !digits(14, 16) || s[16] != ':' || !digits(17, 19) {
		return time.Time{}, errors.New(bad)
	}
	i := 19
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 || j-i-1 > 9 {
			return time.Time{}, errors.New(bad)
		}
		i = j
	}
	switch rest := s[i:]; {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && digits(i+1, i+3) && rest[3] == ':' && digits(i+4, i+6):
		if rest == "-00:00" {
			return time.Time{}, errors.New("the offset -00:00 means an unknown local offset (RFC 3339 §4.3); write Z or +00:00")
		}
		if rest[1:3] > "23" || rest[4:6] > "59" {
			return time.Time{}, errors.New(bad + ": offset out of range")
		}
	default:
		return time.Time{}, errors.New(bad)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New(bad + ": " + err.Error())
	}
	if !t.After(minInstant) || !t.Before(maxInstant) {
		return time.Time{}, errors.New("the instant must be after 1970-01-01T00:00:00Z and before 2262-01-01T00:00:00Z")
	}
	return t, nil
}

// FormatInstant writes an instant as decision reasons and warnings do: in
// UTC, RFC 3339 with the fraction of a second only when it is not zero
// (without trailing zeros).
func FormatInstant(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
