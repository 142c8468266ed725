package jose

import (
	"bytes"
	"crypto"
	"errors"
	"hash"
	"math/big"
)

// RSA signature verification (RFC 8017 §8.1.2 RSASSA-PSS, §8.2.2
// RSASSA-PKCS1-v1_5) on math/big: crypto/rsa adds about 0.7 MB of FIPS
// module code to a Proxy-Wasm filter, and verification needs only one
// public-exponent modular exponentiation over public data. A differential
// fuzz test holds it to crypto/rsa.

// rsaKey is an RSA public key with a modulus of MinRSABits to MaxRSABits.
type rsaKey struct {
	n *big.Int
	e int
}

var errRSA = errors.New("RSA verification failed")

// digestInfo are the DER DigestInfo prefixes of RFC 8017 §9.2 note 1.
var digestInfo = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// encrypt is RSAVP1 (§5.2.2): the signature, exactly k bytes and below n,
// raised to e, as a k-byte big-endian string.
func (k *rsaKey) encrypt(sig []byte) ([]byte, error) {
	size := (k.n.BitLen() + 7) / 8
	if len(sig) != size {
		return nil, errRSA
	}
	s := new(big.Int).SetBytes(sig)
	if s.Cmp(k.n) >= 0 {
		return nil, errRSA
	}
	m := new(big.Int).Exp(s, big.NewInt(int64(k.e)), k.n)
	return m.FillBytes(make([]byte, size)), nil
}

// verifyPKCS1v15 checks an RSASSA-PKCS1-v1_5 signature by comparing the
// whole encoded message, as §8.2.2 step 4 prescribes (no parsing of
// attacker-chosen padding).
func verifyPKCS1v15(k *rsaKey, h crypto.Hash, digest, sig []byte) error {
	prefix, ok := digestInfo[h]
	if !ok || len(digest) != h.Size() {
		return errRSA
	}
	em, err := k.encrypt(sig)
	if err != nil {
		return err
	}
	tLen := len(prefix) + len(digest)
	if len(em) < tLen+11 {
		return errRSA
	}
	want := make([]byte, len(em))
	want[1] = 1
	for i := 2; i < len(em)-tLen-1; i++ {
		want[i] = 0xff
	}
	copy(want[len(em)-tLen:], prefix)
	copy(want[len(em)-len(digest):], digest)
	if !bytes.Equal(em, want) {
		return errRSA
	}
	return nil
}

// verifyPSS checks an RSASSA-PSS signature with MGF1 over the same hash and
// a salt as long as the hash (RFC 7518 §3.5), EMSA-PSS-VERIFY of §9.1.2.
func verifyPSS(k *rsaKey, h crypto.Hash, newHash func() hash.Hash, digest, sig []byte) error {
	hLen := h.Size()
	if len(digest) != hLen {
		return errRSA
	}
	em, err := k.encrypt(sig)
	if err != nil {
		return err
	}
	emBits := k.n.BitLen() - 1
	emLen := (emBits + 7) / 8
	// When emBits is a multiple of 8, RSAVP1's k-byte output has one more
	// leading byte than EM, and it must be zero.
	if len(em) > emLen {
		if em[0] != 0 {
			return errRSA
		}
		em = em[1:]
	}
	sLen := hLen
	if emLen < hLen+sLen+2 || em[emLen-1] != 0xbc {
		return errRSA
	}
	db := bytes.Clone(em[:emLen-hLen-1])
	hPrime := em[emLen-hLen-1 : emLen-1]
	topMask := byte(0xff >> (8*emLen - emBits))
	if db[0]&^topMask != 0 {
		return errRSA
	}
	mgf1XOR(db, newHash, hPrime)
	db[0] &= topMask
	ps := db[:emLen-hLen-sLen-2]
	for _, b := range ps {
		if b != 0 {
			return errRSA
		}
	}
	if db[len(ps)] != 1 {
		return errRSA
	}
	salt := db[len(db)-sLen:]
	d := newHash()
	d.Write(make([]byte, 8))
	d.Write(digest)
	d.Write(salt)
	if !bytes.Equal(d.Sum(nil), hPrime) {
		return errRSA
	}
	return nil
}

// mgf1XOR XORs out with MGF1(seed) (RFC 8017 §B.2.1).
func mgf1XOR(out []byte, newHash func() hash.Hash, seed []byte) {
	var counter [4]byte
	d := newHash()
	for done := 0; done < len(out); {
		d.Reset()
		d.Write(seed)
		d.Write(counter[:])
		block := d.Sum(nil)
		for i := 0; i < len(block) && done < len(out); i++ {
			out[done] ^= block[i]
			done++
		}
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}
