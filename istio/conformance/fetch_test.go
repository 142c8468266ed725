// Package conformance proves that Istio's own module fetcher
// (istio.io/istio/pkg/wasm, the code istio-agent runs) pulls what the meshguard
// distributor serves, in every push format, and that the sha256 `render istio`
// writes into the WasmPlugin is the digest Istio checks. It lives in its own
// module so istio.io/istio never enters the main module.
package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"istio.io/istio/pkg/wasm"

	"github.com/meshguard/meshguard/envoy"
	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/istio"
)

var digestRE = regexp.MustCompile(`sha256:[a-f0-9]{64}`)

// buildModule builds the guard filter when its package exists, else the hello filter.
func buildModule(t *testing.T) (string, []byte) {
	pkg := "github.com/meshguard/meshguard/filters/hello"
	if _, err := os.Stat("../../filters/guard/main.go"); err == nil {
		pkg = "github.com/meshguard/meshguard/filters/guard"
	}
	t.Logf("module under test: %s", pkg)
	// Built in the main module (../..), whose go.sum covers the filter's
	// dependencies; wasmbuild.ForTest would build in this nested module.
	path := filepath.Join(t.TempDir(), filepath.Base(pkg)+".wasm")
	require.NoError(t, wasmbuild.Build(context.Background(), "../..", pkg, path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("\x00asm")))
	return path, b
}

// buildCLI builds the meshguard binary from this checkout.
func buildCLI(t *testing.T) string {
	// go test caches results by the files a test opens; the sources compiled by
	// the `go build` below are read by a child process, so stat them here to
	// make any change to them invalidate the cached result.
	for _, dir := range []string{"cmd", "distributor", "filters", "istio", "kuma"} {
		_ = filepath.WalkDir(filepath.Join("../..", dir), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") {
				_, _ = os.Stat(p)
			}
			return nil
		})
	}
	bin := filepath.Join(t.TempDir(), "meshguard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshguard")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func hasVerb(t *testing.T, bin string, args ...string) bool {
	parent := args[:len(args)-1]
	out, err := exec.Command(bin, append(append([]string{}, parent...), "--help")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(args[len(args)-1]) + `\s`).Match(out)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDistributor runs `meshguard serve` on loopback and waits for /healthz.
func startDistributor(t *testing.T, bin string) string {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", t.TempDir(), "--insecure-http")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("distributor exited: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("distributor did not become healthy:\n%s", logs.String())
	return ""
}

func renderedSHA(t *testing.T, o istio.Options) string {
	keys, err := os.ReadFile("../testdata/verify-keys.json")
	require.NoError(t, err)
	o.Guard = envoy.GuardInput{VerifyKeys: keys, InlineBundle: []byte("bundle"), PeerCertificate: true}
	r, err := istio.Render(o)
	require.NoError(t, err)
	return r.WasmPlugin["spec"].(map[string]any)["sha256"].(string)
}

func TestIstioFetcherPullsFromDistributor(t *testing.T) {
	bin := buildCLI(t)
	if !hasVerb(t, bin, "serve") || !hasVerb(t, bin, "push", "module") {
		t.Skip("skipped: this meshguard binary has no `serve` and `push module` verbs yet, so there is no distributor to pull from")
	}
	modPath, module := buildModule(t)
	addr := startDistributor(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, format := range []string{"oci-artifact", "oci-image", "docker"} {
		t.Run(format, func(t *testing.T) {
			ref := fmt.Sprintf("%s/meshguard/conformance-%s:v1", addr, format)
			out, err := exec.Command(bin, "push", "module", modPath, ref, "--format", format).CombinedOutput()
			require.NoError(t, err, "%s", out)
			pushed := digestRE.Find(out)
			require.NotNil(t, pushed, "push module printed no digest: %s", out)

			sum := renderedSHA(t, istio.Options{URL: "oci://" + ref, SHA256: string(pushed)})
			assert.Equal(t, strings.TrimPrefix(string(pushed), "sha256:"), sum)

			fetcher := wasm.NewImageFetcher(ctx, wasm.ImageFetcherOption{Insecure: true})
			fetch, digest, err := fetcher.PrepareFetch(ref)
			require.NoError(t, err)
			assert.Equal(t, sum, digest, "the digest Istio verifies must be what render istio wrote")
			got, err := fetch()
			require.NoError(t, err)
			assert.True(t, bytes.Equal(module, got), "Istio extracted different bytes (%d vs %d)", len(got), len(module))
		})
	}

	t.Run("http", func(t *testing.T) {
		// The oci-artifact push above also serves the plain download.
		url := fmt.Sprintf("http://%s/modules/meshguard/conformance-oci-artifact/v1.wasm", addr)
		sum := renderedSHA(t, istio.Options{URL: url, ModuleFile: module})
		got, err := wasm.NewHTTPFetcher(10*time.Second, 2).Fetch(ctx, url, true)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(module, got))
		h := sha256.Sum256(got)
		assert.Equal(t, sum, hex.EncodeToString(h[:]), "Istio checks the file sha256 of http(s) modules")
	})
}
