package main

import (
	"testing"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

// BenchmarkHelloStream measures one request/response through the .wasm
// filter in meshguard's host: request headers (log, metric, header read) and
// response headers (header add).
func BenchmarkHelloStream(b *testing.B) {
	h := hosttest.New(b, wasmbuild.ForTest(b, "github.com/meshguard/meshguard/filters/hello"))
	req := host.Headers{{":method", "GET"}, {":path", "/v1/meters/1/readings"}, {":authority", "meter"}, {":scheme", "https"}}
	resp := host.Headers{{":status", "200"}, {"content-type", "application/json"}}
	b.ReportAllocs()
	for b.Loop() {
		s := h.NewStream(nil)
		s.RequestHeaders(req, true)
		s.ResponseHeaders(resp, true)
		s.Complete()
	}
}
