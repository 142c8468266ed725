package host

import (
	"context"
	"io"
	"log/slog"
	"time"
)

// CheckOptions tune CheckModule.
type CheckOptions struct {
	Profile Profile
	Workers int
	// Configuration is handed to proxy_on_configure (default empty).
	Configuration []byte
}

// CheckReport is what CheckModule found.
type CheckReport struct {
	Profile       Profile
	Size          int
	ABIVersion    string
	Allocator     string
	Imports       []string
	Missing       []string
	Exports       []string
	LoadError     string
	StartError    string
	Workers       int
	MemoryPages   uint32
	StartDuration time.Duration
}

// Loadable reports whether the emulated Envoy accepts the module.
func (r *CheckReport) Loadable() bool { return r.LoadError == "" && r.StartError == "" }

// Failure is the reason Envoy would refuse the module.
func (r *CheckReport) Failure() string {
	if r.LoadError != "" {
		return r.LoadError
	}
	return r.StartError
}

// CheckModule loads and starts a module under an Envoy profile, the way a
// proxy would when it receives the plugin configuration.
func CheckModule(ctx context.Context, wasm []byte, opts CheckOptions) *CheckReport {
	rep := &CheckReport{Profile: opts.Profile, Size: len(wasm), Workers: max(opts.Workers, 1)}
	rt, err := NewRuntime(ctx, RuntimeConfig{Profile: opts.Profile, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CallbackDeadline: 30 * time.Second})
	if err != nil {
		rep.LoadError = err.Error()
		return rep
	}
	defer rt.Close(ctx)
	mod, err := rt.Compile(ctx, wasm)
	if mod != nil {
		rep.ABIVersion, rep.Imports, rep.Exports, rep.Allocator = mod.ABIVersion, mod.Imports, mod.Exports, mod.Allocator
	}
	if err != nil {
		rep.LoadError = err.Error()
		if le, ok := err.(*LoadError); ok {
			rep.Missing = le.Missing
		}
		return rep
	}
	start := time.Now()
	p, err := rt.NewPlugin(ctx, mod, PluginConfig{Name: "check", Workers: rep.Workers, Configuration: opts.Configuration})
	rep.StartDuration = time.Since(start)
	if err != nil {
		rep.StartError = err.Error()
		return rep
	}
	rep.MemoryPages = p.Worker(0).MemoryPages()
	p.Close()
	return rep
}
