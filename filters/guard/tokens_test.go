//go:build !wasip1

package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/host/hosttest"
)

// TestTokenVerifiedOncePerProxy: a token verified by one worker VM is not
// verified again by the other; a different token still is, and a forged
// one is still refused on every worker.
func TestTokenVerifiedOncePerProxy(t *testing.T) {
	f := newFixture(t)
	h := hosttest.New(t, guardWasm(t), hosttest.PluginConfig(f.Config(t, nil)), hosttest.Workers(2))
	sigs := func() int64 { return h.Counter("wasmcustom.meshguard_token_signature_verifications_total") }
	hits := func() int64 { return h.Counter("wasmcustom.meshguard_token_shared_cache_hits_total") }
	tok := f.SVID(t, reader, nil)
	get := func(worker int, token string) *hosttest.Stream {
		s := h.NewStreamOn(worker, nil)
		s.Request("GET", "/v1/meters/42/readings", [2]string{"authorization", "Bearer " + token})
		return s
	}

	get(0, tok).ExpectNoLocalReply()
	require.Equal(t, int64(1), sigs())
	get(1, tok).ExpectNoLocalReply()
	assert.Equal(t, int64(1), sigs(), "the second worker verified the token again")
	assert.Equal(t, int64(1), hits())
	// Both workers now hold it locally: no shared lookup either.
	get(0, tok).ExpectNoLocalReply()
	get(1, tok).ExpectNoLocalReply()
	assert.Equal(t, int64(1), sigs())
	assert.Equal(t, int64(1), hits())

	other := f.SVID(t, reader, func(c map[string]any) { c["n"] = 2 })
	get(1, other).ExpectNoLocalReply()
	assert.Equal(t, int64(2), sigs())

	// Same payload, another token's signature: refused on both workers.
	forged := other[:len(other)-10] + tok[len(tok)-10:]
	get(0, forged).ExpectLocalReply(403)
	get(1, forged).ExpectLocalReply(403)
	assert.Equal(t, int64(4), sigs())
}
