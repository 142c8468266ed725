package auth

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fileReloadInterval is how often the SVID files are checked for changes.
const fileReloadInterval = 5 * time.Second

// fileSource serves an X509-SVID and bundle from PEM files and reloads them
// when they change on disk (SVIDs are short-lived and rotated by an agent
// such as spiffe-helper). A failed reload keeps the last good material.
type fileSource struct {
	cfg SVIDConfig

	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	mtimes  [3]time.Time
	checked time.Time
}

func newFileSource(c SVIDConfig) (*fileSource, error) {
	fs := &fileSource{cfg: c}
	if err := fs.load(); err != nil {
		return nil, err
	}
	return fs, nil
}

func (fs *fileSource) stat() ([3]time.Time, error) {
	var out [3]time.Time
	for i, f := range []string{fs.cfg.CertFile, fs.cfg.KeyFile, fs.cfg.BundleFile} {
		st, err := os.Stat(f)
		if err != nil {
			return out, err
		}
		out[i] = st.ModTime()
	}
	return out, nil
}

// load reads the files; fs.mu is held or fs is not shared yet.
func (fs *fileSource) load() error {
	mt, err := fs.stat()
	if err != nil {
		return fmt.Errorf("auth: SVID files: %w", err)
	}
	svid, err := x509svid.Load(fs.cfg.CertFile, fs.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("auth: load SVID: %w", err)
	}
	td := svid.ID.TrustDomain()
	if fs.cfg.TrustDomain != "" {
		if td, err = spiffeid.TrustDomainFromString(fs.cfg.TrustDomain); err != nil {
			return fmt.Errorf("auth: trust domain: %w", err)
		}
	}
	b, err := x509bundle.Load(td, fs.cfg.BundleFile)
	if err != nil {
		return fmt.Errorf("auth: load bundle: %w", err)
	}
	fs.svid, fs.bundle, fs.mtimes, fs.checked = svid, b, mt, time.Now()
	return nil
}

// refresh reloads changed files at most every fileReloadInterval.
func (fs *fileSource) refresh() {
	if time.Since(fs.checked) < fileReloadInterval {
		return
	}
	fs.checked = time.Now()
	if mt, err := fs.stat(); err == nil && mt != fs.mtimes {
		_ = fs.load() // keep the last good SVID on a half-written rotation
	}
}

// GetX509SVID implements x509svid.Source.
func (fs *fileSource) GetX509SVID() (*x509svid.SVID, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.refresh()
	return fs.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (fs *fileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.refresh()
	return fs.bundle.GetX509BundleForTrustDomain(td)
}
