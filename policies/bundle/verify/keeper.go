package verify

import (
	"fmt"
	"sync"
)

// Keeper is the one anti-rollback rule for a series of bundles (a proxy's
// policy, a distributor channel): a bundle is accepted only when its
// revision is above the last accepted revision, and a failed offer changes
// nothing, so the last good bundle stays. "Min revision" means one thing
// everywhere: the last accepted revision, which a new bundle must exceed
// (Options.MinRevision, the guard's policy.minRevision, `meshguard policy
// verify --min-revision`).
//
// The Keeper holds revisions, not bundles: what a caller keeps of an
// accepted bundle (an engine, stored bytes) is its own. It is safe for
// concurrent use and serialises offers.
type Keeper struct {
	mu     sync.Mutex
	last   uint64
	digest string
}

// NewKeeper returns a keeper whose floor is the last revision accepted
// before it (0: none; a configured minimum or a persisted latest revision).
func NewKeeper(floor uint64) *Keeper { return &Keeper{last: floor} }

// Revision returns the last accepted revision (the floor before the first).
func (k *Keeper) Revision() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last
}

// Offer verifies data and, when it is acceptable, commits it. check gets
// the last accepted revision, verifies data with it as
// Options.MinRevision and returns the bundle's revision, changing nothing;
// commit (optional) then does what acceptance means to the caller
// (swapping in the engine, storing the bytes). commit runs only for a
// revision above the last accepted one, checked here again whatever check
// did, and the revision becomes the last accepted one only when commit
// succeeds. Offering the bytes last accepted again changes nothing and is
// not an error (changed is false and neither function runs).
func (k *Keeper) Offer(data []byte, check func(last uint64) (revision uint64, err error), commit func() error) (changed bool, err error) {
	digest := DigestOf(data)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.digest != "" && digest == k.digest {
		return false, nil
	}
	rev, err := check(k.last)
	if err != nil {
		return false, err
	}
	if rev <= k.last {
		return false, fmt.Errorf("%w: revision %d is not above the accepted revision %d", ErrRollback, rev, k.last)
	}
	if commit != nil {
		if err := commit(); err != nil {
			return false, err
		}
	}
	k.last, k.digest = rev, digest
	return true, nil
}
