package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/guard/internal/decide"
)

// plugin is the SDK's plugin context: it wires the decision core to the
// host and drives what runs on ticks (bundle polls, audit uploads, cache
// sweeps).
type plugin struct {
	types.DefaultPluginContext
	g           *decide.Guard
	m           metrics
	sink        sink
	freeStreams []*stream
}

// maxFreeStreams bounds the recycled streams a worker keeps.
const maxFreeStreams = 1024

func newPlugin(uint32) *plugin { return &plugin{} }

// OnPluginStart implements types.PluginContext. It never fails the plugin:
// a configuration the core refuses makes every request fail closed with a
// clear 503 (see decide.New).
func (p *plugin) OnPluginStart(int) (status types.OnPluginStartStatus) {
	defer func() {
		if r := recover(); r != nil {
			if p.g == nil {
				p.g = decide.New(nil, p.ports(), decide.Options{})
			}
			p.g.Fail(fmt.Errorf("internal error while configuring: %v", r))
			status = types.OnPluginStartStatusOK
		}
	}()
	p.m.define()
	p.sink.m = &p.m
	// The seed needs uniqueness, not secrecy: the runtime's generator is
	// seeded from WASI random_get, and crypto/rand would link the FIPS DRBG.
	opts := decide.Options{Seed: rand.Uint64()}
	if b, err := proxywasm.GetProperty(propNodeID); err == nil {
		opts.Proxy = string(b)
	}
	raw, err := proxywasm.GetPluginConfiguration()
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		raw = nil
		proxywasm.LogCriticalf("meshguard: reading plugin configuration: %v", err)
	}
	p.g = decide.New(raw, p.ports(), opts)
	cfg := p.g.Config()
	if cfg == nil {
		return types.OnPluginStartStatusOK
	}
	p.sink.configure(cfg.Audit.Sink, opts.Proxy)
	// Aggregated refusals are emitted every flush interval, with or
	// without a sink.
	tick := minTick(0, p.sink.interval)
	if cfg.Policy.Distributor != nil {
		tick = minTick(tick, time.Second)
	}
	if tick > 0 {
		if err := proxywasm.SetTickPeriodMilliSeconds(uint32(tick / time.Millisecond)); err != nil {
			p.g.Fail(fmt.Errorf("setting tick period: %w", err))
		}
	}
	return types.OnPluginStartStatusOK
}

// ports are the host's services for the core.
func (p *plugin) ports() decide.Ports {
	return decide.Ports{Shared: hostShared{}, Telemetry: &p.m, Log: hostLog{}, Audit: &p.sink, Clock: time.Now}
}

func minTick(cur, d time.Duration) time.Duration {
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// OnTick polls the distributor (lease holder only), picks up bundles other
// workers fetched, flushes audit batches and sweeps token caches.
func (p *plugin) OnTick() {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error on tick: %v", r)
		}
	}()
	if p.g.Config() == nil {
		return
	}
	now := time.Now()
	if p.g.Channel() != nil {
		// The small revision key, not the whole shared bundle: idle workers
		// still install a newer bundle before their next request.
		p.g.PickUp()
		p.poll(now)
	}
	p.sink.tick(now)
	p.g.Sweep(now)
}

// NewHttpContext implements types.PluginContext. Streams are recycled
// (see stream.OnHttpStreamDone): a fresh one per request would be the
// largest allocation of the request path.
func (p *plugin) NewHttpContext(uint32) types.HttpContext {
	if n := len(p.freeStreams); n > 0 {
		s := p.freeStreams[n-1]
		p.freeStreams = p.freeStreams[:n-1]
		return s
	}
	return &stream{p: p}
}
