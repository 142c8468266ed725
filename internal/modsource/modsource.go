// Package modsource fetches a Wasm module from where a command line names
// it, pinned the way Envoy and Istio pin it: a local file (or stdin, through
// Options.ReadFile), an http(s) URL checked against the file's sha256 (which
// is then required, as Envoy requires it for remote code), or an OCI
// reference ([oci://]REGISTRY/REPO:TAG|@DIGEST) checked against the
// manifest digest (the WasmPlugin sha256 of an oci:// URL).
package modsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/internal/ociref"
)

// MaxModuleBytes bounds a module fetched over http(s).
const MaxModuleBytes = 256 << 20

// ErrDigest: the module is not the one the sha256 pins.
var ErrDigest = errors.New("module digest mismatch")

// ErrNoDigest: an http(s) source without the sha256 that pins it.
var ErrNoDigest = errors.New("a module URL needs its sha256 (as Envoy requires for remote code)")

// Options configure Fetch.
type Options struct {
	// ReadFile reads a local source (default os.ReadFile); the CLI's reads
	// "-" as stdin.
	ReadFile func(path string) ([]byte, error)
	// HTTP fetches http(s) sources (default http.DefaultClient).
	HTTP *http.Client
	// Remote configures OCI pulls.
	Remote modules.RemoteOptions
}

// Fetch returns the module src names. want is "sha256:<hex>" or "<hex>"
// (empty: not checked, refused for http(s) with ErrNoDigest). A bad OCI
// reference wraps ociref.ErrReference; a module that is not the one want
// pins, ErrDigest.
func Fetch(ctx context.Context, src, want string, o Options) ([]byte, error) {
	want = strings.TrimPrefix(strings.ToLower(want), "sha256:")
	switch {
	case strings.HasPrefix(src, ociref.Scheme):
		ref, err := ociref.Parse(src)
		if err != nil {
			return nil, err
		}
		wasm, dgst, err := modules.Pull(ctx, ref, o.Remote)
		if err != nil {
			return nil, err
		}
		if got := strings.TrimPrefix(dgst.String(), "sha256:"); want != "" && got != want {
			return nil, fmt.Errorf("%w: %s has manifest digest sha256:%s, want sha256:%s", ErrDigest, src, got, want)
		}
		return wasm, nil
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		if want == "" {
			return nil, ErrNoDigest
		}
		bin, err := fetchHTTP(ctx, src, o.HTTP)
		if err != nil {
			return nil, err
		}
		return bin, checkSum(src, bin, want)
	}
	read := o.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	bin, err := read(src)
	if err != nil {
		return nil, err
	}
	if want == "" {
		return bin, nil
	}
	return bin, checkSum(src, bin, want)
}

func fetchHTTP(ctx context.Context, src string, c *http.Client) ([]byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch module: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch module %s: %s", src, resp.Status)
	}
	bin, err := io.ReadAll(io.LimitReader(resp.Body, MaxModuleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch module: %w", err)
	}
	if len(bin) > MaxModuleBytes {
		return nil, fmt.Errorf("fetch module %s: larger than %d bytes", src, MaxModuleBytes)
	}
	return bin, nil
}

func checkSum(src string, bin []byte, want string) error {
	sum := sha256.Sum256(bin)
	if got := hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("%w: %s has sha256 %s, want %s", ErrDigest, src, got, want)
	}
	return nil
}
