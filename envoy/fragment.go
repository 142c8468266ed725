package envoy

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// Standalone is the input of a hand-run Envoy fragment.
type Standalone struct {
	Filter Filter
	// Distributor, when set, adds its cluster and points the remote module
	// fetch (when Filter.Module.URL is set) at it.
	Distributor *Upstream
	// Guard is the guard configuration; Filter.Config is filled from it.
	Guard GuardInput
}

// Fragment renders the pieces a hand-written Envoy config needs: the
// http_filters entry (place it before envoy.filters.http.router) and the
// clusters entry of the distributor, as YAML with those two keys.
func Fragment(s Standalone) ([]byte, error) {
	var callouts Callouts
	out := map[string]any{}
	if s.Distributor != nil {
		up := *s.Distributor
		up.Name = orDefault(up.Name, DefaultClusterName)
		c, err := Cluster(up)
		if err != nil {
			return nil, err
		}
		m, err := Map(c)
		if err != nil {
			return nil, err
		}
		out["clusters"] = []any{m}
		callouts = Callouts{Cluster: up.Name, Authority: up.Host}
	}
	cfg, _, err := GuardConfig(s.Guard, callouts)
	if err != nil {
		return nil, err
	}
	f := s.Filter
	f.Config = cfg
	if f.Module.URL != "" && f.Module.Cluster == "" {
		if callouts.Cluster == "" {
			return nil, fmt.Errorf("envoy: a remote module is fetched through the distributor cluster: set the distributor")
		}
		f.Module.Cluster = callouts.Cluster
	}
	hf, err := HTTPFilter(f)
	if err != nil {
		return nil, err
	}
	m, err := Map(hf)
	if err != nil {
		return nil, err
	}
	out["http_filters"] = []any{m}
	y, err := yaml.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	return y, nil
}
