package jose

import "math/big"

// maxLimbs holds P-521's 521 bits in 32-bit limbs.
const maxLimbs = 17

// fe is a field element in Montgomery form (x·R mod p, R = 2^(32·limbs)),
// little-endian 32-bit limbs, always fully reduced below p. 32-bit limbs
// with 64-bit accumulators need no carry flags and one i64.mul per limb
// product: wasm has no 64×64→128 multiplication, so 64-bit limbs would be
// emulated.
type fe [maxLimbs]uint32

// field is arithmetic modulo an odd prime p in Montgomery form. It is not
// constant time: it only ever sees public values (keys, signatures).
type field struct {
	limbs int
	p     fe
	pBig  *big.Int
	n0    uint32 // -p⁻¹ mod 2^32
	rr    fe     // R² mod p, as plain limbs
	one   fe     // R mod p: 1 in Montgomery form
}

func newField(p *big.Int) *field {
	f := &field{limbs: (p.BitLen() + 31) / 32, pBig: p}
	limbsOf(&f.p, p)
	// Newton iteration for p⁻¹ mod 2^32 (p is odd).
	inv := uint32(1)
	for range 5 {
		inv *= 2 - f.p[0]*inv
	}
	f.n0 = -inv
	r := new(big.Int).Lsh(big.NewInt(1), uint(32*f.limbs))
	limbsOf(&f.one, new(big.Int).Mod(r, p))
	limbsOf(&f.rr, new(big.Int).Mod(new(big.Int).Mul(r, r), p))
	return f
}

// limbsOf writes v (0 ≤ v < 2^544) into z.
func limbsOf(z *fe, v *big.Int) {
	*z = fe{}
	b := v.Bytes()
	for i := range b {
		z[i/4] |= uint32(b[len(b)-1-i]) << (8 * (i % 4))
	}
}

// fromBig sets z to v (0 ≤ v < p) in Montgomery form.
func (f *field) fromBig(z *fe, v *big.Int) {
	var t fe
	limbsOf(&t, v)
	f.mul(z, &t, &f.rr)
}

// toBig returns x out of Montgomery form.
func (f *field) toBig(x *fe) *big.Int {
	var one, t fe
	one[0] = 1
	f.mul(&t, x, &one)
	b := make([]byte, 4*f.limbs)
	for i := range b {
		b[len(b)-1-i] = byte(t[i/4] >> (8 * (i % 4)))
	}
	return new(big.Int).SetBytes(b)
}

func (f *field) isZero(x *fe) bool {
	for i := range f.limbs {
		if x[i] != 0 {
			return false
		}
	}
	return true
}

// geqP reports whether x ≥ p.
func (f *field) geqP(x *fe) bool {
	for i := f.limbs - 1; i >= 0; i-- {
		if x[i] != f.p[i] {
			return x[i] > f.p[i]
		}
	}
	return true
}

func (f *field) subP(z *fe) {
	var b uint64
	for i := range f.limbs {
		d := uint64(z[i]) - uint64(f.p[i]) - b
		z[i], b = uint32(d), d>>63
	}
}

// add sets z = x + y mod p.
func (f *field) add(z, x, y *fe) {
	var c uint64
	for i := range f.limbs {
		s := uint64(x[i]) + uint64(y[i]) + c
		z[i], c = uint32(s), s>>32
	}
	if c != 0 || f.geqP(z) {
		f.subP(z)
	}
}

// sub sets z = x - y mod p.
func (f *field) sub(z, x, y *fe) {
	var b uint64
	for i := range f.limbs {
		d := uint64(x[i]) - uint64(y[i]) - b
		z[i], b = uint32(d), d>>63
	}
	if b != 0 {
		var c uint64
		for i := range f.limbs {
			s := uint64(z[i]) + uint64(f.p[i]) + c
			z[i], c = uint32(s), s>>32
		}
	}
}

//go:generate go run gen_mul8.go

// mul sets z = x·y·R⁻¹ mod p (CIOS Montgomery multiplication). No sum
// overflows: t + x·y + c ≤ (2^32-1) + (2^32-1)² + (2^32-1) = 2^64 - 1.
func (f *field) mul(z, x, y *fe) {
	if f.limbs == 8 {
		f.mul8(z, x, y)
		return
	}
	f.mulN(z, x, y)
}

// mulN is mul for any number of limbs.
func (f *field) mulN(z, x, y *fe) {
	n := f.limbs
	var t [maxLimbs + 2]uint64
	xs, ps, ts := x[:n], f.p[:n], t[:n+2]
	for i := range n {
		var c uint64
		yi := uint64(y[i])
		for j, xj := range xs {
			s := ts[j] + uint64(xj)*yi + c
			ts[j], c = s&0xffffffff, s>>32
		}
		s := ts[n] + c
		ts[n], ts[n+1] = s&0xffffffff, s>>32
		m := uint64(uint32(ts[0]) * f.n0)
		c = (ts[0] + m*uint64(ps[0])) >> 32
		for j := 1; j < n; j++ {
			s := ts[j] + m*uint64(ps[j]) + c
			ts[j-1], c = s&0xffffffff, s>>32
		}
		s = ts[n] + c
		ts[n-1], ts[n] = s&0xffffffff, ts[n+1]+s>>32
	}
	var r fe
	for i := range n {
		r[i] = uint32(ts[i])
	}
	if ts[n] != 0 || f.geqP(&r) {
		f.subP(&r)
	}
	*z = r
}
