package identity

import (
	"testing"
	"time"

	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// BenchmarkSharedHit is the native cost of verifying a token another worker
// verified (decode and check claims, one store read, no signature):
// go test ./filters/guard/internal/identity -run '^$' -bench Shared
func BenchmarkSharedHit(b *testing.B) {
	grid := newEC(b, "grid-1")
	store := shared.NewMemory()
	mk := func() *SVIDVerifier {
		v, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(b, grid)}, []string{"a"}, false, 0)
		if err != nil {
			b.Fatal(err)
		}
		v.Share(NewSharedCache(store, "tok/", 4096))
		return v
	}
	// The local caches are off (size 0), so every Verify on w2 is a
	// shared hit.
	w1, w2 := mk(), mk()
	tok := grid.sign(b, claims("spiffe://grid.example/w", "a", now.Add(time.Hour)), nil)
	if _, err := w1.Verify(tok, now); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := w2.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
	if w2.Signatures() != 0 {
		b.Fatalf("%d signature checks", w2.Signatures())
	}
}

// BenchmarkSignature is the native cost of one ES256 token verification.
func BenchmarkSignature(b *testing.B) {
	grid := newEC(b, "grid-1")
	v, err := NewSVIDVerifier(map[string][]byte{"grid.example": jwks(b, grid)}, []string{"a"}, false, 0)
	if err != nil {
		b.Fatal(err)
	}
	tok := grid.sign(b, claims("spiffe://grid.example/w", "a", now.Add(time.Hour)), nil)
	for b.Loop() {
		if _, err := v.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
}
