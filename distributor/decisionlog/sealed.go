package decisionlog

// Seal is the stored line of r at seq (RFC 8785 canonical JSON with its
// seq, no newline): what a log backend other than this package's files
// stores and hashes (LeafHash) for record seq.
func Seal(r Record, seq uint64) ([]byte, error) {
	line, err := seal(r, seq)
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}

// DedupeKey is the key under which a retried record (same received_by and
// decision_id) is recognised; ok is false for a record without a
// decision_id, which is never deduplicated.
func DedupeKey(r Record) (key []byte, ok bool) {
	k, ok := keyOf(r)
	if !ok {
		return nil, false
	}
	return k[:], true
}
