package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testVersion = "v0.0.0-test"

var testEpoch = time.Unix(1764000000, 0).UTC()

// buildBinary builds cmd/meshguard as `make image` does: static, trimmed,
// for this machine's architecture so the test can run it.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "meshguard")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid= -X github.com/meshguard/meshguard/internal/buildinfo.version="+testVersion,
		"-o", out, "../../../cmd/meshguard")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, string(b))
	return out
}

// pipeline is `make image`: build the binary, assemble, write the layout.
func pipeline(t *testing.T) (string, string) {
	dir := t.TempDir()
	bin, err := os.ReadFile(buildBinary(t, dir))
	require.NoError(t, err)
	img, err := Build(Options{Binary: bin, Arch: runtime.GOARCH, Epoch: testEpoch,
		Source: "https://github.com/meshguard/meshguard", Revision: "0123456789abcdef", Version: testVersion})
	require.NoError(t, err)
	out := filepath.Join(dir, "oci")
	d, err := WriteLayout(out, img, testVersion)
	require.NoError(t, err)
	return out, d.String()
}

func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the linux binary from the image")
	}
	dir1, d1 := pipeline(t)
	dir2, d2 := pipeline(t)
	assert.Equal(t, d1, d2, "two builds give the same image digest")
	i1, err := os.ReadFile(filepath.Join(dir1, "index.json"))
	require.NoError(t, err)
	i2, err := os.ReadFile(filepath.Join(dir2, "index.json"))
	require.NoError(t, err)
	assert.Equal(t, string(i1), string(i2))

	// Read it back as a registry client would from the layout.
	p, err := layout.FromPath(dir1)
	require.NoError(t, err)
	idx, err := p.ImageIndex()
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	assert.Equal(t, testVersion, im.Manifests[0].Annotations[RefName])
	img, err := p.Image(im.Manifests[0].Digest)
	require.NoError(t, err)
	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, []string{BinaryPath}, cf.Config.Entrypoint)
	assert.Equal(t, "65532:65532", cf.Config.User, "numeric non-root user")
	assert.NotEqual(t, "0", strings.Split(cf.Config.User, ":")[0])
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, runtime.GOARCH, cf.Architecture)
	assert.True(t, cf.Created.Time.Equal(testEpoch))
	for k, v := range map[string]string{LabelSource: "https://github.com/meshguard/meshguard",
		LabelRevision: "0123456789abcdef", LabelVersion: testVersion} {
		assert.Equal(t, v, cf.Config.Labels[k], k)
	}

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	lmt, err := layers[0].MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCILayer, lmt)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	var binary []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names = append(names, h.Name)
		assert.True(t, h.ModTime.Equal(testEpoch), "%s mtime %s", h.Name, h.ModTime)
		if h.Name == BinaryPath[1:] {
			assert.Equal(t, int64(0o755), h.Mode)
			binary, err = io.ReadAll(tr)
			require.NoError(t, err)
		}
	}
	assert.IsNonDecreasing(t, names, "sorted tar")
	for _, n := range names {
		base := filepath.Base(n)
		assert.NotContains(t, []string{"sh", "bash", "ash", "busybox", "dash"}, base, "no shell in the image: %s", n)
		assert.False(t, strings.HasPrefix(n, "bin/") || strings.HasPrefix(n, "sbin/"), n)
	}
	require.NotEmpty(t, binary)

	// Static: no program interpreter, no shared libraries.
	ef, err := elf.NewFile(bytes.NewReader(binary))
	require.NoError(t, err)
	for _, prog := range ef.Progs {
		assert.NotEqual(t, elf.PT_INTERP, prog.Type, "dynamically linked")
	}
	libs, _ := ef.ImportedLibraries()
	assert.Empty(t, libs)

	// The binary from the image runs.
	exe := filepath.Join(t.TempDir(), "meshguard")
	require.NoError(t, os.WriteFile(exe, binary, 0o755))
	out, err := exec.Command(exe, "--version").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), testVersion)
	out, err = exec.Command(exe, "serve", "--help").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "Run the meshguard distributor")
}

func TestBuildRefusesIncompleteOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Binary: []byte("x")},
		{Binary: []byte("x"), Version: "v1", Revision: "abc"},
	} {
		_, err := Build(o)
		assert.Error(t, err, "%+v", o)
	}
}
