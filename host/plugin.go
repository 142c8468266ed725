package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// FailurePolicy is what a stream gets when its VM has failed (Envoy's
// PluginConfig.failure_policy).
type FailurePolicy int

// Failure policies.
const (
	// FailClosed answers 503 (Envoy's default).
	FailClosed FailurePolicy = iota
	// FailOpen lets the stream continue as if the filter were absent.
	FailOpen
	// FailReload answers 503 for the failing stream and starts a new VM for
	// the streams after it.
	FailReload
)

// ParseFailurePolicy reads FAIL_CLOSED, FAIL_OPEN or FAIL_RELOAD.
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	switch s {
	case "", "FAIL_CLOSED", "FAIL_CLOSE":
		return FailClosed, nil
	case "FAIL_OPEN":
		return FailOpen, nil
	case "FAIL_RELOAD":
		return FailReload, nil
	}
	return 0, fmt.Errorf("unknown failure policy %q", s)
}

// CalloutRequest is a proxy_http_call as the host dispatches it.
type CalloutRequest struct {
	Cluster  string
	Headers  Headers
	Body     []byte
	Trailers Headers
	Timeout  time.Duration
}

// CalloutResponse answers a callout; a nil response is a failure (the module
// sees num_headers = 0).
type CalloutResponse struct {
	Headers  Headers
	Body     []byte
	Trailers Headers
}

// Cluster serves callouts for one upstream cluster name. Call must not block:
// a network implementation answers from its own goroutine. reply may be called
// from any goroutine, at most once; the host delivers it to the VM after the
// callback in progress.
type Cluster interface {
	Call(req *CalloutRequest, reply func(*CalloutResponse))
}

// ClusterFunc adapts a function to Cluster.
type ClusterFunc func(req *CalloutRequest, reply func(*CalloutResponse))

// Call calls f.
func (f ClusterFunc) Call(req *CalloutRequest, reply func(*CalloutResponse)) { f(req, reply) }

// PluginConfig configures a plugin (Envoy's PluginConfig + VmConfig).
type PluginConfig struct {
	// Name is the plugin name (plugin_name); RootID selects the root context
	// (plugin_root_id); VMID groups VMs sharing data and queues (plugin_vm_id).
	Name, RootID, VMID string
	// VMConfig is handed to proxy_on_vm_start; Configuration to proxy_on_configure.
	VMConfig, Configuration []byte
	// Env is vm_config.environment_variables (what environ_get serves).
	Env map[string]string
	// Workers is the number of worker VMs (Envoy runs one per worker thread).
	Workers int
	// FailurePolicy applies to streams of a failed VM.
	FailurePolicy FailurePolicy
	// Clusters serve proxy_http_call by cluster name.
	Clusters map[string]Cluster
	// Properties are plugin-level attributes (xds.*, node, ...).
	Properties *Props
}

// Plugin is a configured filter running on N worker VMs.
type Plugin struct {
	rt  *Runtime
	mod *Module
	cfg PluginConfig

	mu      sync.Mutex
	workers []*VM
	rr      atomic.Uint32
	props   *Props
}

// ErrVMFailed is returned for work on a VM that trapped or was discarded.
var ErrVMFailed = errors.New("wasm VM failed")

// NewPlugin starts the plugin's worker VMs: each is instantiated, started
// (_initialize, main) and configured (root context, on_vm_start, on_configure).
// Any failure is an error, as Envoy rejects the configuration.
func (r *Runtime) NewPlugin(ctx context.Context, mod *Module, cfg PluginConfig) (*Plugin, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Name == "" {
		cfg.Name = "plugin"
	}
	if cfg.VMID == "" {
		cfg.VMID = cfg.Name
	}
	p := &Plugin{rt: r, mod: mod, cfg: cfg}
	p.props = cfg.Properties.Clone()
	p.props.SetString("plugin_name", cfg.Name).SetString("plugin_root_id", cfg.RootID).SetString("plugin_vm_id", cfg.VMID)
	for i := range cfg.Workers {
		vm, err := p.startVM(ctx, i)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.workers = append(p.workers, vm)
	}
	return p, nil
}

// Name is the plugin name.
func (p *Plugin) Name() string { return p.cfg.Name }

// Runtime is the plugin's runtime.
func (p *Plugin) Runtime() *Runtime { return p.rt }

// Workers is the number of worker VMs.
func (p *Plugin) Workers() int { return len(p.workers) }

// Worker returns worker i's current VM.
func (p *Plugin) Worker(i int) *VM {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[i]
}

// statName names a host counter of this plugin.
func (p *Plugin) statName(what string) string { return "wasm." + p.cfg.Name + "." + what }

// NewStream opens an HTTP stream on the next worker (round robin).
func (p *Plugin) NewStream(props *Props) *Stream {
	i := int(p.rr.Add(1)-1) % len(p.workers)
	return p.NewStreamOn(i, props)
}

// NewStreamOn opens an HTTP stream on worker i. A failed worker VM is
// replaced first when the policy is FAIL_RELOAD; otherwise the stream is
// served by the failure policy.
func (p *Plugin) NewStreamOn(i int, props *Props) *Stream {
	vm := p.Worker(i)
	if vm.Failed() && p.cfg.FailurePolicy == FailReload {
		if nvm, err := p.reload(i, vm); err == nil {
			vm = nvm
		}
	}
	return vm.newStream(props)
}

func (p *Plugin) reload(i int, old *VM) (*VM, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.workers[i] != old {
		return p.workers[i], nil
	}
	vm, err := p.startVM(context.Background(), i)
	if err != nil {
		p.rt.stats.inc(p.statName("vm_reload_failed"))
		return nil, err
	}
	p.rt.stats.inc(p.statName("vm_reloaded"))
	p.workers[i] = vm
	return vm, nil
}

// Close shuts the plugin's VMs down (on_done, on_delete of each root context).
func (p *Plugin) Close() {
	p.mu.Lock()
	ws := append([]*VM(nil), p.workers...)
	p.mu.Unlock()
	for _, vm := range ws {
		vm.shutdown()
	}
}
