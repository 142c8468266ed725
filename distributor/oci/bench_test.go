package oci_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/internal/cncftest"
	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
)

// pullRound runs clients concurrent pulls of the module (manifest GET by
// tag + wasm layer blob GET) and returns the elapsed time.
func pullRound(b *testing.B, hc *http.Client, base, repo, tag, layer string, size int64, clients int) time.Duration {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range []string{"/v2/" + repo + "/manifests/" + tag, "/v2/" + repo + "/blobs/" + layer} {
				req, _ := http.NewRequest(http.MethodGet, base+p, nil)
				req.Header.Set("Accept", string(types.OCIManifestSchema1))
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s: %d %v", p, resp.StatusCode, err)
					return
				}
				if strings.HasSuffix(p, layer) && n != size {
					errs <- fmt.Errorf("short blob: %d", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkPull1000Clients pulls a 3 MB module with 1,000 concurrent
// clients from this handler and from the CNCF Distribution registry in the
// same run. Metrics: ms per round for each, and cncf/meshguard (> 1 means
// meshguard is faster).
func BenchmarkPull1000Clients(b *testing.B) {
	const clients = 1000
	wasm := make([]byte, 3<<20)
	_, _ = rand.Read(wasm)
	copy(wasm, "\x00asm\x01\x00\x00\x00")
	p, err := modules.Build(wasm, modules.FormatOCIArtifact)
	require.NoError(b, err)
	layer := p.Blobs[len(p.Blobs)-1].Digest.String()

	srv, host := newServer(b, oci.Options{})
	cncf := cncftest.Start(b)
	for _, h := range []string{host, cncf} {
		_, err := modules.Push(context.Background(), p, h+"/bench/module:v1", modules.RemoteOptions{})
		require.NoError(b, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = clients, clients, clients
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	var ours, theirs time.Duration
	b.ResetTimer()
	for range b.N {
		ours += pullRound(b, hc, srv.URL, "bench/module", "v1", layer, int64(len(wasm)), clients)
		theirs += pullRound(b, hc, "http://"+cncf, "bench/module", "v1", layer, int64(len(wasm)), clients)
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "meshguard-ms/round")
	b.ReportMetric(float64(theirs.Milliseconds())/float64(b.N), "cncf-ms/round")
	b.ReportMetric(float64(theirs)/float64(ours), "cncf/meshguard")
}
