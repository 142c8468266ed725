// Package shipped holds the tests every filter the project ships (every
// filters/*/main.go, now guard and hello) must pass: each module loads and
// starts under every Envoy profile of package host (the WASI functions of
// Envoy 1.33 and of current Envoy), and links nothing its request path does
// not need (no network, TLS, MIME, YAML, regexp or JOSE library code, no
// file access). A filter added later is covered without touching the tests.
package shipped
