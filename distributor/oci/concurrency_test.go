package oci_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
)

// TestConcurrentPullsAndPushes runs hundreds of concurrent pulls while
// images are pushed to other repositories (run with -race).
func TestConcurrentPullsAndPushes(t *testing.T) {
	srv, host := newServer(t, oci.Options{})
	wasm := make([]byte, 256<<10)
	_, _ = rand.Read(wasm)
	copy(wasm, "\x00asm\x01\x00\x00\x00")
	p, err := modules.Build(wasm, modules.FormatOCIArtifact)
	require.NoError(t, err)
	_, err = modules.Push(context.Background(), p, host+"/load/module:v1", modules.RemoteOptions{})
	require.NoError(t, err)
	layer := p.Blobs[len(p.Blobs)-1].Digest.String()

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 300
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	const pullers = 300
	var wg sync.WaitGroup
	errs := make(chan error, pullers+8)
	for i := range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(srv.URL + "/v2/load/module/manifests/v1")
			if err != nil {
				errs <- err
				return
			}
			m, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(m, p.Manifest) {
				errs <- fmt.Errorf("puller %d: manifest differs", i)
				return
			}
			resp, err = hc.Get(srv.URL + "/v2/load/module/blobs/" + layer)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(b, wasm) {
				errs <- fmt.Errorf("puller %d: blob differs (%d bytes)", i, len(b))
			}
		}()
	}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := random.Image(50_000, 2)
			if err != nil {
				errs <- err
				return
			}
			ref, _ := name.ParseReference(fmt.Sprintf("%s/load/push%d:v1", host, i))
			if err := remote.Write(ref, img); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
