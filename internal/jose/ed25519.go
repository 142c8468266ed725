package jose

import (
	"bytes"
	"crypto/sha512"
	"math/big"
)

// Ed25519 verification (RFC 8032 §5.1.7) with the same decisions as the
// standard library's ed25519.Verify, which would link its FIPS module's
// DRBG, AES and self-tests (0.3 MB) into a Proxy-Wasm filter for one
// verification per bundle. Like ed25519.Verify it accepts the public key
// encodings RFC 8032 leaves to implementations (y not reduced below p,
// x = 0 with the sign bit set), refuses S ≥ L, and compares the encoding
// of R' = [S]B - [k]A with R byte for byte (cofactorless). A differential
// fuzz test holds it to crypto/ed25519. Public data only: not constant time.

// ed25519PublicKeySize is the length of an Ed25519 public key.
const ed25519PublicKeySize = 32

// edKey is an Ed25519 public key as its 32-byte encoding.
type edKey []byte

var ed = newEdCurve()

type edCurve struct {
	f            *field
	p, l         *big.Int // field prime 2^255-19, group order
	d2           fe       // 2d in Montgomery form
	dBig         *big.Int // d = -121665/121666
	sqrtM1       *big.Int
	bxBig, byBig *big.Int // the base point B
}

func newEdCurve() *edCurve {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	c := &edCurve{f: newField(p), p: p}
	c.l, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	// d = -121665/121666
	d := new(big.Int).ModInverse(big.NewInt(121666), p)
	d.Mul(d, big.NewInt(-121665))
	c.dBig = d.Mod(d, p)
	d2 := new(big.Int).Lsh(c.dBig, 1)
	c.f.fromBig(&c.d2, d2.Mod(d2, p))
	c.sqrtM1 = new(big.Int).Exp(big.NewInt(2), new(big.Int).Rsh(new(big.Int).Sub(p, big.NewInt(1)), 2), p)
	// B: y = 4/5, x even.
	by := new(big.Int).ModInverse(big.NewInt(5), p)
	by.Mul(by, big.NewInt(4)).Mod(by, p)
	bx, ok := c.recoverX(by, false)
	if !ok {
		panic("jose: Ed25519 base point")
	}
	c.bxBig, c.byBig = bx, by
	return c
}

// recoverX solves -x² + y² = 1 + d·x²·y² for x with the given sign (the
// low bit of x); ok is false when (y² - 1)/(d·y² + 1) is not a square.
func (c *edCurve) recoverX(y *big.Int, negative bool) (*big.Int, bool) {
	p := c.p
	y2 := new(big.Int).Mul(y, y)
	y2.Mod(y2, p)
	u := new(big.Int).Sub(y2, big.NewInt(1))
	u.Mod(u, p)
	v := new(big.Int).Mul(c.dBig, y2)
	v.Add(v, big.NewInt(1)).Mod(v, p)
	w := new(big.Int).ModInverse(v, p)
	w.Mul(w, u).Mod(w, p)
	// p ≡ 5 (mod 8): x = w^((p+3)/8), times sqrt(-1) if that squares to -w.
	e := new(big.Int).Add(p, big.NewInt(3))
	x := new(big.Int).Exp(w, e.Rsh(e, 3), p)
	x2 := new(big.Int).Mul(x, x)
	x2.Mod(x2, p)
	if x2.Cmp(w) != 0 {
		negW := new(big.Int).Sub(p, w)
		negW.Mod(negW, p)
		if x2.Cmp(negW) != 0 {
			return nil, false
		}
		x.Mul(x, c.sqrtM1).Mod(x, p)
	}
	if x.Bit(0) == 1 {
		x.Sub(p, x)
	}
	if negative {
		x.Sub(p, x).Mod(x, p)
	}
	return x, true
}

// edPoint is a point in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z,
// x·y = T/Z, in Montgomery form.
type edPoint struct{ x, y, z, t fe }

// add sets p to p + q (add-2008-hwcd-3: complete for a = -1, so it also
// doubles).
func (c *edCurve) add(p, q *edPoint) {
	f := c.f
	var a, b, cc, d, e, ff, g, h, t fe
	f.sub(&a, &p.y, &p.x)
	f.sub(&t, &q.y, &q.x)
	f.mul(&a, &a, &t)
	f.add(&b, &p.y, &p.x)
	f.add(&t, &q.y, &q.x)
	f.mul(&b, &b, &t)
	f.mul(&cc, &p.t, &q.t)
	f.mul(&cc, &cc, &c.d2)
	f.mul(&d, &p.z, &q.z)
	f.add(&d, &d, &d)
	f.sub(&e, &b, &a)
	f.sub(&ff, &d, &cc)
	f.add(&g, &d, &cc)
	f.add(&h, &b, &a)
	f.mul(&p.x, &e, &ff)
	f.mul(&p.y, &g, &h)
	f.mul(&p.t, &e, &h)
	f.mul(&p.z, &ff, &g)
}

func (c *edCurve) affinePoint(x, y *big.Int) edPoint {
	var q edPoint
	c.f.fromBig(&q.x, x)
	c.f.fromBig(&q.y, y)
	q.z = c.f.one
	t := new(big.Int).Mul(x, y)
	c.f.fromBig(&q.t, t.Mod(t, c.p))
	return q
}

// encode returns the RFC 8032 encoding of p: y little-endian, the low bit
// of x in the top bit.
func (c *edCurve) encode(p *edPoint) []byte {
	zinv := c.f.toBig(&p.z)
	zinv.ModInverse(zinv, c.p)
	x := c.f.toBig(&p.x)
	x.Mul(x, zinv).Mod(x, c.p)
	y := c.f.toBig(&p.y)
	y.Mul(y, zinv).Mod(y, c.p)
	out := make([]byte, 32)
	y.FillBytes(out)
	reverse(out)
	out[31] |= byte(x.Bit(0)) << 7
	return out
}

func reverse(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}

func leInt(b []byte) *big.Int {
	r := bytes.Clone(b)
	reverse(r)
	return new(big.Int).SetBytes(r)
}

// verifyEd25519 reports whether sig is pub's signature of msg.
func verifyEd25519(pub edKey, msg, sig []byte) bool {
	c := ed
	if len(pub) != ed25519PublicKeySize || len(sig) != 64 || sig[63]&0xe0 != 0 {
		return false
	}
	// A: y with bit 255 cleared, reduced mod p; x from the sign bit.
	yb := bytes.Clone(pub)
	yb[31] &= 0x7f
	ay := leInt(yb)
	ay.Mod(ay, c.p)
	ax, ok := c.recoverX(ay, pub[31]>>7 == 1)
	if !ok {
		return false
	}
	s := leInt(sig[32:])
	if s.Cmp(c.l) >= 0 {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(pub)
	h.Write(msg)
	k := leInt(h.Sum(nil))
	k.Mod(k, c.l)
	// R' = [S]B + [k](-A), by Shamir's trick.
	negAx := new(big.Int).Sub(c.p, ax)
	negA := c.affinePoint(negAx.Mod(negAx, c.p), ay)
	base := c.affinePoint(c.bxBig, c.byBig)
	both := base
	c.add(&both, &negA)
	acc := edPoint{y: c.f.one, z: c.f.one}
	for i := max(s.BitLen(), k.BitLen()) - 1; i >= 0; i-- {
		c.add(&acc, &acc)
		switch s.Bit(i)<<1 | k.Bit(i) {
		case 0b10:
			c.add(&acc, &base)
		case 0b01:
			c.add(&acc, &negA)
		case 0b11:
			c.add(&acc, &both)
		}
	}
	return bytes.Equal(c.encode(&acc), sig[:32])
}
