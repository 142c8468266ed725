// Package conformance holds meshguard's differential conformance filters: one
// small filter per proxy-wasm-go-sdk v0.24.0 example, written here against the
// SDK's public API and built with filters/abi. The tests in this package run
// each filter as .wasm in meshguard's host (through host/hosttest) and assert
// what the SDK's e2e suite expects Envoy to show for the matching example
// (logs, headers, local replies, callouts, shared data, queues, metrics,
// properties, ticks).
package conformance
