// Package grid is the grid scenario behind `make demo`: policies
// (policies/, policies-r2/), the example services (upstream/), the scenario
// runner (scenario/) and the Istio and Kuma resources rendered for it
// (deploy/).
package grid
