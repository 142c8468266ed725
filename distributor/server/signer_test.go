package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/bundles"
)

// TEMPORARY until policies/bundle lands: an ed25519-signed JSON envelope.
type signer struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newSigner(t testing.TB) *signer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return &signer{pub: pub, priv: priv}
}

type envelope struct {
	Revision uint64 `json:"revision"`
	Scope    string `json:"scope"`
	Payload  string `json:"payload"`
	Sig      []byte `json:"sig"`
}

func (e envelope) signed() []byte {
	return fmt.Appendf(nil, "%d|%s|%s", e.Revision, e.Scope, e.Payload)
}

func (s *signer) bundle(t testing.TB, rev uint64, scope string) []byte {
	e := envelope{Revision: rev, Scope: scope, Payload: fmt.Sprintf("policy rev %d", rev)}
	e.Sig = ed25519.Sign(s.priv, e.signed())
	b, err := json.Marshal(e)
	require.NoError(t, err)
	return b
}

func (s *signer) tampered(t testing.TB, rev uint64) []byte {
	var e envelope
	require.NoError(t, json.Unmarshal(s.bundle(t, rev, ""), &e))
	e.Payload += " (edited)"
	b, _ := json.Marshal(e)
	return b
}

func (s *signer) options() Options { return Options{Verifier: s} }

func (s *signer) Verify(data []byte, scope string, min uint64) (bundles.Verified, error) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return bundles.Verified{}, err
	}
	if !ed25519.Verify(s.pub, e.signed(), e.Sig) {
		return bundles.Verified{}, errors.New("bad signature")
	}
	if scope != "" && e.Scope != scope {
		return bundles.Verified{}, errors.New("scope")
	}
	if e.Revision < min {
		return bundles.Verified{}, fmt.Errorf("%w: rollback", bundles.ErrConflict)
	}
	return bundles.Verified{Revision: e.Revision, Created: time.Now()}, nil
}
