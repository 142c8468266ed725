package envoy

import (
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

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

// GuardFilters are the HTTP filters that go before envoy.filters.http.router,
// in order: the one-URI-SAN RBAC filter, then the guard.
func GuardFilters(f Filter) ([]*hcmv3.HttpFilter, error) {
	guard, err := HTTPFilter(f)
	if err != nil {
		return nil, err
	}
	if f.Outbound {
		return []*hcmv3.HttpFilter{guard}, nil
	}
	rbac, err := OneURISANFilter()
	if err != nil {
		return nil, err
	}
	return []*hcmv3.HttpFilter{rbac, guard}, nil
}

// Fragment renders the pieces a hand-written Envoy config needs: the
// http_filters entries (place them, in order, before
// envoy.filters.http.router) and the clusters entry of the distributor, as
// YAML with those two keys.
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
	filters, err := GuardFilters(f)
	if err != nil {
		return nil, err
	}
	var list []any
	for _, hf := range filters {
		m, err := Map(hf)
		if err != nil {
			return nil, err
		}
		list = append(list, m)
	}
	out["http_filters"] = list
	y, err := yaml.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("envoy: %w", err)
	}
	return y, nil
}
