package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The ECDSA and RSA verifiers of ecdsa.go and rsa.go are held to the
// standard library: for every input both accept or both refuse.

var stdCurves = []struct {
	c *curve
	e elliptic.Curve
	h crypto.Hash
}{{p256, elliptic.P256(), crypto.SHA256}, {p384, elliptic.P384(), crypto.SHA384}, {p521, elliptic.P521(), crypto.SHA512}}

func TestCurveConstants(t *testing.T) {
	for _, tc := range stdCurves {
		p := tc.e.Params()
		assert.Equal(t, p.Name, tc.c.name)
		for _, pair := range [][2]*big.Int{{p.P, tc.c.p}, {p.N, tc.c.n}, {p.B, tc.c.b}, {p.Gx, tc.c.gx}, {p.Gy, tc.c.gy}} {
			assert.Zero(t, pair[0].Cmp(pair[1]), "%s: %x != %x", p.Name, pair[1], pair[0])
		}
		assert.Equal(t, (p.BitSize+7)/8, tc.c.bytes)
		assert.True(t, tc.c.onCurve(tc.c.gx, tc.c.gy))
	}
}

var (
	ecKeysOnce sync.Once
	ecKeys     []*ecdsa.PrivateKey
	rsaOnce    sync.Once
	rsaKeys    []*rsa.PrivateKey
)

func fuzzECKeys(t testing.TB) []*ecdsa.PrivateKey {
	ecKeysOnce.Do(func() {
		for _, tc := range stdCurves {
			k, err := ecdsa.GenerateKey(tc.e, rand.Reader)
			require.NoError(t, err)
			ecKeys = append(ecKeys, k)
		}
	})
	return ecKeys
}

// fuzzRSAKeys are a 2048-bit key and a 2049-bit one (whose PSS encoding is
// one byte shorter than the modulus).
func fuzzRSAKeys(t testing.TB) []*rsa.PrivateKey {
	rsaOnce.Do(func() {
		for _, bits := range []int{2048, 2049} {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			require.NoError(t, err)
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys
}

func flipBit(b []byte, bit uint16) {
	if int(bit)/8 < len(b) {
		b[bit/8] ^= 1 << (bit % 8)
	}
}

// FuzzECDSA signs msg with a key of the chosen curve, then flips one bit
// of r||s (or of the digest) or replaces the signature with raw bytes, and
// compares verifyECDSA with ecdsa.Verify.
func FuzzECDSA(f *testing.F) {
	f.Add(uint8(0), []byte("payload"), uint16(0xffff), false, []byte{}, []byte{})
	f.Add(uint8(1), []byte("payload"), uint16(3), false, []byte{}, []byte{})
	f.Add(uint8(2), []byte("x"), uint16(600), true, []byte{1}, []byte{1})
	f.Fuzz(func(t *testing.T, sel uint8, msg []byte, flip uint16, raw bool, rawR, rawS []byte) {
		tc := stdCurves[int(sel)%len(stdCurves)]
		priv := fuzzECKeys(t)[int(sel)%len(stdCurves)]
		digest := sum(tc.h, string(msg))
		var r, s *big.Int
		if raw {
			r, s = new(big.Int).SetBytes(rawR), new(big.Int).SetBytes(rawS)
		} else {
			var err error
			r, s, err = ecdsa.Sign(rand.Reader, priv, digest)
			require.NoError(t, err)
			sig := append(r.FillBytes(make([]byte, tc.c.bytes)), s.FillBytes(make([]byte, tc.c.bytes))...)
			if flip&0x8000 != 0 {
				flipBit(digest, flip&0x7fff)
			} else {
				flipBit(sig, flip)
			}
			r, s = new(big.Int).SetBytes(sig[:tc.c.bytes]), new(big.Int).SetBytes(sig[tc.c.bytes:])
		}
		k, err := newECKey(tc.c, priv.X.FillBytes(make([]byte, tc.c.bytes)), priv.Y.FillBytes(make([]byte, tc.c.bytes)))
		require.NoError(t, err)
		want := ecdsa.Verify(&priv.PublicKey, digest, r, s)
		require.Equal(t, want, verifyECDSA(k, digest, r, s), "r=%x s=%x", r, s)
		if !raw && flip == 0xffff {
			require.True(t, want)
			// s and n-s both verify (ECDSA's known malleability), in both.
			ns := new(big.Int).Sub(tc.c.n, s)
			require.Equal(t, ecdsa.Verify(&priv.PublicKey, digest, r, ns), verifyECDSA(k, digest, r, ns))
		}
	})
}

// FuzzECPoint compares the on-curve check of key parsing with the standard
// library's parsing of the uncompressed point; y may be derived from x so
// that valid points are reached.
func FuzzECPoint(f *testing.F) {
	f.Add(uint8(0), []byte{}, []byte{}, true)
	f.Add(uint8(1), []byte{1, 2, 3}, []byte{4}, false)
	f.Add(uint8(2), []byte{0xff}, []byte{}, true)
	f.Fuzz(func(t *testing.T, sel uint8, xb, yb []byte, derive bool) {
		tc := stdCurves[int(sel)%len(stdCurves)]
		c := tc.c
		x := new(big.Int).SetBytes(xb)
		if len(xb) > c.bytes {
			xb = xb[:c.bytes]
			x.SetBytes(xb)
		}
		y := new(big.Int).SetBytes(yb)
		if derive {
			// y = sqrt(x³ - 3x + b); every p here is 3 mod 4.
			rhs := new(big.Int).Exp(x, big.NewInt(3), c.p)
			rhs.Sub(rhs, new(big.Int).Mul(x, big.NewInt(3)))
			rhs.Add(rhs, c.b)
			rhs.Mod(rhs, c.p)
			if v := new(big.Int).ModSqrt(rhs, c.p); v != nil {
				y = v
			}
		}
		if x.BitLen() > 8*c.bytes || y.BitLen() > 8*c.bytes {
			return
		}
		xf, yf := x.FillBytes(make([]byte, c.bytes)), y.FillBytes(make([]byte, c.bytes))
		_, err := newECKey(c, xf, yf)
		_, stdErr := ecdsa.ParseUncompressedPublicKey(tc.e, append(append([]byte{4}, xf...), yf...))
		require.Equal(t, stdErr == nil, err == nil, "x=%x y=%x: here %v, stdlib %v", x, y, err, stdErr)
	})
}

// FuzzRSA signs with PKCS #1 v1.5 or PSS, flips one bit or substitutes raw
// bytes, and compares with crypto/rsa.
func FuzzRSA(f *testing.F) {
	f.Add(uint8(0), []byte("payload"), uint16(0xffff), false, []byte{})
	f.Add(uint8(1), []byte("payload"), uint16(0xffff), false, []byte{})
	f.Add(uint8(3), []byte("payload"), uint16(7), false, []byte{})
	f.Add(uint8(2), []byte("payload"), uint16(2047), true, []byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, sel uint8, msg []byte, flip uint16, raw bool, rawSig []byte) {
		priv := fuzzRSAKeys(t)[int(sel)%2]
		pss := sel&2 != 0
		h := []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}[int(sel>>2)%3]
		digest := sum(h, string(msg))
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		var sig []byte
		var err error
		switch {
		case raw:
			sig = rawSig
		case pss:
			sig, err = rsa.SignPSS(rand.Reader, priv, h, digest, opts)
		default:
			sig, err = rsa.SignPKCS1v15(rand.Reader, priv, h, digest)
		}
		require.NoError(t, err)
		if !raw {
			if flip&0x8000 != 0 {
				flipBit(digest, flip&0x7fff)
			} else {
				flipBit(sig, flip)
			}
		}
		k := &rsaKey{n: priv.N, e: priv.E}
		var want, got error
		if pss {
			want, got = rsa.VerifyPSS(&priv.PublicKey, h, digest, sig, opts), verifyPSS(k, h, hashFunc(h), digest, sig)
		} else {
			want, got = rsa.VerifyPKCS1v15(&priv.PublicKey, h, digest, sig), verifyPKCS1v15(k, h, digest, sig)
		}
		require.Equal(t, want == nil, got == nil, "pss=%v: stdlib %v, here %v", pss, want, got)
		if !raw && flip == 0xffff {
			require.NoError(t, got)
		}
	})
}

// FuzzEd25519 signs msg, then flips one bit of the signature, the message
// or the public key, or substitutes raw bytes for the key or signature, and
// compares verifyEd25519 with ed25519.Verify (non-canonical key encodings,
// S ≥ L, small-order points all included).
func FuzzEd25519(f *testing.F) {
	f.Add([]byte("payload"), uint16(0xffff), uint8(0), []byte{}, []byte{})
	f.Add([]byte("payload"), uint16(300), uint8(0), []byte{}, []byte{})
	f.Add([]byte("payload"), uint16(0), uint8(1), bytes32(0xff), []byte{})
	f.Add([]byte("payload"), uint16(0), uint8(2), []byte{}, append(bytes32(0), bytes32(0xff)...))
	f.Fuzz(func(t *testing.T, msg []byte, flip uint16, mode uint8, rawPub, rawSig []byte) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		sig := ed25519.Sign(priv, msg)
		switch mode % 4 {
		case 1:
			pub = ed25519.PublicKey(fit32(rawPub))
		case 2:
			sig = rawSig
		case 3:
			pub = ed25519.PublicKey(fit32(rawPub))
			sig = rawSig
		}
		switch bit := flip & 0x3fff; flip >> 14 {
		case 0:
			flipBit(sig, bit)
		case 1:
			flipBit(msg, bit)
		case 2:
			flipBit(pub, bit%256)
		}
		want := ed25519.Verify(pub, msg, sig)
		require.Equal(t, want, verifyEd25519(edKey(pub), msg, sig), "pub=%x sig=%x", pub, sig)
		if mode%4 == 0 && flip == 0xffff {
			require.True(t, want)
		}
	})
}

func bytes32(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

// fit32 pads or cuts b to a public key's 32 bytes.
func fit32(b []byte) []byte {
	out := make([]byte, 32)
	copy(out, b)
	return out
}

// TestEd25519Edges covers the encodings RFC 8032 leaves open, next to
// crypto/ed25519: the identity as key (small order) with R = identity and
// S = 0, y ≥ p, x = 0 with the sign bit, S = L, and a y off the curve.
func TestEd25519Edges(t *testing.T) {
	identity := append([]byte{1}, make([]byte, 31)...)
	negZero := bytes.Clone(identity)
	negZero[31] |= 0x80
	// y = p + 1 ≡ 1: the identity, not reduced.
	pPlus1 := bytes32(0xff)
	pPlus1[0], pPlus1[31] = 0xee, 0x7f
	lBytes := ed.l.FillBytes(make([]byte, 32))
	reverse(lBytes)
	offCurve := append([]byte{2}, make([]byte, 31)...)
	zeroS := make([]byte, 32)
	for _, tc := range []struct {
		name     string
		pub, sig []byte
	}{
		{"identity key, identity R, S = 0", identity, append(bytes.Clone(identity), zeroS...)},
		{"identity key as -0", negZero, append(bytes.Clone(identity), zeroS...)},
		{"identity key as y = p + 1", pPlus1, append(bytes.Clone(identity), zeroS...)},
		{"S = L", identity, append(bytes.Clone(identity), lBytes...)},
		{"R as -0", identity, append(bytes.Clone(negZero), zeroS...)},
		{"key off the curve", offCurve, append(bytes.Clone(identity), zeroS...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, msg := range [][]byte{nil, []byte("payload")} {
				assert.Equal(t, ed25519.Verify(tc.pub, msg, tc.sig), verifyEd25519(edKey(tc.pub), msg, tc.sig))
			}
		})
	}
}
