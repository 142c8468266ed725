package jose

import (
	"errors"
	"math/big"
)

// ECDSA verification (FIPS 186-5 §6.4.2, SEC 1 §4.1.4): scalars modulo n
// on math/big, point arithmetic on field.go's Montgomery field.
//
// The standard library's crypto/ecdsa links every NIST curve's field code,
// its FIPS self-tests (signing, DRBG, AES) and crypto/elliptic even for one
// P-256 verification: about 1.9 MB of a Proxy-Wasm module. Verification
// handles only public data (key, message, signature), so it needs no
// constant-time arithmetic and is written here in a few short functions;
// differential fuzz tests (FuzzECDSA, FuzzECPoint) hold it to crypto/ecdsa.

// curve holds the parameters of a NIST prime curve y² = x³ - 3x + b (mod p)
// with base point (gx, gy) of prime order n.
type curve struct {
	name      string
	p, n, b   *big.Int
	gx, gy    *big.Int
	bytes     int // size of a coordinate and of r and s
	orderBits int
	f         *field
}

func hexInt(s string) *big.Int {
	v, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic("jose: bad curve constant " + s)
	}
	return v
}

func newCurve(name string, bytes int, p, n, b, gx, gy string) *curve {
	c := &curve{name: name, p: hexInt(p), n: hexInt(n), b: hexInt(b), gx: hexInt(gx), gy: hexInt(gy), bytes: bytes}
	c.orderBits = c.n.BitLen()
	c.f = newField(c.p)
	return c
}

// The curve constants are those of FIPS 186-5 / SP 800-186 §3.2.1.
var (
	p256 = newCurve("P-256", 32,
		"ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
		"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
		"5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
		"6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
		"4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
	p384 = newCurve("P-384", 48,
		"fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
		"ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
		"b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
		"aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
		"3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f")
	p521 = newCurve("P-521", 66,
		"01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
		"0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
		"00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66",
		"011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650")
)

// ecKey is an EC public key, checked to lie on its curve.
type ecKey struct {
	c    *curve
	x, y *big.Int
}

// newECKey checks that (x, y) are reduced coordinates of a point on c. The
// point at infinity has no affine form, and (0, 0) is not on any of these
// curves (b ≠ 0), so a point that passes is a valid public key (the curves'
// cofactor is 1).
func newECKey(c *curve, x, y []byte) (*ecKey, error) {
	k := &ecKey{c: c, x: new(big.Int).SetBytes(x), y: new(big.Int).SetBytes(y)}
	if k.x.Cmp(c.p) >= 0 || k.y.Cmp(c.p) >= 0 {
		return nil, errors.New("coordinate not reduced modulo p")
	}
	if !c.onCurve(k.x, k.y) {
		return nil, errors.New("point not on the curve")
	}
	return k, nil
}

func (c *curve) onCurve(x, y *big.Int) bool {
	// y² = x³ - 3x + b
	lhs := new(big.Int).Mul(y, y)
	lhs.Mod(lhs, c.p)
	rhs := new(big.Int).Mul(x, x)
	rhs.Mul(rhs, x)
	three := new(big.Int).Lsh(x, 1)
	three.Add(three, x)
	rhs.Sub(rhs, three)
	rhs.Add(rhs, c.b)
	rhs.Mod(rhs, c.p)
	return lhs.Cmp(rhs) == 0
}

// verifyECDSA reports whether (r, s) is a signature by k over digest.
func verifyECDSA(k *ecKey, digest []byte, r, s *big.Int) bool {
	c := k.c
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(c.n) >= 0 || s.Cmp(c.n) >= 0 {
		return false
	}
	e := hashToInt(digest, c)
	w := new(big.Int).ModInverse(s, c.n)
	if w == nil {
		return false
	}
	u1 := e.Mul(e, w)
	u1.Mod(u1, c.n)
	u2 := w.Mul(r, w)
	u2.Mod(u2, c.n)
	x, ok := c.combined(u1, u2, k.x, k.y)
	if !ok {
		return false
	}
	x.Mod(x, c.n)
	return x.Cmp(r) == 0
}

// hashToInt takes the leftmost orderBits bits of the digest (SEC 1 §4.1.4
// step 5).
func hashToInt(digest []byte, c *curve) *big.Int {
	if n := (c.orderBits + 7) / 8; len(digest) > n {
		digest = digest[:n]
	}
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - c.orderBits; excess > 0 {
		e.Rsh(e, uint(excess))
	}
	return e
}

// The point arithmetic runs on a Montgomery representation in fixed
// 32-bit limbs (field.go): math/big's allocating modular reductions made a
// P-256 verification 40 times slower than crypto/ecdsa.

// jacobian is a point (X/Z², Y/Z³) with coordinates in Montgomery form;
// Z = 0 is the point at infinity.
type jacobian struct{ x, y, z fe }

// double sets p to 2p (dbl-2001-b, for a = -3).
func (f *field) double(p *jacobian) {
	if f.isZero(&p.z) || f.isZero(&p.y) {
		p.z = fe{}
		return
	}
	var delta, gamma, beta, alpha, t, u fe
	f.mul(&delta, &p.z, &p.z)
	f.mul(&gamma, &p.y, &p.y)
	f.mul(&beta, &p.x, &gamma)
	f.sub(&t, &p.x, &delta)
	f.add(&u, &p.x, &delta)
	f.mul(&alpha, &t, &u)
	f.add(&t, &alpha, &alpha)
	f.add(&alpha, &t, &alpha) // 3(X-δ)(X+δ)
	// Z3 = (Y+Z)² - γ - δ
	f.add(&t, &p.y, &p.z)
	f.mul(&u, &t, &t)
	f.sub(&u, &u, &gamma)
	f.sub(&p.z, &u, &delta)
	// X3 = α² - 8β
	var beta4, beta8 fe
	f.add(&beta4, &beta, &beta)
	f.add(&beta4, &beta4, &beta4)
	f.add(&beta8, &beta4, &beta4)
	f.mul(&t, &alpha, &alpha)
	f.sub(&p.x, &t, &beta8)
	// Y3 = α(4β - X3) - 8γ²
	f.sub(&t, &beta4, &p.x)
	f.mul(&u, &alpha, &t)
	f.mul(&t, &gamma, &gamma)
	f.add(&t, &t, &t)
	f.add(&t, &t, &t)
	f.add(&t, &t, &t)
	f.sub(&p.y, &u, &t)
}

// addAffine sets p to p + (x2, y2) for an affine point (mixed addition,
// madd-2004-hmv).
func (f *field) addAffine(p *jacobian, x2, y2 *fe) {
	if f.isZero(&p.z) {
		p.x, p.y, p.z = *x2, *y2, f.one
		return
	}
	var z1z1, u2, s2, h, r, t fe
	f.mul(&z1z1, &p.z, &p.z)
	f.mul(&u2, x2, &z1z1)
	f.mul(&t, &p.z, &z1z1)
	f.mul(&s2, y2, &t)
	f.sub(&h, &u2, &p.x)
	f.sub(&r, &s2, &p.y)
	if f.isZero(&h) {
		if f.isZero(&r) {
			f.double(p)
		} else {
			p.z = fe{}
		}
		return
	}
	var hh, hhh, v, x3 fe
	f.mul(&hh, &h, &h)
	f.mul(&hhh, &hh, &h)
	f.mul(&v, &p.x, &hh)
	f.mul(&x3, &r, &r)
	f.sub(&x3, &x3, &hhh)
	f.sub(&x3, &x3, &v)
	f.sub(&x3, &x3, &v)
	f.sub(&t, &v, &x3)
	f.mul(&t, &r, &t)
	f.mul(&u2, &p.y, &hhh)
	f.sub(&p.y, &t, &u2)
	f.mul(&p.z, &p.z, &h)
	p.x = x3
}

// affine converts p to affine big integers; ok is false for infinity.
func (f *field) affine(p *jacobian) (x, y *big.Int, ok bool) {
	if f.isZero(&p.z) {
		return nil, nil, false
	}
	z := f.toBig(&p.z)
	zinv := z.ModInverse(z, f.pBig)
	zinv2 := new(big.Int).Mul(zinv, zinv)
	zinv2.Mod(zinv2, f.pBig)
	x = f.toBig(&p.x)
	x.Mul(x, zinv2)
	x.Mod(x, f.pBig)
	y = f.toBig(&p.y)
	y.Mul(y, zinv2)
	y.Mul(y, zinv)
	y.Mod(y, f.pBig)
	return x, y, true
}

// combined returns the x coordinate of u1·G + u2·Q by Shamir's trick (one
// pass over the bits of both scalars); ok is false when the sum is the
// point at infinity.
func (c *curve) combined(u1, u2, qx, qy *big.Int) (*big.Int, bool) {
	f := c.f
	var g, q, gq [2]fe
	f.fromBig(&g[0], c.gx)
	f.fromBig(&g[1], c.gy)
	f.fromBig(&q[0], qx)
	f.fromBig(&q[1], qy)
	// G+Q in affine form; when it is infinity (Q = -G) the bit pair 1,1
	// adds nothing.
	sum := jacobian{g[0], g[1], f.one}
	f.addAffine(&sum, &q[0], &q[1])
	gqx, gqy, gqFinite := f.affine(&sum)
	if gqFinite {
		f.fromBig(&gq[0], gqx)
		f.fromBig(&gq[1], gqy)
	}
	var acc jacobian
	for i := max(u1.BitLen(), u2.BitLen()) - 1; i >= 0; i-- {
		f.double(&acc)
		switch u1.Bit(i)<<1 | u2.Bit(i) {
		case 0b10:
			f.addAffine(&acc, &g[0], &g[1])
		case 0b01:
			f.addAffine(&acc, &q[0], &q[1])
		case 0b11:
			if gqFinite {
				f.addAffine(&acc, &gq[0], &gq[1])
			}
		}
	}
	x, _, ok := f.affine(&acc)
	return x, ok
}
