// Package decisionlog is the distributor's append-only, hash-chained store of
// the decision records the guard filter sends. Every stored record carries a
// sequence number, the hash of its predecessor and its own hash (SHA-256 over
// the canonical encoding of the record including seq and prev_hash), so an
// edited, reordered or deleted record breaks the chain; a HEAD file written
// after every fsync'd batch lets a verifier notice a truncated tail.
//
// Uploads must be I-JSON (RFC 7493: UTF-8, no duplicate member names), and
// no field may fold (Unicode simple case folding) onto a name the log
// assigns or indexes. Stored lines are read back by exact member names
// only and must be in canonical form, so a look-alike such as "haſh"
// (U+017F) can never stand in for the chain or query fields.
package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/contract"
)

// Record is one decision record as received: field name to raw JSON value.
// Fields the distributor does not know are kept verbatim (canonicalised).
type Record map[string]json.RawMessage

// Fields the distributor adds to every stored record; clients may not send
// them. received_by is the authenticated uploader (SPIFFE ID or token name)
// and received_at the server's clock, so the trail shows who vouched for a
// record independently of what the record claims.
const (
	FieldSeq        = "seq"
	FieldPrevHash   = "prev_hash"
	FieldHash       = "hash"
	FieldReceivedBy = "received_by"
	FieldReceivedAt = "received_at"
)

// Stamp records the uploader and arrival time on every record.
func Stamp(recs []Record, by string, at time.Time) {
	byJSON, _ := json.Marshal(by)
	atJSON, _ := json.Marshal(at.UTC().Format(time.RFC3339Nano))
	for _, r := range recs {
		r[FieldReceivedBy] = byJSON
		r[FieldReceivedAt] = atJSON
	}
}

// MaxBatch bounds the records accepted in one upload.
const MaxBatch = 10000

// DefaultMaxRecordBytes bounds one record's JSON text.
const DefaultMaxRecordBytes = 64 << 10

// Decode parses an upload: a JSON array of record objects, or (ndjson) one
// record object per line. Every record is validated; the first bad record
// fails the whole batch with its position so nothing is half-ingested.
func Decode(body []byte, ndjson bool) ([]Record, error) {
	return DecodeReader(bytes.NewReader(body), ndjson, DefaultMaxRecordBytes)
}

// DecodeReader is Decode reading the upload as it arrives: only the
// record being parsed is buffered as text, and a record of more than
// maxRecord bytes is refused.
func DecodeReader(r io.Reader, ndjson bool, maxRecord int) ([]Record, error) {
	if maxRecord <= 0 {
		maxRecord = DefaultMaxRecordBytes
	}
	var out []Record
	if ndjson {
		br := bufio.NewReaderSize(r, 64<<10)
		for line := 1; ; line++ {
			l, err := readLine(br, maxRecord)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			if t := bytes.TrimSpace(l); len(t) > 0 {
				if len(out) >= MaxBatch {
					return nil, fmt.Errorf("more than %d records in one upload", MaxBatch)
				}
				rec, rerr := DecodeRecord(t)
				if rerr != nil {
					return nil, fmt.Errorf("line %d: %w", line, rerr)
				}
				out = append(out, rec)
			}
			if err != nil {
				break
			}
		}
		if len(out) == 0 {
			return nil, errors.New("no records")
		}
		return out, nil
	}
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("body is not a JSON array of records: %w", tokenErr(tok, err))
	}
	for i := 0; dec.More(); i++ {
		if i >= MaxBatch {
			return nil, fmt.Errorf("more than %d records in one upload, at most %d", MaxBatch, MaxBatch)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of records: record %d: %w", i, err)
		}
		if len(raw) > maxRecord {
			return nil, fmt.Errorf("record %d: %d bytes, at most %d", i, len(raw), maxRecord)
		}
		rec, err := DecodeRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		out = append(out, rec)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return nil, fmt.Errorf("body is not a JSON array of records: %w", tokenErr(tok, err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body is not a JSON array of records: data after the array")
	}
	if len(out) == 0 {
		return nil, errors.New("no records")
	}
	return out, nil
}

func tokenErr(tok json.Token, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected %v", tok)
}

// readLine reads one line (without its newline) of at most max bytes; a
// longer one is an error once max is passed, without buffering the rest.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+1 { // +1: the newline
			return nil, fmt.Errorf("record of more than %d bytes", max)
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimSuffix(line, []byte{'\n'}), err
	}
}

// DecodeRecord parses and validates one record object.
func DecodeRecord(data []byte) (Record, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, errors.New("record is not a JSON object")
	}
	if err := checkIJSON(data); err != nil {
		return nil, err
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("record is not a JSON object: %w", err)
	}
	if err := rec.validate(); err != nil {
		return nil, err
	}
	return rec, nil
}

func (r Record) validate() error {
	for _, f := range []string{FieldSeq, FieldPrevHash, FieldHash, FieldReceivedBy, FieldReceivedAt} {
		if _, ok := r[f]; ok {
			return fmt.Errorf("field %q is assigned by the log and may not be sent", f)
		}
	}
	for name := range r {
		if err := checkFolding(name); err != nil {
			return err
		}
	}
	ts, ok := r.str(contract.FieldTime)
	if !ok {
		return fmt.Errorf("field %q is required and must be an RFC 3339 string", contract.FieldTime)
	}
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		return fmt.Errorf("field %q: %w", contract.FieldTime, err)
	}
	d, ok := r.str(contract.FieldDecision)
	if !ok {
		return fmt.Errorf("field %q is required and must be a string", contract.FieldDecision)
	}
	if !slices.Contains(contract.RecordDecisions, d) {
		return fmt.Errorf("field %q: %q is not one of %s", contract.FieldDecision, d, strings.Join(contract.RecordDecisions, ", "))
	}
	for _, f := range contract.RecordStringFields {
		if v, present := r[f]; present && !isNull(v) {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("field %q must be a string", f)
			}
		}
	}
	if v, present := r[contract.FieldRuleIDs]; present && !isNull(v) {
		var ids []string
		if err := json.Unmarshal(v, &ids); err != nil {
			return fmt.Errorf("field %q must be an array of strings", contract.FieldRuleIDs)
		}
	}
	for _, f := range contract.RecordCountFields {
		if v, present := r[f]; present && !isNull(v) {
			var n uint64
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("field %q must be a non-negative integer", f)
			}
		}
	}
	for _, f := range contract.RecordTimeFields {
		if v, present := r[f]; present && !isNull(v) {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return fmt.Errorf("field %q must be an RFC 3339 string", f)
			}
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				return fmt.Errorf("field %q: %w", f, err)
			}
		}
	}
	if v, present := r[contract.FieldBundleRevision]; present && !isNull(v) {
		var n uint64
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("field %q must be a non-negative integer", contract.FieldBundleRevision)
		}
	}
	if _, err := r.Canonical(); err != nil {
		return err
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// StringField returns a string field's value (false when the field is
// absent or not a string).
func (r Record) StringField(name string) (string, bool) { return r.str(name) }

// str returns a string field's value.
func (r Record) str(name string) (string, bool) {
	v, ok := r[name]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}
