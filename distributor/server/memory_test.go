package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heapGrowth runs f and returns the peak growth of live heap objects
// above what was live before, sampled every millisecond (and after f).
func heapGrowth(t testing.TB, f func()) uint64 {
	t.Helper()
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { rtmetrics.Read(sample); return sample[0].Value.Uint64() }
	// A tight GC target makes the peak what the server holds, not how much
	// garbage the collector's pacing happened to let pile up (with the
	// default 100% the same run peaked anywhere from 200 to 280 MiB,
	// depending on what the background index was doing at the time).
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	runtime.GC()
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	if peak.Load() < base {
		return 0
	}
	return peak.Load() - base
}

// pushModule pushes an oci-image module whose layer inflates to wasm.
func pushImage(t *testing.T, url, repo, tag string, layer []byte) int {
	t.Helper()
	cfgBlob := []byte(`{"architecture":"wasm","os":"wasip1"}`)
	for _, b := range [][]byte{cfgBlob, layer} {
		r := do(t, nil, "POST", url+"/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), b)
		require.Equal(t, 201, r.Code, string(r.Body))
	}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
		"config": map[string]any{"mediaType": types.OCIConfigJSON, "digest": digest.FromBytes(cfgBlob), "size": len(cfgBlob)},
		"layers": []any{map[string]any{"mediaType": types.OCILayer, "digest": digest.FromBytes(layer), "size": len(layer)}},
	})
	return do(t, nil, "PUT", url+"/v2/"+repo+"/manifests/"+tag, m, "Content-Type", string(types.OCIManifestSchema1)).Code
}

// gzTar is a tar+gzip layer holding plugin.wasm of size bytes (content
// from fill), compressed fast.
func gzTar(t *testing.T, size int, fill func([]byte)) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "plugin.wasm", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}))
	chunk := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(chunk) {
		c := chunk[:min(len(chunk), left)]
		fill(c)
		if left == size {
			copy(c, "\x00asm\x01\x00\x00\x00")
		}
		_, err := tw.Write(c)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestModuleMemoryIsBounded: a layer that inflates past the module limit
// is refused at push; a module larger than the memory cache is served to
// 50 concurrent clients with a heap that grows by less than one copy of
// it (streamed unpacking, single flight, served from a file).
func TestModuleMemoryIsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.ModuleBytes = 16 << 20
	cfg.Limits.ModuleCacheBytes = 4 << 20
	ts := startServer(t, cfg, Options{})

	bomb := gzTar(t, 64<<20, func([]byte) {}) // zeros: ~64 KiB of gzip
	require.Less(t, len(bomb), 1<<20)
	assert.Equal(t, 400, pushImage(t, ts.URL, "filters/bomb", "v1", bomb), "a layer inflating to 64 MiB against a 16 MiB limit")

	const size = 12 << 20
	layer := gzTar(t, size, func(b []byte) { _, _ = rand.Read(b) })
	require.Equal(t, 201, pushImage(t, ts.URL, "filters/big", "v1", layer))
	layer = nil

	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var served atomic.Int64
	grew := heapGrowth(t, func() {
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := hc.Get(ts.URL + "/modules/filters/big/v1.wasm")
				if err != nil {
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					served.Add(n)
				}
			}()
		}
		wg.Wait()
	})
	require.EqualValues(t, 50*size, served.Load(), "every client got the whole module")
	t.Logf("heap growth serving a %d MiB module to 50 clients: %.1f MiB", size>>20, float64(grew)/(1<<20))
	assert.Less(t, grew, uint64(size/2), "the heap must not hold a copy of the module per request, nor one at all")
}

// bigBatch is an upload of n records of about size bytes each.
func bigBatch(start, n, size int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	pad := strings.Repeat("p", max(0, size-300))
	for i := start; i < start+n; i++ {
		if i > start {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"time":"2026-11-23T08:00:00Z","decision_id":"big-%d","decision":"deny","subject":"spiffe://grid.example/m%d","reason":%q}`, i, i%7, pad)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// TestIngestAndQueryMemoryIsBounded: eight concurrent 8 MiB uploads and a
// 10,000-record query of large records keep the heap within measured
// ceilings (streamed decoding, byte-bounded records, a streamed answer).
func TestIngestAndQueryMemoryIsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.IngestRate = 0
	cfg.Limits.IngestBytesRate = 0
	ts := startServer(t, cfg, Options{})
	bodies := make([][]byte, 8)
	for i := range bodies {
		bodies[i] = bigBatch(i*10000, 9000, 900) // ~8 MB each
	}
	grew := heapGrowth(t, func() {
		var wg sync.WaitGroup
		for _, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Post(ts.URL+"/v1/decisions", "application/json", bytes.NewReader(b))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					assert.Equal(t, 200, resp.StatusCode)
				}
			}()
		}
		wg.Wait()
	})
	t.Logf("heap growth, 8 concurrent uploads of %d MiB: %.1f MiB", len(bodies[0])>>20, float64(grew)/(1<<20))
	// Four uploads decode at once (limits.concurrency.ingest); each holds
	// its records and their sealed lines.
	assert.Less(t, grew, uint64(256<<20))

	bodies = nil
	// The console's index follows the log and verifies its chain in the
	// background; let both catch up first, so their work is not counted as
	// the query's.
	require.Eventually(t, func() bool {
		st, err := ts.StatusNow()
		d := st.DecisionLog
		return err == nil && d.Indexed == d.Records && d.Integrity.Verified == d.Records
	}, 60*time.Second, 20*time.Millisecond)
	var got int64
	grew = heapGrowth(t, func() {
		resp, err := http.Get(ts.URL + "/v1/decisions?limit=10000")
		require.NoError(t, err)
		got, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
	require.Greater(t, got, int64(7<<20), "the answer is large")
	t.Logf("heap growth, query answering %.1f MiB: %.1f MiB", float64(got)/(1<<20), float64(grew)/(1<<20))
	assert.Less(t, grew, uint64(2<<20), "the query answer is streamed, not built in memory")
}
