// Package cncfregistry is a nested module that pins the CNCF Distribution
// registry (github.com/distribution/distribution/v3/cmd/registry); see
// distributor/internal/cncftest, which builds and runs it for tests.
package cncfregistry
