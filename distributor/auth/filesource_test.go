package auth

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/devca"
)

func TestFileSourceReloadsRotatedSVID(t *testing.T) {
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString("grid.example"))
	require.NoError(t, err)
	dir := t.TempDir()
	cfg := SVIDConfig{CertFile: filepath.Join(dir, "svid.pem"), KeyFile: filepath.Join(dir, "svid.key"), BundleFile: filepath.Join(dir, "bundle.pem")}
	require.NoError(t, os.WriteFile(cfg.BundleFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o644))
	id := spiffeid.RequireFromString("spiffe://grid.example/distributor")
	first, err := ca.IssueX509SVID(id, devca.X509Options{})
	require.NoError(t, err)
	require.NoError(t, devca.WriteSVID(first, cfg.CertFile, cfg.KeyFile))

	fs, err := newFileSource(cfg)
	require.NoError(t, err)
	got, err := fs.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, first.Certificates[0].SerialNumber, got.Certificates[0].SerialNumber)

	second, err := ca.IssueX509SVID(id, devca.X509Options{})
	require.NoError(t, err)
	require.NoError(t, devca.WriteSVID(second, cfg.CertFile, cfg.KeyFile))
	future := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(cfg.CertFile, future, future))
	fs.mu.Lock()
	fs.checked = time.Time{} // skip the reload interval
	fs.mu.Unlock()
	got, err = fs.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, second.Certificates[0].SerialNumber, got.Certificates[0].SerialNumber, "rotated SVID picked up")

	// A half-written rotation keeps the last good SVID.
	require.NoError(t, os.WriteFile(cfg.CertFile, []byte("-----BEGIN CERT"), 0o644))
	require.NoError(t, os.Chtimes(cfg.CertFile, future.Add(time.Minute), future.Add(time.Minute)))
	fs.mu.Lock()
	fs.checked = time.Time{}
	fs.mu.Unlock()
	got, err = fs.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, second.Certificates[0].SerialNumber, got.Certificates[0].SerialNumber)
}
