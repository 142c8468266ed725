package hosttest

import (
	"context"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host"
)

// RootID sets the plugin's root_id (plugin_root_id), for modules that serve
// several root contexts.
func RootID(id string) Option { return func(o *options) { o.plugin.RootID = id } }

// VMID sets the plugin's vm_id, which scopes shared data and queues; plugins
// of one Harness that share a vm_id see each other's data and queues.
func VMID(id string) Option { return func(o *options) { o.plugin.VMID = id } }

// AddPlugin starts another plugin from the harness's module in the same
// runtime (so it shares data and queues with plugins of the same vm_id); its
// logs are captured by the harness. Only the plugin options (configuration,
// names, workers, clusters, properties, policy, env) apply.
func (h *Harness) AddPlugin(opts ...Option) *host.Plugin {
	h.t.Helper()
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.plugin.Clusters == nil {
		o.plugin.Clusters = map[string]host.Cluster{}
	}
	for _, name := range o.clusters {
		o.plugin.Clusters[name] = host.ClusterFunc(h.record)
	}
	if o.plugin.Name == "" {
		o.plugin.Name = "test"
	}
	if o.plugin.VMID == "" {
		o.plugin.VMID = o.plugin.Name
	}
	p, err := h.Runtime.NewPlugin(context.Background(), h.Module, o.plugin)
	require.NoError(h.t, err)
	h.t.Cleanup(p.Close)
	return p
}

// StreamOf opens a stream on another plugin of the harness (see AddPlugin).
func (h *Harness) StreamOf(p *host.Plugin, props *host.Props) *Stream {
	if props == nil {
		props = host.NewProps()
	}
	return &Stream{Stream: p.NewStream(props), t: h.t}
}
