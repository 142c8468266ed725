// Package audit encodes decision records in the distributor's decision-log
// format without reflection and buffers them for batched upload: a bounded
// buffer that never blocks and counts what it drops.
package audit

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/meshguard/meshguard/internal/contract"
)

// Record is one decision (the distributor contract's record).
type Record = contract.Record

// AppendJSON appends r as a JSON object to b: the encoding
// json.Marshal(r) gives, written without reflection.
func AppendJSON(b []byte, r *Record) []byte {
	b = appendKey(append(b, '{'), contract.FieldTime)
	b = append(b, '"')
	b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', ',')
	b = AppendString(appendKey(b, contract.FieldDecisionID), r.DecisionID)
	b = AppendString(appendKey(append(b, ','), contract.FieldDecision), r.Decision)
	b = append(appendKey(append(b, ','), contract.FieldRuleIDs), '[')
	for i, id := range r.RuleIDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, id)
	}
	b = append(b, ']', ',')
	b = AppendString(appendKey(b, contract.FieldReason), r.Reason)
	b = strconv.AppendUint(appendKey(append(b, ','), contract.FieldBundleRevision), r.BundleRevision, 10)
	for _, f := range [...]struct{ k, v string }{
		{contract.FieldSubject, r.Subject}, {contract.FieldDeviceID, r.DeviceID}, {contract.FieldDeviceClass, r.DeviceClass},
		{contract.FieldVersion, r.Version}, {contract.FieldMethod, r.Method}, {contract.FieldPath, r.Path},
		{contract.FieldAuthority, r.Authority}, {contract.FieldProxy, r.Proxy}, {contract.FieldSource, r.Source},
		{contract.FieldPeer, r.Peer}, {contract.FieldTokenSubject, r.TokenSubject}, {contract.FieldForwarder, r.Forwarder},
		{contract.FieldJTI, r.JTI}, {contract.FieldTargetDevice, r.TargetDevice},
	} {
		b = AppendString(appendKey(append(b, ','), f.k), f.v)
	}
	return append(b, '}')
}

// appendKey appends "name": (names need no escaping).
func appendKey(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// Buffer holds encoded records for upload. It is bounded: when full, new
// records are dropped and counted. Not for concurrent use.
type Buffer struct {
	max     int
	recs    [][]byte
	free    [][]byte
	Dropped uint64
}

// NewBuffer returns a buffer of at most max records.
func NewBuffer(max int) *Buffer { return &Buffer{max: max} }

// Len returns the number of buffered records.
func (q *Buffer) Len() int { return len(q.recs) }

// Add encodes r into the buffer; it reports false when r was dropped.
func (q *Buffer) Add(r *Record) bool {
	if len(q.recs) >= q.max {
		q.Dropped++
		return false
	}
	var b []byte
	if n := len(q.free); n > 0 {
		b, q.free = q.free[n-1][:0], q.free[:n-1]
	}
	q.recs = append(q.recs, AppendJSON(b, r))
	return true
}

// Batch appends up to n records as a JSON array to dst and removes them from
// the buffer; it returns dst and the number of records taken.
func (q *Buffer) Batch(dst []byte, n int) ([]byte, int) {
	if n > len(q.recs) {
		n = len(q.recs)
	}
	dst = append(dst, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, q.recs[i]...)
		q.free = append(q.free, q.recs[i])
	}
	dst = append(dst, ']')
	rest := copy(q.recs, q.recs[n:])
	clear(q.recs[rest:])
	q.recs = q.recs[:rest]
	return dst, n
}
