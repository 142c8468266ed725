// Package distribution is one worker VM's part in keeping a proxy's policy
// bundle current from a distributor channel: a lease in shared data elects
// the one worker that polls, the poll asks with the ETag of what is
// installed, and the worker that fetched a bundle hands it to the others
// through shared data, announcing its revision in a small key every worker
// reads before each decision. It is SDK-free: the filter's adapter sends
// the poll and reads its answer.
package distribution

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/lease"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// Shared-data keys (per vm_id, i.e. per plugin in a proxy), + channel.
const (
	keyBundle = "meshguard/bundle/"   // revision (8 bytes LE) + the last verified bundle
	keyRev    = "meshguard/revision/" // its revision (8 bytes LE), read per request
	keyETag   = "meshguard/etag/"     // ETag of that bundle
	keyLease  = "meshguard/lease/"    // poll lease
)

// MaxBundleBytes bounds a polled bundle's body.
const MaxBundleBytes = verify.DefaultMaxCompressed

// Channel is one worker's view of a distributor channel. Not for
// concurrent use (a VM is single-threaded).
type Channel struct {
	store shared.Store
	cfg   *config.Distributor
	lease *lease.Lease

	keyBundle, keyRev, keyETag string

	next    time.Time
	polling bool
	etag    string
	cas     uint32 // of the shared bundle entry last looked at
}

// New returns the channel cfg names for the worker owner (unique per VM)
// over store.
func New(store shared.Store, cfg *config.Distributor, owner uint64) *Channel {
	ch := cfg.Channel
	return &Channel{store: store, cfg: cfg, lease: lease.New(store, keyLease+ch, owner, 3*cfg.PollInterval.Duration),
		keyBundle: keyBundle + ch, keyRev: keyRev + ch, keyETag: keyETag + ch}
}

// Config returns the channel's configuration.
func (c *Channel) Config() *config.Distributor { return c.cfg }

// Announced returns the revision the worker that last fetched a bundle
// announced (0 before any): one small shared-data read, cheap enough for
// every request.
func (c *Channel) Announced() uint64 {
	v, _, err := c.store.Get(c.keyRev)
	if err != nil || len(v) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(v)
}

// Shared returns the bundle another worker handed over, when the entry
// changed since this worker last looked and its revision is above have.
// Every worker verifies it again before installing it.
func (c *Channel) Shared(have uint64) ([]byte, bool) {
	data, cas, err := c.store.Get(c.keyBundle)
	if err != nil || cas == c.cas {
		return nil, false
	}
	c.cas = cas
	if len(data) < 8 || binary.LittleEndian.Uint64(data) <= have {
		return nil, false
	}
	return data[8:], true
}

// Due reports whether this worker polls now: the poll interval has passed,
// no poll is in flight and this worker holds (or renewed) the lease. A due
// poll moves the schedule on, whatever the lease says.
func (c *Channel) Due(now time.Time) (bool, error) {
	if c.polling || now.Before(c.next) {
		return false, nil
	}
	c.next = now.Add(c.cfg.PollInterval.Duration)
	ok, err := c.lease.Acquire(now)
	if err != nil {
		return false, fmt.Errorf("poll lease: %w", err)
	}
	return ok, nil
}

// Request returns the poll's request headers: GET of the channel with the
// ETag of the installed bundle (installed says there is one; the ETag a
// worker shared is used only then), and the token when configured.
func (c *Channel) Request(installed bool) [][2]string {
	d := c.cfg
	hdrs := [][2]string{{":method", "GET"}, {":path", d.BundlePath + d.Channel}, {":authority", d.Authority}, {"accept", verify.MediaType}}
	if c.etag == "" && installed {
		if e, _, err := c.store.Get(c.keyETag); err == nil {
			c.etag = string(e)
		}
	}
	if c.etag != "" {
		hdrs = append(hdrs, [2]string{"if-none-match", c.etag})
	}
	if d.Token != "" {
		hdrs = append(hdrs, [2]string{"authorization", "Bearer " + d.Token})
	}
	return hdrs
}

// Polling marks a poll in flight (true once it was sent, false once it
// was answered or failed), so polls never overlap.
func (c *Channel) Polling(inFlight bool) { c.polling = inFlight }

// ErrNotModified: the distributor answered 304; the installed bundle is
// current.
var ErrNotModified = errors.New("not modified")

// Answer says what to do with a poll's answer (status, body size): nil to
// read the body and install it, ErrNotModified, or why it is refused.
func (c *Channel) Answer(status string, bodySize int) error {
	switch status {
	case "304":
		return ErrNotModified
	case "200":
	default:
		return fmt.Errorf("distributor answered %s", status)
	}
	if bodySize <= 0 || bodySize > MaxBundleBytes {
		return fmt.Errorf("body of %d bytes refused (1 to %d)", bodySize, MaxBundleBytes)
	}
	return nil
}

// Installed hands a bundle this worker fetched and installed (revision
// rev, answered with etag) to the other workers: the bundle first, its
// revision announced last, so a worker that sees the announcement finds
// the bundle.
func (c *Channel) Installed(rev uint64, bundle []byte, etag string) error {
	c.etag = etag
	buf := make([]byte, 8, 8+len(bundle))
	binary.LittleEndian.PutUint64(buf, rev)
	buf = append(buf, bundle...)
	if err := c.store.Set(c.keyBundle, buf, 0); err != nil {
		return fmt.Errorf("sharing bundle revision %d: %w", rev, err)
	}
	if _, cas, err := c.store.Get(c.keyBundle); err == nil {
		c.cas = cas
	}
	if err := c.store.Set(c.keyRev, buf[:8], 0); err != nil {
		return fmt.Errorf("announcing bundle revision %d: %w", rev, err)
	}
	_ = c.store.Set(c.keyETag, []byte(etag), 0) // best effort: costs one full download
	return nil
}
