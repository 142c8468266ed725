// Package host is a Proxy-Wasm host on wazero that behaves like Envoy
// (proxy-wasm-cpp-host + Envoy's Wasm filter). It loads the very same .wasm
// modules Istio and Kuma load, so unit tests and the dev proxy prove what
// Envoy will do with them:
//
//   - ABI 0.2.1 (and 0.2.0) with Envoy's load checks, start-up order and
//     start-up hostcall restrictions;
//   - WASI exactly as an Envoy release exposes it (see Profile);
//   - root and HTTP stream contexts, header/body/trailer callbacks, local
//     replies, properties with Envoy's encoding, http callouts to named
//     clusters, tick timers on a controllable clock, shared data with CAS and
//     shared queues per vm_id, metrics (exported with the wasmcustom. prefix);
//   - Envoy's threading model: N worker VMs per plugin, a trap discards the VM
//     and the stream gets the plugin's failure policy.
//
// A driver (the dev proxy, hosttest, a benchmark) opens a Stream and delivers
// its events in order; each call returns a Verdict — Continue, Pause, Reply
// (a local response) or Reset — and Stream.Wait blocks on a paused stream
// until the module decides (from a callout reply, a tick or a queue).
//
// Hostcalls are registered with wazero's stack-based API (nothing on the
// request path is reflective), grouped by family with their parameters named
// as the ABI names them. A handler only decodes guest memory; the state it
// acts on belongs to a method of the VM, the Stream, the vm_id's shared data,
// a queue or a metric.
package host
