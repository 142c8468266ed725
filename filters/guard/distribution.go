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

// poll fetches the channel's latest bundle when this worker's turn has
// come (see distribution.Channel.Due).
func (p *plugin) poll(now time.Time) {
	ch := p.g.Channel()
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
	hdrs := append(ch.Request(p.g.Enforcing()), [2]string{contract.EnforcingHeader, strconv.FormatUint(p.g.Enforced(), 10)})
	if name := p.g.Proxy(); name != "" {
		hdrs = append(hdrs, [2]string{contract.ProxyHeader, name})
	}
	if _, err := proxywasm.DispatchHttpCall(d.Cluster, hdrs, nil, nil, uint32(d.Timeout.Milliseconds()), p.onPollResponse); err != nil {
		proxywasm.LogWarnf("meshguard: bundle poll of cluster %q: %v", d.Cluster, err)
		return
	}
	ch.Polling(true)
}

// onPollResponse installs a delivered bundle and hands it to the other
// workers; every failure keeps the installed bundle.
func (p *plugin) onPollResponse(numHeaders, bodySize, _ int) {
	ch := p.g.Channel()
	ch.Polling(false)
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error handling bundle poll: %v", r)
		}
	}()
	if numHeaders == 0 {
		proxywasm.LogWarnf("meshguard: bundle poll failed (distributor unreachable or timed out); keeping revision %d", p.g.Revision())
		return
	}
	hdrs, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogWarnf("meshguard: bundle poll response headers: %v", err)
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
		proxywasm.LogErrorf("meshguard: bundle poll: %v", err)
		return
	case err != nil:
		proxywasm.LogWarnf("meshguard: bundle poll: %v; keeping revision %d", err, p.g.Revision())
		return
	}
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogWarnf("meshguard: bundle poll body: %v", err)
		return
	}
	if err := p.g.Install(body, "distributor"); err != nil {
		return
	}
	if err := ch.Installed(p.g.Revision(), body, etag); err != nil {
		proxywasm.LogWarnf("meshguard: %v", err)
	}
}
