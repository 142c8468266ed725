// Package abi lets filters written against github.com/tetratelabs/proxy-wasm-go-sdk
// (v0.24.0) build with the standard Go toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm ./myfilter
//
// The SDK declares its hostcalls with TinyGo's //export and, under the standard
// compiler, routes them to a mock host instead. This package, imported for its
// side effects by a filter's main package,
//
//	import _ "github.com/meshguard/meshguard/filters/abi"
//
// declares the Proxy-Wasm ABI 0.2.1 host functions with //go:wasmimport (i32/i64
// only), installs them as the SDK's host, and exports every proxy_on_* callback,
// proxy_on_memory_allocate and the proxy_abi_version_0_2_1 marker with
// //go:wasmexport, forwarding to the SDK. Filters that call
// proxywasm.SetVMContext from main() (TinyGo style) work unchanged: c-shared
// modules never run main, so the adapter runs main.main once before the first
// callback that needs the VM context. Filters that call it from init() work too.
//
// Standard Go links only the WASI functions a filter reaches, and Envoy 1.33
// provides a subset of WASI preview1: a package that opens files (package mime,
// for instance, reads /etc/mime.types) imports path_filestat_get and the module
// fails to load there. Check built modules with `meshguard check-module` or
// run them under host.ProfileEnvoy133 in tests.
//
// Natively (go test with the SDK's proxytest) the package is empty, so unit
// tests of filter packages keep working.
package abi
