package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
	"github.com/meshguard/meshguard/internal/jose"
)

// SharedCache tells the worker VMs of a proxy which tokens one of them has
// already verified, so N workers cost one signature check per token instead
// of N. Only the signature check is shared: a worker that finds a token here
// still decodes it and checks issuer, subject, audience and times itself,
// so an entry can never widen what a token grants.
//
// Entries live in a fixed number of slots (shared data has no delete, so
// bounding the keys bounds the memory: slots × about 90 bytes). A slot is
// chosen by the token's SHA-256 and holds the full SHA-256, which a hit must
// equal: a different token can only collide in the slot, which overwrites
// or misses, never hits. An entry also names the signing key's kid and
// fingerprint, honoured only while the reader's own key set holds that very
// key (rotation or a removed key turns it into a miss), and the token's exp,
// past which it is ignored.
//
// The entries are trusted like the rest of the plugin's shared data: any VM
// with the same vm_id in the same proxy can write them.
type SharedCache struct {
	store  shared.Store
	prefix string
	slots  uint64
	// Hits and Misses count lookups.
	Hits, Misses uint64
}

// sharedVersion starts every entry; bump it when the layout changes.
const sharedVersion = 1

// entry layout: version | sha256(token) | exp (unix seconds, LE) | key
// fingerprint | kid.
const sharedHeader = 1 + sha256.Size + 8 + 32

// NewSharedCache returns a cache in store under keys prefix+slot. slots
// bounds the entries (0 disables sharing).
func NewSharedCache(store shared.Store, prefix string, slots int) *SharedCache {
	return &SharedCache{store: store, prefix: prefix, slots: uint64(max(slots, 0))}
}

func (c *SharedCache) slotKey(sum *[sha256.Size]byte) string {
	return c.prefix + strconv.FormatUint(binary.LittleEndian.Uint64(sum[:8])%c.slots, 36)
}

// verified reports whether a worker recorded sum (a token's SHA-256) as
// verified by key, with the expiry not passed at now.
func (c *SharedCache) verified(sum *[sha256.Size]byte, key *jose.Key, now time.Time) bool {
	if c == nil || c.slots == 0 {
		return false
	}
	v, _, err := c.store.Get(c.slotKey(sum))
	fp := key.Fingerprint()
	ok := err == nil && len(v) == sharedHeader+len(key.KID) && v[0] == sharedVersion &&
		bytes.Equal(v[1:1+sha256.Size], sum[:]) &&
		now.Before(time.Unix(int64(binary.LittleEndian.Uint64(v[1+sha256.Size:])), 0).Add(Leeway)) &&
		bytes.Equal(v[1+sha256.Size+8:sharedHeader], fp[:]) &&
		string(v[sharedHeader:]) == key.KID
	if ok {
		c.Hits++
	} else {
		c.Misses++
	}
	return ok
}

// record stores that the token with SHA-256 sum was verified by key.
func (c *SharedCache) record(sum *[sha256.Size]byte, key *jose.Key, exp time.Time) {
	if c == nil || c.slots == 0 {
		return
	}
	v := make([]byte, 0, sharedHeader+len(key.KID))
	v = append(v, sharedVersion)
	v = append(v, sum[:]...)
	v = binary.LittleEndian.AppendUint64(v, uint64(exp.Unix()))
	fp := key.Fingerprint()
	v = append(v, fp[:]...)
	v = append(v, key.KID...)
	_ = c.store.Set(c.slotKey(sum), v, 0) // best effort: a lost write costs a signature check
}

// signatureChecker verifies token signatures, consulting a SharedCache.
type signatureChecker struct {
	shared *SharedCache
	// Signatures counts signature verifications this VM ran.
	Signatures uint64
}

func (s *signatureChecker) sharedHits() uint64 {
	if s.shared == nil {
		return 0
	}
	return s.shared.Hits
}

// check verifies j (the parsed token) with set, unless another worker
// already verified the same token with the same key.
func (s *signatureChecker) check(token string, j *jose.JWS, set *jose.KeySet, exp, now time.Time) error {
	if set.Len() == 0 {
		return verifySignature(j, set)
	}
	var sum [sha256.Size]byte
	if s.shared != nil && s.shared.slots > 0 {
		sum = sha256.Sum256([]byte(token))
		if key, ok := set.Lookup(j.Header.Kid); ok && key.Allows(j.Header.Alg) && s.shared.verified(&sum, key, now) {
			return nil
		}
	}
	s.Signatures++
	key, err := j.Verify(set, allowedAlgs...)
	if err != nil {
		return joseError(err)
	}
	if s.shared != nil {
		s.shared.record(&sum, key, exp)
	}
	return nil
}
