package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/filters/guard/internal/identity"
)

// keyToken prefixes the shared verified-token slots (+ "svid/" or
// "device/" + slot).
const keyToken = "meshguard/token/"

// tokenWork counts the signature checks and shared-cache hits of the
// token verifiers, so operators see that N workers cost one signature check
// per token.
type tokenWork struct {
	signatures, sharedHits proxywasm.MetricCounter
	// seen are the verifiers' totals already added to the metrics.
	seenSignatures, seenHits uint64
}

func (w *tokenWork) define() {
	w.signatures = proxywasm.DefineCounterMetric("meshguard_token_signature_verifications_total")
	w.sharedHits = proxywasm.DefineCounterMetric("meshguard_token_shared_cache_hits_total")
}

// shareTokens lets the verifiers share verified tokens across the worker
// VMs through shared data, with as many slots as the local caches hold.
func (p *plugin) shareTokens(cfg *config.Config) {
	if p.svid != nil {
		p.svid.Share(identity.NewSharedCache(sharedStore{}, keyToken+"svid/", cfg.Identity.JWTSVID.CacheSize))
	}
	if p.device != nil {
		p.device.Share(identity.NewSharedCache(sharedStore{}, keyToken+"device/", config.DefaultTokenCacheSize))
	}
}

// countTokenWork adds the verifiers' new signature checks and shared hits
// to the metrics; streams call it after verifying a token.
func (p *plugin) countTokenWork() {
	var sigs, hits uint64
	if p.svid != nil {
		sigs += p.svid.Signatures()
		hits += p.svid.SharedHits()
	}
	if p.device != nil {
		sigs += p.device.Signatures()
		hits += p.device.SharedHits()
	}
	w := &p.tokens
	if d := sigs - w.seenSignatures; d != 0 {
		w.signatures.Increment(d)
	}
	if d := hits - w.seenHits; d != 0 {
		w.sharedHits.Increment(d)
	}
	w.seenSignatures, w.seenHits = sigs, hits
}
