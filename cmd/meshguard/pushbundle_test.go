package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies/bundle"
)

func TestPushBundleAndAuditVerifyServer(t *testing.T) {
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	dir := t.TempDir()
	keys, _ := json.Marshal(set)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keys.jwks"), keys, 0o644))
	url := serveDistributor(t, filepath.Join(dir, "data"), filepath.Join(dir, "keys.jwks"))

	b, err := bundle.Build(map[string][]byte{"policies/p.yaml": []byte("x: 1\n")},
		bundle.BuildOptions{Revision: 3, Expires: time.Now().Add(time.Hour), Key: key})
	require.NoError(t, err)
	file := filepath.Join(dir, "p.bundle")
	require.NoError(t, os.WriteFile(file, b, 0o644))

	out, err := runDistCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod")
	require.NoError(t, err)
	assert.Contains(t, out, "published prod revision 3 sha256:")
	assert.Contains(t, out, "warning: bundle revision 3 expires at", "a bundle valid for an hour more")

	_, err = runDistCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod")
	var ee *exitError
	require.True(t, errors.As(err, &ee), "%v", err)
	assert.Equal(t, 3, ee.code, "same revision again: 409")
	assert.Contains(t, err.Error(), "409")

	out, err = runDistCLI(t, "audit", "verify", "--server", url)
	require.NoError(t, err)
	assert.Contains(t, out, "decision log intact: 0 records")
}
