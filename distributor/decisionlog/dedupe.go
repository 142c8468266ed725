package decisionlog

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"os"
)

// FieldDecisionID is the client's identifier of a decision; with the
// uploader it identifies a record for deduplication.
const FieldDecisionID = "decision_id"

// dedupeKey is a truncated SHA-256 of uploader and decision id: 128 bits
// keep accidental collisions out of reach, and the uploader part keeps one
// proxy from suppressing another's records by reusing its ids.
type dedupeKey [16]byte

// keyOf returns the dedupe key of a stamped record, if it has a decision id.
func keyOf(r Record) (dedupeKey, bool) {
	var by, id string
	if json.Unmarshal(r[FieldReceivedBy], &by) != nil || json.Unmarshal(r[FieldDecisionID], &id) != nil || id == "" {
		return dedupeKey{}, false
	}
	return makeKey(by, id), true
}

func makeKey(by, id string) dedupeKey {
	h := sha256.New()
	h.Write([]byte(by))
	h.Write([]byte{0})
	h.Write([]byte(id))
	var k dedupeKey
	copy(k[:], h.Sum(nil))
	return k
}

// dedupe remembers the most recent keys, oldest evicted first. It is
// guarded by the log's commit lock.
type dedupe struct {
	set   map[dedupeKey]struct{}
	ring  []dedupeKey
	next  int
	limit int
}

func newDedupe(window int) *dedupe {
	if window <= 0 {
		return nil
	}
	return &dedupe{set: make(map[dedupeKey]struct{}, min(window, 1<<16)), limit: window}
}

func (d *dedupe) has(k dedupeKey) bool {
	if d == nil {
		return false
	}
	_, ok := d.set[k]
	return ok
}

func (d *dedupe) add(k dedupeKey) {
	if d == nil || d.has(k) {
		return
	}
	if len(d.ring) < d.limit {
		d.ring = append(d.ring, k)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % d.limit
	}
	d.set[k] = struct{}{}
}

// load adds the keys of a segment's records (at open).
func (d *dedupe) load(path string) {
	if d == nil {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<30)
	for sc.Scan() {
		line := sc.Bytes()
		if id := storedString(line, FieldDecisionID); id != "" {
			d.add(makeKey(storedString(line, FieldReceivedBy), id))
		}
	}
}
