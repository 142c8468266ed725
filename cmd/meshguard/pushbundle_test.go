package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/policies/bundle"
)

func TestPushBundleAndAuditVerifyServer(t *testing.T) {
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	dir := t.TempDir()
	keys, _ := json.Marshal(set)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keys.jwks"), keys, 0o644))
	cfg := server.DefaultConfig()
	cfg.Data, cfg.Listen, cfg.InsecureHTTP, cfg.Keys = filepath.Join(dir, "data"), "127.0.0.1:0", true, filepath.Join(dir, "keys.jwks")
	cfg.Bundles.Channels = map[string]server.ChannelConfig{"prod": {}}
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String()

	b, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
		bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: 3, Expires: time.Now().Add(time.Hour), Key: key, Scope: []string{"prod"}}})
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
