package shipped_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
)

const modulePath = "github.com/meshguard/meshguard/"

// filters lists the shipped filter packages: every filters/*/main.go, as
// the Makefile's FILTERS variable does.
func filters(t *testing.T) []string {
	t.Helper()
	root, err := wasmbuild.ModuleRoot()
	require.NoError(t, err)
	mains, err := filepath.Glob(filepath.Join(root, "filters", "*", "main.go"))
	require.NoError(t, err)
	var out []string
	for _, m := range mains {
		out = append(out, "filters/"+filepath.Base(filepath.Dir(m)))
	}
	require.Contains(t, out, "filters/guard")
	require.Contains(t, out, "filters/hello")
	return out
}

// TestLoadsOnEveryEnvoyProfile runs check-module's logic on every shipped
// filter under every profile: a new import a profile lacks fails here.
func TestLoadsOnEveryEnvoyProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wasm modules")
	}
	for _, pkg := range filters(t) {
		wasm, err := os.ReadFile(wasmbuild.ForTest(t, modulePath+pkg))
		require.NoError(t, err)
		for _, p := range host.Profiles() {
			t.Run(filepath.Base(pkg)+"/"+string(p), func(t *testing.T) {
				rep := host.CheckModule(context.Background(), wasm, host.CheckOptions{Profile: p, Workers: 2})
				assert.Empty(t, rep.Missing, "imports %s lacks", p)
				assert.True(t, rep.Loadable(), "%s would refuse %s: %s", p, pkg, rep.Failure())
				assert.Equal(t, "0_2_1", rep.ABIVersion)
			})
		}
	}
}

// forbidden are packages no shipped filter may link, with the reason.
var forbidden = map[string]string{
	"net":                                 "network stack; its init reaches file calls",
	"net/http":                            "HTTP client and server",
	"crypto/tls":                          "TLS",
	"crypto/x509":                         "certificate parsing (pulls net, os file access)",
	"crypto/ecdsa":                        "FIPS ECDSA with every NIST curve (1.9 MB); internal/jose verifies on math/big",
	"crypto/elliptic":                     "generic curve code (with crypto/ecdsa)",
	"crypto/rsa":                          "FIPS RSA (0.7 MB); internal/jose verifies on math/big",
	"crypto/ed25519":                      "FIPS Ed25519 with DRBG, AES and self-tests (0.3 MB); internal/jose verifies",
	"mime":                                "MIME tables, read from files",
	"os/exec":                             "processes",
	"os/user":                             "user database files",
	"regexp":                              "regexp engine (size)",
	"archive/tar":                         "its io.Seeker path keeps os.File.Seek and fd_filestat_get alive",
	"go.yaml.in/yaml/v3":                  "YAML parser: proxies load engine images",
	"gopkg.in/yaml.v3":                    "YAML parser",
	"sigs.k8s.io/yaml":                    "YAML parser",
	"github.com/Masterminds/semver/v3":    "semver checker of the policy front end (regexp)",
	"github.com/spiffe/go-spiffe/v2":      "go-spiffe (net/url, x509)",
	"github.com/lestrrat-go/jwx/v2":       "jwx: its jwk package fetches keys over HTTP",
	"github.com/lestrrat-go/httprc":       "HTTP resource cache",
	"github.com/tetratelabs/wazero":       "the host, not the guest",
	"github.com/meshguard/meshguard/host": "the host, not the guest",
}

// fileWASI are the WASI calls that touch files; none of them may be
// imported (fd_write to stdout/stderr and fd_read are console I/O).
var fileWASI = []string{
	"path_open", "path_filestat_get", "fd_filestat_get", "fd_seek", "fd_readdir", "fd_pread", "fd_tell",
	"path_create_directory", "path_unlink_file", "path_rename", "path_readlink", "path_symlink", "path_link",
}

// TestLinksOnlyTheRequestPath lists the packages linked into every shipped
// filter for GOOS=wasip1 and fails on a forbidden one, then checks the
// built module imports no WASI file call.
func TestLinksOnlyTheRequestPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	root, err := wasmbuild.ModuleRoot()
	require.NoError(t, err)
	for _, pkg := range filters(t) {
		t.Run(filepath.Base(pkg), func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "./"+pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			deps := strings.Fields(string(out))
			require.Contains(t, deps, modulePath+pkg)
			for _, d := range deps {
				for f, why := range forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s links %s: %s", pkg, d, why)
					}
				}
			}
			wasm, err := os.ReadFile(wasmbuild.ForTest(t, modulePath+pkg))
			require.NoError(t, err)
			rep := host.CheckModule(context.Background(), wasm, host.CheckOptions{Profile: host.ProfileEnvoyLatest})
			require.NotEmpty(t, rep.Imports)
			for _, imp := range rep.Imports {
				_, name, _ := strings.Cut(imp, ".")
				assert.False(t, slices.Contains(fileWASI, name), "%s imports %s (file access)", pkg, imp)
			}
		})
	}
}
