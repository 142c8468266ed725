// Package charttest renders the meshguard-distributor Helm chart with Helm's
// own Go packages and validates every object against the Kubernetes schemas
// shipped in client-go (strict decoding into the typed API objects and the
// structured-merge-diff schema generated from the Kubernetes OpenAPI). It is
// a nested module so Helm and client-go never become dependencies of
// meshguard itself; everything runs offline from the Go module cache.
package charttest
