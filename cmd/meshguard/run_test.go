package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
)

// TestRunVerb starts meshguard run on a real module (from stdin, with its
// plugin configuration from a file), sends a request through it, and stops
// it as a signal would: exit 0.
func TestRunVerb(t *testing.T) {
	wasm, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello"))
	require.NoError(t, err)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "up "+r.URL.Path) }))
	defer upstream.Close()
	cfg := filepath.Join(t.TempDir(), "plugin.json")
	require.NoError(t, os.WriteFile(cfg, []byte("from-the-plugin-config"), 0o644))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"run", "--module", "-", "--plugin-config", cfg, "--insecure-http", "--listen", "127.0.0.1:0",
			"--route", "/v1=" + upstream.URL, "--workers", "1", "--envoy", "envoy-1.33", "--log-level", "warn"},
			strings.NewReader(string(wasm)), pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	require.Contains(t, line, "meshguard dev proxy listening on http://127.0.0.1:")
	assert.Contains(t, line, "(module 0_2_1, 1 workers, envoy-1.33)")
	base := strings.Fields(strings.TrimPrefix(line, "meshguard dev proxy listening on "))[0]

	resp, err := http.Get(base + "/v1/meters/1")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "up /v1/meters/1", string(b))
	assert.Equal(t, "from-the-plugin-config", resp.Header.Get("x-hello"), "--plugin-config reached proxy_on_configure")

	cancel()
	select {
	case c := <-code:
		assert.Equal(t, exitOK, c)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}
