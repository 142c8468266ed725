package decisionlog

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// GenesisHash is the prev_hash of the first record.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Head identifies the last record of a log.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ChainError says exactly where a log stops being trustworthy.
type ChainError struct {
	File    string // segment file name (or "HEAD", or a stream name)
	Line    int    // 1-based line in File, 0 when not about a line
	Seq     uint64 // the sequence number expected at that place
	Problem string
}

func (e *ChainError) Error() string {
	switch {
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: at seq %d: %s", e.File, e.Line, e.Seq, e.Problem)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Problem)
	}
}

// ErrTruncated is wrapped by errors about a log that ends before its HEAD.
var ErrTruncated = errors.New("decision log truncated")

// hashRecord is the chain hash of a record that already holds seq and prev_hash.
func hashRecord(r Record) (string, []byte, error) {
	buf, err := r.appendCanonical(make([]byte, 0, 512), FieldHash)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), buf, nil
}

// seal adds seq, prev_hash and hash to r and returns the stored line
// (canonical JSON plus newline) and the hash. Each value is canonicalised
// once: the hash input (every member but hash) and the line (all members)
// are joined from the same encoded members.
func seal(r Record, seq uint64, prev string) ([]byte, string, error) {
	keys := make([]string, 0, len(r)+2)
	for k := range r {
		if k != FieldSeq && k != FieldPrevHash && k != FieldHash {
			keys = append(keys, k)
		}
	}
	keys = append(keys, FieldSeq, FieldPrevHash)
	sort.Strings(keys)
	enc := make([]byte, 0, 512)
	ends := make([]int, 0, len(keys)) // end offset of each member in enc
	hashAt := len(keys)               // index of the first member sorting after "hash"
	for i, k := range keys {
		if hashAt == len(keys) && k > FieldHash {
			hashAt = i
		}
		enc = appendString(enc, k)
		enc = append(enc, ':')
		switch k {
		case FieldSeq:
			enc = strconv.AppendUint(enc, seq, 10)
		case FieldPrevHash:
			enc = appendString(enc, prev)
		default:
			var err error
			if enc, err = appendValue(enc, r[k], 0); err != nil {
				return nil, "", fmt.Errorf("field %q: %w", k, err)
			}
		}
		ends = append(ends, len(enc))
	}
	member := func(i int) []byte {
		start := 0
		if i > 0 {
			start = ends[i-1]
		}
		return enc[start:ends[i]]
	}
	join := func(out []byte, hashMember []byte) []byte {
		out = append(out, '{')
		n := 0
		for i := range keys {
			if i == hashAt && hashMember != nil {
				if n > 0 {
					out = append(out, ',')
				}
				out = append(out, hashMember...)
				n++
			}
			if n > 0 {
				out = append(out, ',')
			}
			out = append(out, member(i)...)
			n++
		}
		if hashAt == len(keys) && hashMember != nil {
			if n > 0 {
				out = append(out, ',')
			}
			out = append(out, hashMember...)
		}
		return append(out, '}')
	}
	sum := sha256.Sum256(join(make([]byte, 0, len(enc)+len(keys)+2), nil))
	h := hex.EncodeToString(sum[:])
	hm := append(appendString(make([]byte, 0, 80), FieldHash), ':', '"')
	hm = append(append(hm, h...), '"')
	line := join(make([]byte, 0, len(enc)+len(keys)+len(hm)+3), hm)
	return append(line, '\n'), h, nil
}

// stored is the chain part of a stored line.
type stored struct {
	Seq      uint64
	PrevHash string
	Hash     string
}

// parseStored reads a stored line by exact member names. The line must be
// the canonical encoding of the record it holds: anything else (duplicate
// names, re-escaped text, reordered members) was not written by the log.
func parseStored(line []byte) (Record, stored, error) {
	var rec Record
	if err := json.Unmarshal(line, &rec); err != nil {
		return nil, stored{}, fmt.Errorf("unreadable record (edited or corrupted): %v", err)
	}
	var s stored
	seq, okSeq := rec[FieldSeq]
	if !okSeq || json.Unmarshal(seq, &s.Seq) != nil || s.Seq == 0 {
		return nil, stored{}, errors.New("record has no valid seq (edited or corrupted)")
	}
	if json.Unmarshal(rec[FieldPrevHash], &s.PrevHash) != nil || json.Unmarshal(rec[FieldHash], &s.Hash) != nil {
		return nil, stored{}, errors.New("record has no valid prev_hash/hash (edited or corrupted)")
	}
	canon, err := rec.Canonical()
	if err != nil {
		return nil, stored{}, fmt.Errorf("record cannot be canonicalised: %v", err)
	}
	if !bytes.Equal(canon, line) {
		return nil, stored{}, errors.New("record is not in the canonical form the log writes (edited)")
	}
	return rec, s, nil
}

// ChainVerifier checks stored lines one after another. The zero value
// expects the log to start at seq 1 with the genesis prev_hash;
// VerifierFrom starts after a retention anchor.
type ChainVerifier struct {
	next uint64
	prev string
	// Count is the number of records verified so far.
	Count uint64
}

// VerifierFrom expects the log to continue after anchor (the last record
// retention removed); the zero anchor is the start of the log.
func VerifierFrom(anchor Head) ChainVerifier {
	if anchor.Seq == 0 {
		return ChainVerifier{}
	}
	return ChainVerifier{next: anchor.Seq + 1, prev: anchor.Hash}
}

// Head is the last verified record (seq 0 and the genesis hash before any).
func (v *ChainVerifier) Head() Head {
	if v.next == 0 {
		return Head{Seq: 0, Hash: GenesisHash}
	}
	return Head{Seq: v.next - 1, Hash: v.prev}
}

// Line verifies one stored line (without its newline). Errors describe the
// problem; the caller adds the file and line.
func (v *ChainVerifier) Line(line []byte) (Head, error) {
	if v.next == 0 {
		v.next, v.prev = 1, GenesisHash
	}
	rec, s, err := parseStored(line)
	if err != nil {
		return Head{}, err
	}
	if s.Seq != v.next {
		if s.Seq > v.next {
			return Head{}, fmt.Errorf("found seq %d: records %d..%d are missing (deleted) or out of order", s.Seq, v.next, s.Seq-1)
		}
		return Head{}, fmt.Errorf("found seq %d again or out of order (reordered or duplicated records)", s.Seq)
	}
	h, _, err := hashRecord(rec)
	if err != nil {
		return Head{}, fmt.Errorf("record cannot be canonicalised: %v", err)
	}
	if h != s.Hash {
		return Head{}, fmt.Errorf("hash mismatch: record content was edited (stored %q, computed %q)", s.Hash, h)
	}
	if s.PrevHash != v.prev {
		return Head{}, fmt.Errorf("prev_hash %q does not match the hash %q of seq %d: the chain was rewritten from here or the previous record replaced", s.PrevHash, v.prev, v.next-1)
	}
	v.next++
	v.prev = h
	v.Count++
	return Head{Seq: s.Seq, Hash: h}, nil
}

// VerifyReader verifies every line read from r, named name in errors. It
// reports an incomplete last line (a torn or cut write) as truncation.
func (v *ChainVerifier) VerifyReader(name string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			if line[len(line)-1] != '\n' {
				return &ChainError{File: name, Line: lineNo, Seq: v.Head().Seq + 1,
					Problem: fmt.Sprintf("incomplete last line (%d bytes without newline): %v", len(line), ErrTruncated)}
			}
			if _, verr := v.Line(line[:len(line)-1]); verr != nil {
				return &ChainError{File: name, Line: lineNo, Seq: v.Head().Seq + 1, Problem: verr.Error()}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: read: %w", name, err)
		}
	}
}

// CheckHead compares the end of the verified chain with an independently
// recorded head (the HEAD file or a server's answer).
func (v *ChainVerifier) CheckHead(name string, want Head) error {
	got := v.Head()
	switch {
	case got.Seq < want.Seq:
		return &ChainError{File: name, Problem: fmt.Sprintf("log ends at seq %d but the head is seq %d: records %d..%d were removed from the tail: %v",
			got.Seq, want.Seq, got.Seq+1, want.Seq, ErrTruncated)}
	case got.Seq > want.Seq:
		return &ChainError{File: name, Problem: fmt.Sprintf("log continues to seq %d past the head seq %d (head rolled back or records appended outside the distributor)", got.Seq, want.Seq)}
	case got.Hash != want.Hash:
		return &ChainError{File: name, Problem: fmt.Sprintf("hash of seq %d is %q but the head says %q (tail rewritten)", got.Seq, got.Hash, want.Hash)}
	}
	return nil
}

// Report summarises a successful verification.
type Report struct {
	// Pruned is how many records retention removed before the first kept.
	Pruned   uint64 `json:"pruned,omitempty"`
	Records  uint64 `json:"records"`
	Segments int    `json:"segments"`
	Head     Head   `json:"head"`
}

// VerifyDir verifies a log directory offline: every segment in order, the
// chain across segments, segment names against their first seq, and the
// chain's end against HEAD. The first problem is returned as a *ChainError.
func VerifyDir(dir string) (Report, error) {
	segs, err := segments(dir)
	if err != nil {
		return Report{}, err
	}
	anchor, err := readAnchor(dir)
	if err != nil {
		return Report{}, &ChainError{File: anchorFile, Problem: err.Error()}
	}
	segs = retainedSegments(segs, anchor)
	// Retention removed records 1..anchor.Seq; the rest chains on.
	v := VerifierFrom(anchor)
	var torn *TornTailError
	for i, s := range segs {
		if v.Head().Seq+1 != s.first {
			// A whole segment gone or renamed: point at it before reading.
			if s.first > v.Head().Seq+1 {
				return Report{}, &ChainError{File: s.name, Seq: v.Head().Seq + 1,
					Problem: fmt.Sprintf("segment starts at seq %d but seq %d was expected: records %d..%d are missing (a segment was deleted)", s.first, v.Head().Seq+1, v.Head().Seq+1, s.first-1)}
			}
			return Report{}, &ChainError{File: s.name, Seq: v.Head().Seq + 1,
				Problem: fmt.Sprintf("segment starts at seq %d but seq %d was expected (segments overlap or were renamed)", s.first, v.Head().Seq+1)}
		}
		f, err := os.Open(filepath.Join(dir, s.name))
		if err != nil {
			return Report{}, err
		}
		var src io.Reader = f
		if i == len(segs)-1 {
			// An unterminated last line of the last segment is a write the
			// crash interrupted; Open cuts it. Verify what precedes it.
			if n, complete, terr := tornBytes(f); terr == nil && n > 0 {
				torn = &TornTailError{File: s.name, Offset: complete, Bytes: n}
				src = io.LimitReader(f, complete)
			}
		}
		err = v.VerifyReader(s.name, src)
		f.Close()
		if err != nil {
			return Report{}, err
		}
	}
	head, err := readHead(dir)
	if err != nil {
		return Report{}, &ChainError{File: headFile, Problem: err.Error()}
	}
	if err := v.CheckHead(headFile, head); err != nil {
		var ce *ChainError
		if torn != nil && errors.As(err, &ce) {
			ce.Problem += fmt.Sprintf("; %s ends in an incomplete last line of %d bytes at offset %d, so acknowledged records were cut", torn.File, torn.Bytes, torn.Offset)
		}
		return Report{}, err
	}
	rep := Report{Records: v.Count, Segments: len(segs), Head: v.Head(), Pruned: anchor.Seq}
	if torn != nil {
		torn.Head = rep.Head
		return rep, torn
	}
	return rep, nil
}

// TornTailError reports a log that is intact up to its HEAD but whose last
// segment ends in an interrupted write (bytes after the last complete
// record, never acknowledged). It is recoverable, not tampering: Open cuts
// the bytes off. The Report returned with it is valid.
type TornTailError struct {
	File   string // the last segment
	Offset int64  // where the incomplete line starts
	Bytes  int64  // its length
	Head   Head   // the verified end of the log
}

func (e *TornTailError) Error() string {
	return fmt.Sprintf("%s: %d bytes after offset %d are an interrupted write after seq %d (recoverable: the distributor cuts them off when it starts)",
		e.File, e.Bytes, e.Offset, e.Head.Seq)
}

// tornBytes measures an unterminated last line of f and leaves f at its
// start.
func tornBytes(f *os.File) (n, complete int64, err error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, 0, err
	}
	size := fi.Size()
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		start := max(0, end-int64(len(buf)))
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			complete = start + int64(i) + 1
			break
		}
		end = start
	}
	_, err = f.Seek(0, io.SeekStart)
	return size - complete, complete, err
}
