package decisionlog

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpointFile holds the latest signed checkpoint, replacing the
// unsigned HEAD of the hash-chained log.
const checkpointFile = "checkpoint"

// Checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint):
// the log's origin line, its tree size and the base64 RFC 6962 root hash
// of the first Size records, as the body of a signed note
// (https://c2sp.org/signed-note) whose Ed25519 key is named like the
// origin.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   tlog.Hash
	// Signed is the whole signed note (empty before signing).
	Signed []byte
}

// Body is the note text: origin, size and root, one a line.
func (c Checkpoint) Body() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ErrCheckpoint is wrapped by every error about a checkpoint that does
// not parse or verify.
var ErrCheckpoint = errors.New("checkpoint not valid")

// parseBody reads a checkpoint note's text. Extension lines after the
// root are allowed by the format and ignored.
func parseBody(text string) (Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: want an origin, a tree size and a root hash line", ErrCheckpoint)
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	size, err := strconv.ParseUint(strings.TrimSuffix(lines[1], "\n"), 10, 64)
	if origin == "" || err != nil || strconv.FormatUint(size, 10) != strings.TrimSuffix(lines[1], "\n") {
		return Checkpoint{}, fmt.Errorf("%w: bad origin or tree size line", ErrCheckpoint)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(raw) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("%w: root hash is not %d bytes of base64", ErrCheckpoint, tlog.HashSize)
	}
	c := Checkpoint{Origin: origin, Size: size}
	copy(c.Root[:], raw)
	return c, nil
}

// OpenCheckpoint verifies a signed checkpoint against the log's key: the
// signature must be the key's and the origin the key's name.
func OpenCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	if v == nil {
		return Checkpoint{}, fmt.Errorf("%w: no verifier key", ErrCheckpoint)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	c, err := parseBody(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: origin %q is not the key's log %q", ErrCheckpoint, c.Origin, v.Name())
	}
	c.Signed = signed
	return c, nil
}

// Key is the log's checkpoint signing key: its own Ed25519 key, never a
// bundle key. Its name is the checkpoint origin.
type Key struct {
	Signer   note.Signer
	Verifier note.Verifier
	// Public is the verifier key text (name+hash+base64) auditors pin.
	Public string
}

// NewKey generates a key for the log named origin.
func NewKey(origin string) (Key, string, error) {
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return Key{}, "", fmt.Errorf("checkpoint key: %w", err)
	}
	k, err := ParseKey(skey)
	return k, skey, err
}

// ParseKey reads a private note key (PRIVATE+KEY+name+hash+base64).
func ParseKey(skey string) (Key, error) {
	skey = strings.TrimSpace(skey)
	s, err := note.NewSigner(skey)
	if err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	// The verifier key is derived from the seed: the key text is
	// PRIVATE+KEY+name+hash+base64(0x01 || seed).
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return Key{}, errors.New("checkpoint key: not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	return Key{Signer: s, Verifier: v, Public: vkey}, nil
}

// LoadOrCreateKey reads the private key at path, or generates one for
// origin there (mode 0600, with path+".pub" holding the verifier key)
// when the file does not exist.
func LoadOrCreateKey(path, origin string) (Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ParseKey(string(b))
		if err != nil {
			return Key{}, fmt.Errorf("%s: %w", path, err)
		}
		if origin != "" && k.Signer.Name() != origin {
			return Key{}, fmt.Errorf("%s: the key is for log %q, the configured log name is %q", path, k.Signer.Name(), origin)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	k, skey, err := NewKey(origin)
	if err != nil {
		return Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	if _, err := f.WriteString(skey + "\n"); err != nil {
		f.Close()
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	if err := f.Close(); err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	if err := os.WriteFile(path+".pub", []byte(k.Public+"\n"), 0o644); err != nil {
		return Key{}, fmt.Errorf("checkpoint key: %w", err)
	}
	return k, nil
}

// ParseVerifier reads a verifier key: the text itself or a file holding it.
func ParseVerifier(keyOrFile string) (note.Verifier, error) {
	text := strings.TrimSpace(keyOrFile)
	if b, err := os.ReadFile(keyOrFile); err == nil {
		text = strings.TrimSpace(string(b))
	}
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key %q: %w (want name+hash+base64, as in the .pub file)", keyOrFile, err)
	}
	return v, nil
}

// Consistent checks that checkpoint newer extends older: same log, not
// smaller, and (tlog.CheckTree) the consistency proof p proves the first
// older.Size records of newer's tree are older's tree. The error says
// which of truncation, fork or rewrite it found.
func Consistent(older, newer Checkpoint, p tlog.TreeProof) error {
	switch {
	case older.Origin != newer.Origin:
		return fmt.Errorf("%w: the checkpoints are of different logs (%q, %q)", ErrInconsistent, older.Origin, newer.Origin)
	case newer.Size < older.Size:
		return fmt.Errorf("%w: the log now holds %d records but the earlier checkpoint covers %d: records %d..%d were removed (truncated or rolled back)",
			ErrInconsistent, newer.Size, older.Size, newer.Size+1, older.Size)
	case newer.Size == older.Size:
		if newer.Root != older.Root {
			return fmt.Errorf("%w: two checkpoints of %d records with different roots (%s, %s), both signed by the log's key: the log was rewritten or forked",
				ErrInconsistent, older.Size, older.Root, newer.Root)
		}
		return nil
	case older.Size == 0:
		return nil
	}
	if err := tlog.CheckTree(p, int64(newer.Size), newer.Root, int64(older.Size), older.Root); err != nil {
		return fmt.Errorf("%w: the tree of %d records does not extend the earlier tree of %d (%v): records 1..%d were rewritten or the log forked",
			ErrInconsistent, newer.Size, older.Size, err, older.Size)
	}
	return nil
}

// ErrInconsistent is wrapped by errors about a log that does not extend a
// checkpoint it signed earlier.
var ErrInconsistent = errors.New("decision log not consistent with the earlier checkpoint")
