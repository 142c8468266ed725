package jose

import (
	"crypto/ecdsa"
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkVerifyECDSA compares verifyECDSA with crypto/ecdsa natively:
// go test ./internal/jose -run '^$' -bench VerifyECDSA -benchmem
func BenchmarkVerifyECDSA(b *testing.B) {
	for i, tc := range stdCurves {
		priv := fuzzECKeys(b)[i]
		digest := sum(tc.h, "payload")
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest)
		require.NoError(b, err)
		k, err := newECKey(tc.c, priv.X.FillBytes(make([]byte, tc.c.bytes)), priv.Y.FillBytes(make([]byte, tc.c.bytes)))
		require.NoError(b, err)
		b.Run(tc.c.name+"/here", func(b *testing.B) {
			for b.Loop() {
				if !verifyECDSA(k, digest, r, s) {
					b.Fatal("rejected")
				}
			}
		})
		b.Run(tc.c.name+"/stdlib", func(b *testing.B) {
			for b.Loop() {
				if !ecdsa.Verify(&priv.PublicKey, digest, r, s) {
					b.Fatal("rejected")
				}
			}
		})
	}
}

// BenchmarkFieldMul is one P-256 Montgomery multiplication:
// go test ./internal/jose -run '^$' -bench FieldMul
func BenchmarkFieldMul(b *testing.B) {
	f := p256.f
	var x, y fe
	f.fromBig(&x, p256.gx)
	f.fromBig(&y, p256.gy)
	b.Run("8-limbs", func(b *testing.B) {
		for b.Loop() {
			f.mul8(&x, &x, &y)
		}
	})
	b.Run("any-limbs", func(b *testing.B) {
		for b.Loop() {
			f.mulN(&x, &x, &y)
		}
	})
}
