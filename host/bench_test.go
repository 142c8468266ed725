package host_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
)

var benchHeaders = host.Headers{{":method", "GET"}, {":path", "/v1/meters/mtr-0042/readings"}, {":authority", "meter-api.grid.svc"}, {":scheme", "https"}, {"user-agent", "bench"}}

func benchPlugin(b *testing.B, pkg string, config []byte) *host.Plugin {
	b.Helper()
	bin, err := os.ReadFile(wasmbuild.ForTest(b, pkg))
	require.NoError(b, err)
	ctx := context.Background()
	rt, err := host.NewRuntime(ctx, host.RuntimeConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(b, err)
	b.Cleanup(func() { _ = rt.Close(ctx) })
	mod, err := rt.Compile(ctx, bin)
	require.NoError(b, err)
	p, err := rt.NewPlugin(ctx, mod, host.PluginConfig{Name: "bench", Configuration: config})
	require.NoError(b, err)
	b.Cleanup(p.Close)
	return p
}

// BenchmarkRequestHeadersCallback is the cost of one proxy_on_request_headers
// on an open stream: an empty filter, and a filter doing 3 header lookups.
func BenchmarkRequestHeadersCallback(b *testing.B) {
	for _, bc := range []struct {
		name, pkg string
		config    []byte
	}{
		{"empty", testfilters + "empty", nil},
		{"headers3", testfilters + "headers", []byte("3")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchPlugin(b, bc.pkg, bc.config)
			s := p.NewStream(host.NewProps())
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if s.RequestHeaders(benchHeaders, true).Action != host.Continue {
					b.Fatal("paused")
				}
			}
		})
	}
}

// BenchmarkHostcall derives the cost of one get_header_map_value hostcall
// (including the guest allocation the host calls back for) from a filter
// doing 0 and 32 lookups per callback.
func BenchmarkHostcall(b *testing.B) {
	measure := func(n int) float64 {
		p := benchPlugin(b, testfilters+"headers", []byte(strconv.Itoa(n)))
		s := p.NewStream(host.NewProps())
		const rounds = 5000
		start := time.Now()
		for range rounds {
			s.RequestHeaders(benchHeaders, true)
		}
		return float64(time.Since(start).Nanoseconds()) / rounds
	}
	for b.Loop() {
		base, many := measure(0), measure(32)
		b.ReportMetric((many-base)/32, "ns/hostcall")
		b.ReportMetric(base, "ns/callback")
	}
}

// BenchmarkFullStream is a whole stream: context create, request headers,
// response headers, done/log/delete.
func BenchmarkFullStream(b *testing.B) {
	p := benchPlugin(b, "github.com/meshguard/meshguard/filters/hello", nil)
	resp := host.Headers{{":status", "200"}}
	b.ReportAllocs()
	for b.Loop() {
		s := p.NewStream(host.NewProps())
		s.RequestHeaders(benchHeaders[:4], true)
		s.ResponseHeaders(resp, true)
		s.Complete()
	}
}

// BenchmarkColdStart measures compiling the ~3 MB module without and with the
// compilation cache, and instantiating plus initialising one VM.
func BenchmarkColdStart(b *testing.B) {
	bin, err := os.ReadFile(wasmbuild.ForTest(b, "github.com/meshguard/meshguard/filters/hello"))
	require.NoError(b, err)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.Run("compile-nocache", func(b *testing.B) {
		for b.Loop() {
			rt, err := host.NewRuntime(ctx, host.RuntimeConfig{CompilationCacheDir: b.TempDir(), Logger: quiet})
			require.NoError(b, err)
			_, err = rt.Compile(ctx, bin)
			require.NoError(b, err)
			_ = rt.Close(ctx)
		}
	})
	b.Run("compile-dircache", func(b *testing.B) {
		dir := b.TempDir()
		warm, err := host.NewRuntime(ctx, host.RuntimeConfig{CompilationCacheDir: dir, Logger: quiet})
		require.NoError(b, err)
		_, err = warm.Compile(ctx, bin)
		require.NoError(b, err)
		_ = warm.Close(ctx)
		b.ResetTimer()
		for b.Loop() {
			rt, err := host.NewRuntime(ctx, host.RuntimeConfig{CompilationCacheDir: dir, Logger: quiet})
			require.NoError(b, err)
			_, err = rt.Compile(ctx, bin)
			require.NoError(b, err)
			_ = rt.Close(ctx)
		}
	})
	b.Run("instantiate-init", func(b *testing.B) {
		rt, err := host.NewRuntime(ctx, host.RuntimeConfig{Logger: quiet})
		require.NoError(b, err)
		defer rt.Close(ctx)
		mod, err := rt.Compile(ctx, bin)
		require.NoError(b, err)
		b.ResetTimer()
		for b.Loop() {
			p, err := rt.NewPlugin(ctx, mod, host.PluginConfig{Name: "cold"})
			require.NoError(b, err)
			p.Close()
		}
	})
}

// BenchmarkMemoryAfterRequests runs full streams and reports the VM's linear
// memory after warm-up, after 500k requests and at the end: run with
// -benchtime=1000000x to see pages after 1M requests. The Go guest's heap
// settles at about twice its live size during the first few hundred
// thousand requests; from then on the pages must not grow (pages-500k ==
// pages-end).
func BenchmarkMemoryAfterRequests(b *testing.B) {
	p := benchPlugin(b, "github.com/meshguard/meshguard/filters/hello", nil)
	resp := host.Headers{{":status", "200"}}
	run := func() {
		s := p.NewStream(host.NewProps())
		s.RequestHeaders(benchHeaders[:4], true)
		s.ResponseHeaders(resp, true)
		s.Complete()
	}
	for range 10000 {
		run()
	}
	warm := p.Worker(0).MemoryPages()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		run()
		if n++; n == 500_000 {
			b.ReportMetric(float64(p.Worker(0).MemoryPages()), "pages-500k")
		}
	}
	b.ReportMetric(float64(warm), "pages-warm")
	b.ReportMetric(float64(p.Worker(0).MemoryPages()), "pages-end")
}
