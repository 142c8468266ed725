package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/contract"
)

// Searcher answers the console's paged, filtered queries over a decision
// log: pages of records newest first, one record by seq, counts over time
// and the values seen per column. Index implements it over the segment
// files; a database backend implements the same contract with SQL, so the
// HTTP layer and the console do not change with the storage.
type Searcher interface {
	// Search returns one page of matching records, newest first.
	Search(ctx context.Context, f Filter, p PageRequest) (Page, error)
	// Record returns the stored record with sequence number seq
	// (ErrNoRecord when there is none).
	Record(ctx context.Context, seq uint64) (StoredRecord, error)
	// Stats counts matching records per time bucket, decision and rule.
	Stats(ctx context.Context, f Filter, r StatsRequest) (Stats, error)
	// Values lists the most frequent values of a column (see Columns).
	Values(ctx context.Context, column string, limit int) ([]ValueCount, error)
	// Integrity is what the searcher has verified of the log so far.
	Integrity() Integrity
}

// ErrNoRecord is returned by Record for a seq the log does not hold.
var ErrNoRecord = errors.New("no such record")

// Decision values of a record's "decision" field.
const (
	DecisionAllow  = "allow"
	DecisionDeny   = "deny"
	DecisionDryRun = "dry-run-deny"
	DecisionError  = "error"
	// DecisionUnavailable records aggregate the guard's refusals for an
	// unavailable policy; DecisionGap records count records the guard had
	// to drop (see internal/contract).
	DecisionUnavailable = "unavailable"
	DecisionGap         = "gap"
)

// Columns a Filter can select on and Values can list: record fields, plus
// "rule" (each entry of rule_ids), "revision" (bundle_revision) and
// "uploader" (received_by, the authenticated identity that sent the record).
var Columns = []string{"decision", "rule", "subject", "device", "path", "revision", "proxy", "uploader"}

// NoRule is the rule name counted for records whose rule_ids is empty
// (a default deny, an error).
const NoRule = "(none)"

// Filter selects records. Empty fields do not filter. Subject, Device,
// Path, Proxy and Uploader match the whole value, or a prefix when they end
// in '*'; Rule matches any entry of rule_ids (NoRule: records without one).
type Filter struct {
	Decision string `json:"decision,omitempty"`
	Rule     string `json:"rule,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Device   string `json:"device,omitempty"`
	Path     string `json:"path,omitempty"`
	Proxy    string `json:"proxy,omitempty"`
	Uploader string `json:"uploader,omitempty"`
	// Revision, when set, is the bundle_revision to match.
	Revision *uint64 `json:"revision,omitempty"`
	// Since and Until bound the record's "time" (inclusive).
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
}

// Validate refuses a filter no record could be meant by.
func (f Filter) Validate() error {
	if f.Decision != "" && !slices.Contains(contract.RecordDecisions, f.Decision) {
		return fmt.Errorf("decision %q is not one of %s", f.Decision, strings.Join(contract.RecordDecisions, ", "))
	}
	for name, v := range map[string]string{"rule": f.Rule, "subject": f.Subject, "device": f.Device,
		"path": f.Path, "proxy": f.Proxy, "uploader": f.Uploader} {
		if len(v) > MaxFilterValue {
			return fmt.Errorf("%s filter is %d bytes long, at most %d", name, len(v), MaxFilterValue)
		}
		if strings.ContainsAny(v, "\x00") {
			return fmt.Errorf("%s filter contains a NUL byte", name)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return fmt.Errorf("until %s is before since %s", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	return nil
}

// matches reports whether a stored line matches f, reading its fields by
// exact name as the index does.
func (f Filter) matches(line []byte) bool {
	e, ok := scanEntry(line)
	if !ok {
		e = parseEntry(line)
	}
	if f.Decision != "" && decisionNames[e.dec] != f.Decision {
		return false
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		if e.time == noTime || !f.Since.IsZero() && e.time < clampNano(f.Since) || !f.Until.IsZero() && e.time > clampNano(f.Until) {
			return false
		}
	}
	if f.Revision != nil && e.rev != *f.Revision {
		return false
	}
	if f.Rule != "" {
		rules := e.rules
		if len(rules) == 0 {
			rules = []string{NoRule}
		}
		if !slices.ContainsFunc(rules, func(r string) bool { return valueMatches(f.Rule, r) }) {
			return false
		}
	}
	for c, v := range [numStrCols]string{f.Subject, f.Device, f.Path, f.Proxy, f.Uploader} {
		if v != "" && !valueMatches(v, e.str[c]) {
			return false
		}
	}
	return true
}

// valueMatches is the whole value, or a prefix when pattern ends in '*'.
func valueMatches(pattern, v string) bool {
	if pre, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(v, pre)
	}
	return v == pattern
}

// bounded is v, or def when v is not positive, and at most hi.
func bounded(v, def, hi int) int {
	if v <= 0 {
		return def
	}
	return min(v, hi)
}

// MaxFilterValue bounds one filter value in bytes.
const MaxFilterValue = 4096

// PageRequest asks for up to Limit records with seq below Before (0: from
// the newest record).
type PageRequest struct {
	Before uint64
	Limit  int
}

// Page limits.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Page is one page of a search.
type Page struct {
	// Records are the stored records, newest first.
	Records []StoredRecord `json:"records"`
	// Total is how many indexed records match the filter.
	Total uint64 `json:"total"`
	// Next is the Before of the next (older) page, 0 on the last page.
	Next uint64 `json:"next,omitempty"`
	// Indexed and Head: the search covers seq 1..Indexed of a log whose
	// last record is Head (Indexed < Head while a large log is indexed).
	Indexed uint64 `json:"indexed"`
	Head    uint64 `json:"head"`
}

// StoredRecord is a record as stored, with its seq.
type StoredRecord struct {
	Seq    uint64          `json:"seq"`
	Record json.RawMessage `json:"record"`
	// Verified says the record lies in the part of the log whose integrity
	// the searcher has verified (see Integrity).
	Verified bool `json:"verified"`
}

// StatsRequest shapes a Stats answer.
type StatsRequest struct {
	// Buckets is the number of time buckets (default 60, at most 500).
	Buckets int
	// TopRules is how many rules get their own series (default 8, at most
	// 50); the rest are summed into Stats.Other.
	TopRules int
}

// Stats limits.
const (
	DefaultBuckets  = 60
	MaxBuckets      = 500
	DefaultTopRules = 8
	MaxTopRules     = 50
)

// Stats are counts of matching records over time.
type Stats struct {
	// From is the start of the first bucket; each bucket is Bucket long.
	From   time.Time `json:"from"`
	Bucket Duration  `json:"bucket"`
	// Series holds one entry per bucket.
	Series []BucketCounts `json:"series"`
	// Rules are the TopRules most frequent rules, most frequent first;
	// a record with several rule_ids counts once for each.
	Rules []RuleCounts `json:"rules"`
	// Other sums the rules beyond TopRules (nil when there are none).
	Other *RuleCounts `json:"other,omitempty"`
	// Total counts matching records; OutOfRange those of them without a
	// time or outside the buckets (a guard's clock far off, say).
	Total      uint64 `json:"total"`
	OutOfRange uint64 `json:"out_of_range"`
	Indexed    uint64 `json:"indexed"`
	Head       uint64 `json:"head"`
}

// BucketCounts counts one bucket's records by decision.
type BucketCounts struct {
	Start  time.Time `json:"start"`
	Total  uint64    `json:"total"`
	Allow  uint64    `json:"allow"`
	Deny   uint64    `json:"deny"`
	DryRun uint64    `json:"dry_run"`
	Error  uint64    `json:"error"`
	// Unavailable and Gap count aggregated and gap records (one each,
	// whatever their count or dropped field says).
	Unavailable uint64 `json:"unavailable"`
	Gap         uint64 `json:"gap"`
}

// RuleCounts counts one rule's records: per bucket, and in all by decision.
type RuleCounts struct {
	Rule   string   `json:"rule"`
	Total  uint64   `json:"total"`
	Deny   uint64   `json:"deny"`
	DryRun uint64   `json:"dry_run"`
	Counts []uint64 `json:"counts"`
}

// Duration is a time.Duration that marshals as whole seconds.
type Duration time.Duration

// MarshalJSON writes the duration in seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).Seconds())
}

// UnmarshalJSON reads seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(s * float64(time.Second))
	return nil
}

// ValueCount is a column value and how many records hold it.
type ValueCount struct {
	Value string `json:"value"`
	Count uint64 `json:"count"`
}

// Integrity is what a searcher verified of the log: the records from seq 1
// through Verified are canonical, in seq order, and their tree hashes
// recomputed from them are the stored Merkle tree's (so the inclusion
// proofs the distributor serves for them are right); Head is the tree's
// size and root there. Checkpoint is the latest signed checkpoint once the
// verified tree reaches it and gives its root. Problem is set, with the
// seq it concerns, when a record failed; records past it are still
// indexed and shown but are not Verified.
type Integrity struct {
	Method     string            `json:"method"`
	Verified   uint64            `json:"verified"`
	Head       Head              `json:"head"`
	Checkpoint *CheckpointReport `json:"checkpoint,omitempty"`
	Checked    time.Time         `json:"checked,omitzero"`
	BadSeq     uint64            `json:"bad_seq,omitempty"`
	Problem    string            `json:"problem,omitempty"`
}
