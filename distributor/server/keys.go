package server

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/policies/bundle"
)

// errKeysUnavailable is wrapped by every publish refused because there is
// no usable key set (503): none configured, or the keys file deleted,
// emptied or corrupted.
var errKeysUnavailable = errors.New("bundle verification keys unavailable")

// KeyVerifier verifies signed bundles (policies/bundle) against the JWK Set
// in a file, re-reading the file whenever it changes so keys can be rotated
// without a restart. It fails closed: while the file is missing, empty or
// unreadable every verification fails with errKeysUnavailable (publishes
// answer 503, /readyz is not ready) instead of trusting the last good set,
// since removing a key is how an operator revokes it.
type KeyVerifier struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	keys  jwk.Set // nil while the file is unusable
	err   error
	stamp keysStamp
}

// keysStamp identifies one version of the keys file.
type keysStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func stampOf(fi os.FileInfo) keysStamp {
	st := keysStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = uint64(sys.Ino)
	}
	return st
}

// NewKeyVerifier loads the JWK Set in path; a file that is unusable at
// start is an error. log receives key-set changes (nil: slog.Default()).
func NewKeyVerifier(path string, log *slog.Logger) (*KeyVerifier, error) {
	if log == nil {
		log = slog.Default()
	}
	v := &KeyVerifier{path: path, log: log}
	if _, err := v.current(); err != nil {
		return nil, err
	}
	return v, nil
}

// load reads and parses the file.
func (v *KeyVerifier) load() (jwk.Set, error) {
	data, err := os.ReadFile(v.path)
	if err != nil {
		return nil, fmt.Errorf("bundle keys: %w", err)
	}
	keys, err := bundle.ParseKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("bundle keys %s: %w", v.path, err)
	}
	if keys.Len() == 0 {
		return nil, fmt.Errorf("bundle keys %s: the key set is empty", v.path)
	}
	return keys, nil
}

// current returns the key set of the file as it is now (one stat per call,
// a re-read when the file changed).
func (v *KeyVerifier) current() (jwk.Set, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fi, err := os.Stat(v.path)
	var stamp keysStamp
	if err == nil {
		stamp = stampOf(fi)
		if v.keys != nil && stamp == v.stamp {
			return v.keys, nil
		}
	}
	var keys jwk.Set
	if err == nil {
		keys, err = v.load()
	} else {
		err = fmt.Errorf("bundle keys: %w", err)
	}
	if err != nil {
		if v.err == nil || v.err.Error() != err.Error() {
			v.log.Error("bundle keys unusable: refusing every publish until the file is fixed", "file", v.path, "err", err)
		}
		v.keys, v.err, v.stamp = nil, err, keysStamp{}
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	if v.err != nil {
		v.log.Info("bundle keys usable again", "file", v.path, "keys", keys.Len())
	} else if v.keys != nil {
		v.log.Info("bundle keys reloaded", "file", v.path, "keys", keys.Len())
	}
	v.keys, v.err, v.stamp = keys, nil, stamp
	return keys, nil
}

// Err reports why the key set is unusable now (nil when it is usable).
func (v *KeyVerifier) Err() error {
	_, err := v.current()
	return err
}

// Verify implements bundles.Verifier with policies/bundle.Open: every file
// verified, and the engine image proxies enforce must be what the policy
// sources auditors read compile to.
func (v *KeyVerifier) Verify(data []byte, scope string, last uint64) (bundles.Verified, error) {
	keys, err := v.current()
	if err != nil {
		return bundles.Verified{}, err
	}
	if err := singleStream(data, bundle.DefaultMaxUncompressed); err != nil {
		return bundles.Verified{}, err
	}
	b, err := bundle.Open(data, bundle.VerifyOptions{Keys: keys, MinRevision: last, Scope: scope, Now: time.Now()})
	if err != nil {
		if errors.Is(err, bundle.ErrRollback) {
			return bundles.Verified{}, fmt.Errorf("%w: %w", bundles.ErrConflict, err)
		}
		return bundles.Verified{}, err
	}
	return bundles.Verified{Revision: b.Manifest.Revision, Created: b.Manifest.Created, Expires: b.Manifest.Expires, KeyID: b.Manifest.KeyID}, nil
}

// singleStream checks that data is exactly one gzip member: bytes after it
// (a second member, padding, anything) would give the same signed bundle
// another digest, so a replay could pass for a new upload.
func singleStream(data []byte, max int64) error {
	br := bytes.NewReader(data)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("bundle is not gzip: %w", err)
	}
	zr.Multistream(false)
	n, err := io.Copy(io.Discard, io.LimitReader(zr, max+1))
	if err != nil {
		return fmt.Errorf("bundle gzip stream: %w", err)
	}
	if n > max {
		return fmt.Errorf("bundle is more than %d bytes uncompressed", max)
	}
	if br.Len() > 0 {
		return fmt.Errorf("%d bytes after the end of the bundle's gzip stream", br.Len())
	}
	return nil
}
