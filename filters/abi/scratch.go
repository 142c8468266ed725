package abi

// Scratch runs fn with the memory the host fills during fn's hostcalls
// (header maps, header values, properties, shared data...) taken from a
// reusable arena instead of fresh heap allocations, and reclaims the arena
// when fn returns. Under Go's wasm runtime every fresh allocation counts
// towards the next span refill and GC cycle, both of which run inside some
// later callback; a request path that allocates nothing keeps those pauses
// away from requests.
//
// Everything returned by the SDK within fn — strings and byte slices over
// host data, such as header values or properties — is valid only until fn
// returns: copy (strings.Clone, bytes.Clone) what must outlive fn. Host data
// larger than the arena's free space falls back to the heap. Nested calls run
// fn within the outer arena. Natively (tests with proxytest) Scratch just
// calls fn.
func Scratch(fn func()) {
	if !scratchBegin() {
		fn()
		return
	}
	defer scratchEnd()
	fn()
}
