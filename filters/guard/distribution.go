package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/filters/guard/internal/distribution"
	"github.com/meshguard/meshguard/internal/contract"
)

// feed is one polled channel: the authors' bundles or the registry's.
type feed struct {
	ch        *distribution.Channel
	kind      string // for the log
	installed func() bool
	revision  func() uint64
	install   func(data []byte, from string) error
}

// feeds are the channels the guard polls.
func (p *plugin) feeds() []feed {
	var out []feed
	g := p.g
	if ch := g.Channel(); ch != nil {
		out = append(out, feed{ch: ch, kind: "bundle", installed: g.Enforcing, revision: g.Revision, install: g.Install})
	}
	if ch := g.RegistryChannel(); ch != nil {
		out = append(out, feed{ch: ch, kind: "registry bundle", installed: g.RegistryInstalled, revision: g.RegistryRevision, install: g.InstallRegistry})
	}
	return out
}

// poll fetches each channel's latest bundle when this worker's turn has
// come (see distribution.Channel.Due).
func (p *plugin) poll(now time.Time) {
	for _, f := range p.feeds() {
		p.pollFeed(f, now)
	}
}

func (p *plugin) pollFeed(f feed, now time.Time) {
	ch := f.ch
	due, err := ch.Due(now)
	if err != nil {
		proxywasm.LogWarnf("meshguard: %v", err)
	}
	if !due {
		return
	}
	d := ch.Config()
	// Tell the distributor which proxy polls and what it enforces, for its
	// console and `meshguard status` (claims it shows beside the poller's
	// authenticated identity).
	hdrs := append(ch.Request(f.installed()), [2]string{contract.EnforcingHeader, strconv.FormatUint(p.g.Enforced(), 10)})
	if name := p.g.Proxy(); name != "" {
		hdrs = append(hdrs, [2]string{contract.ProxyHeader, name})
	}
	if _, err := proxywasm.DispatchHttpCall(d.Cluster, hdrs, nil, nil, uint32(d.Timeout.Milliseconds()),
		func(numHeaders, bodySize, numTrailers int) { p.onPollResponse(f, numHeaders, bodySize, numTrailers) }); err != nil {
		proxywasm.LogWarnf("meshguard: %s poll of cluster %q: %v", f.kind, d.Cluster, err)
		return
	}
	ch.Polling(true)
}

// onPollResponse installs a delivered bundle and hands it to the other
// workers; every failure keeps the installed bundle.
func (p *plugin) onPollResponse(f feed, numHeaders, bodySize, _ int) {
	ch := f.ch
	ch.Polling(false)
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error handling %s poll: %v", f.kind, r)
		}
	}()
	if numHeaders == 0 {
		proxywasm.LogWarnf("meshguard: %s poll failed (distributor unreachable or timed out); keeping revision %d", f.kind, f.revision())
		return
	}
	hdrs, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogWarnf("meshguard: %s poll response headers: %v", f.kind, err)
		return
	}
	var status, etag string
	for _, h := range hdrs {
		switch strings.ToLower(h[0]) {
		case ":status":
			status = h[1]
		case "etag":
			etag = h[1]
		}
	}
	switch err := ch.Answer(status, bodySize); {
	case errors.Is(err, distribution.ErrNotModified):
		return
	case err != nil && status == "200":
		p.m.verifyFailures.Increment(1)
		proxywasm.LogErrorf("meshguard: %s poll: %v", f.kind, err)
		return
	case err != nil:
		proxywasm.LogWarnf("meshguard: %s poll: %v; keeping revision %d", f.kind, err, f.revision())
		return
	}
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogWarnf("meshguard: %s poll body: %v", f.kind, err)
		return
	}
	if err := f.install(body, "distributor"); err != nil {
		return
	}
	if err := ch.Installed(f.revision(), body, etag); err != nil {
		proxywasm.LogWarnf("meshguard: %v", err)
	}
}
