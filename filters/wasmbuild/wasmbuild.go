// Package wasmbuild compiles filter packages to Proxy-Wasm modules with the
// standard Go toolchain (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared). Tests use
// it so that every test that loads a .wasm builds the real module first.
package wasmbuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// LDFlags are the linker flags of every module the project ships (the
// Makefile passes the same): -s -w drop the DWARF and the wasm name
// section, which no proxy needs (a Go panic prints its own traceback from
// the runtime's tables; only a host's trap backtrace loses function names).
const LDFlags = "-s -w"

// Build compiles the Go package pkg (an import path or a ./relative path
// resolved in dir) into the wasm module out, as `make filters` does.
func Build(ctx context.Context, dir, pkg, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("wasmbuild: %w", err)
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-buildmode=c-shared", "-trimpath", "-ldflags="+LDFlags, "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("wasmbuild: go build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// ForTest builds pkg (an import path such as
// "github.com/meshguard/meshguard/filters/hello") once per test process and
// returns the module's path. The output lives in the user cache directory keyed by
// the package path, and the Go build cache keeps rebuilds cheap.
func ForTest(tb testing.TB, pkg string) string {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("wasmbuild: %v", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	touchSources(root)
	sum := sha256.Sum256([]byte(root + "\x00" + pkg))
	out := filepath.Join(cache, "meshguard-wasm", hex.EncodeToString(sum[:8]), filepath.Base(pkg)+".wasm")
	if err := Build(context.Background(), root, pkg, out); err != nil {
		tb.Fatalf("%v", err)
	}
	built[pkg] = out
	return out
}

// ModuleRoot returns the directory of the main meshguard module (the go.mod
// nearest above the working directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// touchSources stats every Go source and go.mod/go.sum file of the module so
// that `go test` records them as inputs: the module is built by a
// subprocess the test cache cannot see, and a cached test result must not
// survive a change to the filter's code.
func touchSources(root string) {
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "build" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			_, _ = os.Stat(path)
		}
		return nil
	})
}
