package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

const maxBundleBytes = verify.DefaultMaxCompressed

// install verifies data (signature, file set, validity window, scope and
// anti-rollback against the installed revision), compiles its policies and
// swaps them in. On any failure the last good policy stays and the failure is
// counted and logged.
func (p *plugin) install(data []byte, from string) error {
	err := p.tryInstall(data)
	if err != nil {
		p.m.verifyFailures.Increment(1)
		proxywasm.LogErrorf("meshguard: rejected policy bundle from %s (keeping revision %d): %v", from, p.revision(), err)
		return err
	}
	proxywasm.LogInfof("meshguard: installed policy bundle revision %d (%s) from %s", p.policy.revision, p.policy.digest, from)
	return nil
}

func (p *plugin) revision() uint64 {
	if p.policy == nil {
		return 0
	}
	return p.policy.revision
}

func (p *plugin) tryInstall(data []byte) error {
	min := p.cfg.Policy.MinRevision
	if p.policy != nil {
		min = max(min, p.policy.revision)
	}
	// The compiled engine image is the only policy form the filter loads
	// (`meshguard policy bundle` always writes it): verifying only
	// compiled/ skips inflating and hashing the YAML sources, and the guard
	// carries no policy-language parser at all.
	opts := verify.Options{Keys: p.keys, MinRevision: min, Scope: p.cfg.Policy.Scope, Now: time.Now(),
		Subset: []string{"compiled/"}}
	b, err := verify.Verify(data, opts)
	if grace := p.cfg.Policy.ExpiryGrace.Duration; grace > 0 && errors.Is(err, verify.ErrExpired) {
		// Within the configured grace an expired bundle (after a restart,
		// say) still beats failing closed; checkExpiry logs and bounds it.
		opts.Now = opts.Now.Add(-grace)
		b, err = verify.Verify(data, opts)
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	img, ok := b.Files[policies.ImageFile]
	if !ok {
		return fmt.Errorf("revision %d has no compiled engine image (%s): proxies load only bundles built by `meshguard policy bundle`",
			b.Manifest.Revision, policies.ImageFile)
	}
	eng, err := policies.UnmarshalEngine(img)
	if err != nil {
		return fmt.Errorf("revision %d: %w", b.Manifest.Revision, err)
	}
	// Trust domains whose JWT bundle the configuration left empty take their
	// keys from the policy bundle; a domain without keys verifies nothing.
	if p.svid != nil {
		for td, set := range p.cfg.Identity.JWTSVID.TrustDomains {
			if len(bytes.TrimSpace(set)) != 0 {
				continue
			}
			if jwks, ok := eng.JWKS(td); ok && len(jwks) > 0 {
				if err := p.svid.SetBundle(td, jwks); err != nil {
					return fmt.Errorf("revision %d: %w", b.Manifest.Revision, err)
				}
			}
		}
	}
	p.policy = &policyState{engine: eng, revision: b.Manifest.Revision, digest: b.Digest, peerVersion: eng.UsesPeerVersion()}
	p.expires = b.Manifest.Expires
	p.polErr = nil
	p.m.bundleLoads.Increment(1)
	p.m.revision.Add(int64(b.Manifest.Revision) - p.m.revision.Value())
	p.m.expiry.Add(b.Manifest.Expires.Unix() - p.m.expiry.Value())
	return nil
}

// checkExpiry drops a policy whose bundle has expired: fail closed rather
// than enforce stale revocations forever.
func (p *plugin) checkExpiry(now time.Time) {
	grace := p.cfg.Policy.ExpiryGrace.Duration
	if grace > 0 && p.policy != nil && p.polErr == nil && !p.expires.IsZero() && !now.Before(p.expires) {
		// Entering the grace: say so once (polErr stays nil while a fresh
		// bundle is installed; it now notes why this one is degraded).
		p.polErr = fmt.Errorf("policy bundle expired at %s", p.expires.UTC().Format(time.RFC3339))
		proxywasm.LogCriticalf("meshguard: policy bundle revision %d expired at %s; enforcing it within policy.expiryGrace until %s",
			p.policy.revision, p.expires.UTC().Format(time.RFC3339), p.expires.Add(grace).UTC().Format(time.RFC3339))
	}
	if p.policy != nil && !p.expires.IsZero() && !now.Before(p.expires.Add(grace)) {
		proxywasm.LogCriticalf("meshguard: policy bundle revision %d expired at %s; failing closed until a new bundle arrives",
			p.policy.revision, p.expires.UTC().Format(time.RFC3339))
		p.policy = nil
		p.polErr = fmt.Errorf("policy bundle expired at %s", p.expires.UTC().Format(time.RFC3339))
	}
}

// checkShared installs a newer bundle another worker fetched, if the
// announced revision is above ours. It runs before every decision, so all
// workers enforce a new bundle (a revocation, say) from the next request on,
// for one small shared-data read.
func (p *plugin) checkShared() {
	v, _, err := sharedStore{}.Get(keyRev + p.cfg.Policy.Distributor.Channel)
	if err != nil || len(v) < 8 || leUint64(v) <= p.revision() {
		return
	}
	p.pickUpShared()
}

// pickUpShared installs a bundle another worker fetched, when the shared
// entry changed since we last looked. Each worker verifies it again.
func (p *plugin) pickUpShared() {
	ch := p.cfg.Policy.Distributor.Channel
	data, cas, err := sharedStore{}.Get(keyBundle + ch)
	if err != nil || cas == p.sharedCAS {
		return
	}
	p.sharedCAS = cas
	if len(data) < 8 {
		return
	}
	rev := leUint64(data)
	if rev <= p.revision() {
		return
	}
	_ = p.install(data[8:], "shared data")
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// poll fetches the channel's latest bundle with If-None-Match.
func (p *plugin) poll() {
	d := p.cfg.Policy.Distributor
	hdrs := [][2]string{{":method", "GET"}, {":path", d.BundlePath + d.Channel}, {":authority", d.Authority}, {"accept", verify.MediaType}}
	if p.etag == "" {
		if e, _, err := (sharedStore{}).Get(keyETag + d.Channel); err == nil && p.policy != nil {
			p.etag = string(e)
		}
	}
	if p.etag != "" {
		hdrs = append(hdrs, [2]string{"if-none-match", p.etag})
	}
	if d.Token != "" {
		hdrs = append(hdrs, [2]string{"authorization", "Bearer " + d.Token})
	}
	// Tell the distributor which proxy polls and what it enforces, for its
	// console and `meshguard status` (claims it shows beside the caller's
	// authenticated identity).
	hdrs = append(hdrs, [2]string{"x-meshguard-enforcing", strconv.FormatUint(p.revision(), 10)})
	if p.proxyName != "" {
		hdrs = append(hdrs, [2]string{"x-meshguard-proxy", p.proxyName})
	}
	_, err := proxywasm.DispatchHttpCall(d.Cluster, hdrs, nil, nil, uint32(d.Timeout.Milliseconds()), p.onPollResponse)
	if err != nil {
		proxywasm.LogWarnf("meshguard: bundle poll of cluster %q: %v", d.Cluster, err)
		return
	}
	p.polling = true
}

func (p *plugin) onPollResponse(numHeaders, bodySize, _ int) {
	p.polling = false
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshguard: internal error handling bundle poll: %v", r)
		}
	}()
	if numHeaders == 0 {
		proxywasm.LogWarnf("meshguard: bundle poll failed (distributor unreachable or timed out); keeping revision %d", p.revision())
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
	switch status {
	case "304":
		return
	case "200":
	default:
		proxywasm.LogWarnf("meshguard: bundle poll: distributor answered %s; keeping revision %d", status, p.revision())
		return
	}
	if bodySize <= 0 || bodySize > maxBundleBytes {
		p.m.verifyFailures.Increment(1)
		proxywasm.LogErrorf("meshguard: bundle poll: body of %d bytes rejected", bodySize)
		return
	}
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogWarnf("meshguard: bundle poll body: %v", err)
		return
	}
	if err := p.install(body, "distributor"); err != nil {
		return
	}
	p.etag = etag
	// Publish for the other workers: revision (8 bytes LE) + bundle.
	ch := p.cfg.Policy.Distributor.Channel
	buf := make([]byte, 8, 8+len(body))
	rev := p.policy.revision
	for i := range 8 {
		buf[i] = byte(rev >> (8 * i))
	}
	buf = append(buf, body...)
	if err := (sharedStore{}).Set(keyBundle+ch, buf, 0); err != nil {
		proxywasm.LogWarnf("meshguard: sharing bundle revision %d: %v", rev, err)
	} else {
		if _, cas, err := (sharedStore{}).Get(keyBundle + ch); err == nil {
			p.sharedCAS = cas
		}
		// Announce the revision last: a worker that sees it finds the bundle.
		if err := (sharedStore{}).Set(keyRev+ch, buf[:8], 0); err != nil {
			proxywasm.LogWarnf("meshguard: announcing bundle revision %d: %v", rev, err)
		}
	}
	_ = sharedStore{}.Set(keyETag+ch, []byte(etag), 0)
}

// flush posts one audit batch to the decision-log endpoint.
func (p *plugin) flush() {
	if p.audit.Len() == 0 {
		return
	}
	s := p.cfg.Audit.Sink
	body, n := p.audit.Batch(p.auditBuf[:0], s.BatchSize)
	p.auditBuf = body
	hdrs := [][2]string{{":method", "POST"}, {":path", s.Path}, {":authority", s.Authority}, {"content-type", "application/json"}}
	if s.Token != "" {
		hdrs = append(hdrs, [2]string{"authorization", "Bearer " + s.Token})
	}
	_, err := proxywasm.DispatchHttpCall(s.Cluster, hdrs, body, nil, uint32(s.Timeout.Milliseconds()), func(numHeaders, _, _ int) {
		p.flushing = false
		if numHeaders == 0 {
			p.m.auditFailed.Increment(1)
			p.m.auditDropped.Increment(uint64(n))
			proxywasm.LogWarnf("meshguard: decision upload of %d records failed; dropped", n)
			return
		}
		hs, _ := proxywasm.GetHttpCallResponseHeaders()
		for _, h := range hs {
			if h[0] == ":status" && (len(h[1]) != 3 || h[1][0] != '2') {
				p.m.auditFailed.Increment(1)
				p.m.auditDropped.Increment(uint64(n))
				proxywasm.LogWarnf("meshguard: decision upload of %d records answered %s; dropped", n, h[1])
				return
			}
		}
		p.m.auditSent.Increment(uint64(n))
	})
	if err != nil {
		p.m.auditFailed.Increment(1)
		p.m.auditDropped.Increment(uint64(n))
		proxywasm.LogWarnf("meshguard: decision upload to cluster %q: %v", s.Cluster, err)
		return
	}
	p.flushing = true
}
