package oci_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
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

// TestPatchRacingPutCannotPoisonBlob is the attack of a PATCH whose body is
// still arriving while the client commits the upload: the commit is
// refused while the chunk is open, the committed blob is exactly what was
// hashed, and a later push of the same content elsewhere gets good bytes.
func TestPatchRacingPutCannotPoisonBlob(t *testing.T) {
	srv, _ := newServer(t, oci.Options{})
	c := client{t, srv.URL}
	good := []byte("the legitimate module layer")
	gd := digest.FromBytes(good)
	r := c.do("POST", "/v2/race/a/blobs/uploads/", "", nil)
	require.Equal(t, 202, r.StatusCode)
	loc := r.Header.Get("Location")
	r = c.do("PATCH", loc, "application/octet-stream", good)
	require.Equal(t, 202, r.StatusCode)

	pr, pw := io.Pipe()
	req, err := http.NewRequest("PATCH", srv.URL+loc, pr)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	patched := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			patched <- nil
			return
		}
		resp.Body.Close()
		patched <- resp
	}()
	_, err = pw.Write([]byte("poison-"))
	require.NoError(t, err)
	// Wait until the server has taken the chunk's first bytes.
	for {
		r := c.do("GET", loc, "", nil)
		require.Equal(t, 204, r.StatusCode)
		if r.Header.Get("Range") != fmt.Sprintf("0-%d", len(good)-1) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	r = c.do("PUT", loc+"?digest="+gd.String(), "", nil)
	require.Equal(t, 409, r.StatusCode, "a commit under an open chunk must be refused")
	require.Equal(t, "BLOB_UPLOAD_INVALID", errCode(t, r))
	_, err = pw.Write([]byte("more poison"))
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	resp := <-patched
	require.NotNil(t, resp)
	require.Equal(t, 202, resp.StatusCode)

	// The upload now holds good+poison: the good digest no longer commits.
	r = c.do("PUT", loc+"?digest="+gd.String(), "", nil)
	require.Equal(t, 400, r.StatusCode)
	require.Equal(t, "DIGEST_INVALID", errCode(t, r))
	r = c.do("GET", "/v2/race/a/blobs/"+gd.String(), "", nil)
	require.Equal(t, 404, r.StatusCode)

	// A legitimate push of the content to another repository.
	r = c.do("POST", "/v2/race/b/blobs/uploads/?digest="+gd.String(), "application/octet-stream", good)
	require.Equal(t, 201, r.StatusCode)
	r = c.do("GET", "/v2/race/b/blobs/"+gd.String(), "", nil)
	require.Equal(t, 200, r.StatusCode)
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	require.Equal(t, good, b)
	// An upload belongs to its repository.
	r = c.do("PATCH", strings.Replace(loc, "/race/a/", "/race/b/", 1), "application/octet-stream", good)
	require.Equal(t, 404, r.StatusCode)
	require.Equal(t, "BLOB_UPLOAD_UNKNOWN", errCode(t, r))
}
