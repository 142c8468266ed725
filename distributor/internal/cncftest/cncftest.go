// Package cncftest builds and runs the CNCF Distribution registry
// (github.com/distribution/distribution/v3/cmd/registry, pinned by the nested
// module distributor/internal/cncfregistry) on 127.0.0.1 for tests and
// benchmarks that compare against, or store into, a real registry.
package cncftest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// moduleDir locates distributor/internal/cncfregistry next to this file.
func moduleDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "cncfregistry")
}

func build() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cncf-registry-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "registry")
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(goTool, "build", "-o", binPath, "github.com/distribution/distribution/v3/cmd/registry")
		cmd.Dir = moduleDir()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building CNCF registry: %w\n%s", err, out)
		}
	})
	return binPath, buildErr
}

// Start builds (once per process) and starts a CNCF Distribution registry
// with filesystem storage under a temporary directory, deletes enabled, on
// 127.0.0.1:<free port>. It returns "127.0.0.1:port" and stops the
// registry when tb ends.
func Start(tb testing.TB) string {
	tb.Helper()
	bin, err := build()
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := tb.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	logf, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-ctx.Done():
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			tb.Fatalf("CNCF registry did not become ready on %s: %v\n%s", addr, err, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
