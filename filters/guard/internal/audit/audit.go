// Package audit encodes decision records in the distributor's decision-log
// format without reflection and buffers them for batched upload: a buffer
// bounded in bytes that never blocks, keeps a batch until it arrived, drops
// the oldest records when it must and accounts for every one it dropped in
// a gap record.
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
		{contract.FieldJTI, r.JTI}, {contract.FieldTargetDevice, r.TargetDevice}, {contract.FieldFirmware, r.Firmware},
		{contract.FieldProxyID, r.ProxyID}, {contract.FieldUser, r.User}, {contract.FieldUserIssuer, r.UserIssuer},
	} {
		b = AppendString(appendKey(append(b, ','), f.k), f.v)
	}
	if r.Count != 0 {
		b = strconv.AppendUint(appendKey(append(b, ','), contract.FieldCount), r.Count, 10)
	}
	if r.Dropped != 0 {
		b = strconv.AppendUint(appendKey(append(b, ','), contract.FieldDropped), r.Dropped, 10)
	}
	b = appendTime(b, contract.FieldFirstTime, r.FirstTime)
	b = appendTime(b, contract.FieldLastTime, r.LastTime)
	return append(b, '}')
}

// appendTime appends ,"name":"RFC 3339 nano" unless t is zero (omitzero).
func appendTime(b []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(appendKey(append(b, ','), name), '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
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
