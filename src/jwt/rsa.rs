//! RSASSA-PKCS1-v1_5 verification (RS256/384/512, RFC 8017 §8.2.2) with a modular exponentiation
//! shaped for Wasm.
//!
//! Why by hand: verifying a token is one public-key operation, `s^e mod n`, and inside a Wasm VM
//! it is the whole cost of an uncached RS256 token. Measured under V8 (Node 20, the engine
//! family Envoy embeds) on this project's machine, per 2048-bit RS256 verification: `ring`
//! 0.17 240–280 µs, RustCrypto `rsa` 0.10 (crypto-bigint) 363 µs. Two things make them slow
//! there: both multiply 32-bit limbs with a carry chain per product (Wasm has a 64-bit
//! multiply but no 64×64→128 one and no add-with-carry), and `ring` recomputes the key's
//! Montgomery constant R² mod n on every call (about a third of its time) because its public
//! API cannot keep a parsed public key. Here a key is prepared once when the key set is loaded,
//! and limbs are 28 bits wide in 64-bit words: a product of two limbs is below 2^56, so a whole
//! column of products sums in one 64-bit accumulator with no carry handling at all
//! (product-scanning Montgomery multiplication, Koç et al. 1996, "FIPS"). There is no library
//! for this: the bignum crates are built around full-width limbs.
//!
//! Only public values are involved (the key, the signature, the signed message), so the code
//! need not be constant-time. PSS stays with `ring`.

use sha2::{Digest, Sha256};

const LIMB_BITS: u32 = 28;
const MASK: u64 = (1 << LIMB_BITS) - 1;
/// Products summed into one accumulator before its high part is moved out: each is below
/// 2^56, so 128 of them plus a carry stay below 2^64.
const CHUNK: usize = 128;

/// Moduli gatehouse verifies with: 2048 (RFC 7518 §3.3's minimum) to 8192 bits, as `ring`.
pub const MIN_BITS: usize = 2048;
pub const MAX_BITS: usize = 8192;

/// A public key prepared for verification: the modulus in 28-bit limbs and its Montgomery
/// constants.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    /// The modulus, big-endian, without leading zeros (the signature's length).
    n_bytes: Vec<u8>,
    /// The modulus in 28-bit limbs, least significant first; as u32, and reversed.
    n: Vec<u64>,
    n32: Vec<u32>,
    n_rev: Vec<u32>,
    /// −n⁻¹ mod 2^28.
    n0inv: u64,
    /// R² mod n, R = 2^(28·limbs), in limbs.
    rr: Vec<u64>,
    e: u64,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bits, e={})", self.bits(), self.e)
    }
}

/// The hash of an RS* algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl RsaKey {
    /// Prepares a key from its big-endian modulus and exponent. `None` unless the modulus is
    /// odd and 2048–8192 bits, and the exponent odd, at least 3 and below 2^33 (as `ring`).
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaKey> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = bit_len(n);
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || n.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        if e.len() > 5 {
            return None;
        }
        let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if e < 3 || e & 1 == 0 || e >= 1 << 33 {
            return None;
        }
        let limbs = to_limbs(n, bits.div_ceil(LIMB_BITS as usize))?;
        let n0 = *limbs.first()?;
        // Newton's iteration doubles the correct low bits each step: 1 → 2 → … → 32 ≥ 28.
        let mut inv: u64 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let n0inv = inv.wrapping_neg() & MASK;
        let rr = r_squared(&limbs)?;
        let n32: Vec<u32> = limbs.iter().map(|l| *l as u32).collect();
        let n_rev = n32.iter().rev().copied().collect();
        Some(RsaKey { n_bytes: n.to_vec(), n: limbs, n32, n_rev, n0inv, rr, e })
    }

    pub fn bits(&self) -> usize {
        bit_len(&self.n_bytes)
    }

    /// Verifies an RSASSA-PKCS1-v1_5 signature of `message` (RFC 8017 §8.2.2).
    pub fn verify_pkcs1(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let k = self.n_bytes.len();
        if signature.len() != k {
            return false;
        }
        let Some(m) = self.public_op(signature) else { return false };
        let (prefix, digest): (&[u8], Vec<u8>) = match hash {
            Hash::Sha256 => (&SHA256_PREFIX, Sha256::digest(message).to_vec()),
            // ring's SHA-512 is in the module anyway (Ed25519, ES384): sha2's would be 11 KB more.
            Hash::Sha384 => (&SHA384_PREFIX, ring::digest::digest(&ring::digest::SHA384, message).as_ref().to_vec()),
            Hash::Sha512 => (&SHA512_PREFIX, ring::digest::digest(&ring::digest::SHA512, message).as_ref().to_vec()),
        };
        // EM = 0x00 ‖ 0x01 ‖ PS (0xff…, at least 8) ‖ 0x00 ‖ DigestInfo, compared whole.
        let t_len = prefix.len() + digest.len();
        let Some(ps_len) = k.checked_sub(t_len + 3).filter(|l| *l >= 8) else { return false };
        let mut expected = Vec::with_capacity(k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(&digest);
        m == expected
    }

    /// `s^e mod n` as k big-endian bytes; `None` if `s ≥ n`.
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        let len = self.n.len();
        let s = to_limbs(signature, len)?;
        if !less_than(&s, &self.n) {
            return None;
        }
        let mut scratch = Scratch::new(len);
        // Into the Montgomery domain (s·R), square-and-multiply over e's bits, and back out.
        let s_m = self.mont_mul(&s, &self.rr, &mut scratch);
        let mut x = s_m.clone();
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            x = self.mont_mul(&x, &x, &mut scratch);
            if self.e >> bit & 1 == 1 {
                x = self.mont_mul(&x, &s_m, &mut scratch);
            }
        }
        let mut one = vec![0u64; len];
        if let Some(first) = one.first_mut() {
            *first = 1;
        }
        let m = self.mont_mul(&x, &one, &mut scratch);
        Some(from_limbs(&m, self.n_bytes.len()))
    }

    /// Montgomery product a·b·R⁻¹ mod n, for a, b < n (column by column: each column sums its
    /// products of a·b and of m·n, then yields one limb of m, or of the result). Passing the
    /// same slice twice squares, with half the products. The second factor of every column is
    /// read from a reversed copy, so that each column sum is a dot product of two ascending runs
    /// (what SIMD loads want).
    // Every index below is < len (k < len in the first loop, from..len in the second), and a,
    // b, m and n all have len limbs, checked on entry.
    #[allow(clippy::indexing_slicing)]
    fn mont_mul(&self, a: &[u64], b: &[u64], scratch: &mut Scratch) -> Vec<u64> {
        let len = self.n.len();
        let square = std::ptr::eq(a, b);
        let Scratch { m, a32, rev } = scratch;
        if a.len() != len || b.len() != len || m.len() != len || a32.len() != len || rev.len() != len || len == 0 {
            return vec![0; len]; // unreachable: every caller passes len-limb values
        }
        // Limbs are below 2^28: they fit u32.
        for (d, s) in a32.iter_mut().zip(a) {
            *d = *s as u32;
        }
        for (d, s) in rev.iter_mut().zip(b.iter().rev()) {
            *d = *s as u32;
        }
        let (n, n_rev) = (&self.n32, &self.n_rev);
        let mut out = vec![0u64; len + 1];
        let (mut lo, mut hi) = (0u64, 0u64);
        for k in 0..len {
            // Σ a[i]·b[k−i], i = 0..=k (b[k−i] = rev[len−1−k+i]), and Σ m[i]·n[k−i], i = 0..k.
            let r = len - 1 - k;
            if square {
                // a[i]·a[k−i] = a[k−i]·a[i]: each pair once, doubled, and the middle square.
                let h = k.div_ceil(2);
                column::<1>(&mut lo, &mut hi, &a32[..h], &rev[r..r + h]);
                if k % 2 == 0 {
                    lo += u64::from(a32[k / 2]) * u64::from(a32[k / 2]);
                }
            } else {
                column::<0>(&mut lo, &mut hi, &a32[..=k], &rev[r..]);
            }
            column::<0>(&mut lo, &mut hi, &m[..k], &n_rev[r..len - 1]);
            let mk = ((lo & MASK) * self.n0inv) & MASK;
            m[k] = mk as u32;
            lo += mk * u64::from(n[0]);
            // The low 28 bits are now zero: move on to the next column.
            lo = (lo >> LIMB_BITS) + hi;
            hi = 0;
        }
        for k in len..2 * len - 1 {
            // The same sums over i = k−len+1..len.
            let from = k + 1 - len;
            let t = len - from;
            if square {
                let h = t / 2;
                column::<1>(&mut lo, &mut hi, &a32[from..from + h], &rev[..h]);
                if k % 2 == 0 {
                    lo += u64::from(a32[k / 2]) * u64::from(a32[k / 2]);
                }
            } else {
                column::<0>(&mut lo, &mut hi, &a32[from..], &rev[..t]);
            }
            column::<0>(&mut lo, &mut hi, &m[from..], &n_rev[..t]);
            out[k - len] = lo & MASK;
            lo = (lo >> LIMB_BITS) + hi;
            hi = 0;
        }
        out[len - 1] = lo & MASK;
        out[len] = lo >> LIMB_BITS;
        // The result is below 2n: one conditional subtraction.
        if !less_than(&out, &self.n) {
            sub_in_place(&mut out, &self.n);
        }
        out.truncate(len);
        out
    }
}

/// Working space of one exponentiation.
struct Scratch {
    /// The m limbs of the Montgomery reduction.
    m: Vec<u32>,
    /// The first factor, as u32.
    a32: Vec<u32>,
    /// The second factor, reversed.
    rev: Vec<u32>,
}

impl Scratch {
    fn new(len: usize) -> Scratch {
        Scratch { m: vec![0; len], a32: vec![0; len], rev: vec![0; len] }
    }
}

/// Adds 2^SHIFT · Σ x[i]·y[i] (the products of one column) to the accumulator `lo`, moving its
/// high part to `hi` every CHUNK >> SHIFT products (SHIFT 1 counts the cross products of a
/// square twice).
#[inline(always)]
fn column<const SHIFT: u32>(lo: &mut u64, hi: &mut u64, x: &[u32], y: &[u32]) {
    let chunk = CHUNK >> SHIFT;
    for (xc, yc) in x.chunks(chunk).zip(y.chunks(chunk)) {
        // `lo` is below 2^38 here (a carry), the scaled sum below 128·2^56 = 2^63.
        *lo += dot(xc, yc) << SHIFT;
        *hi += *lo >> LIMB_BITS;
        *lo &= MASK;
    }
}

/// Σ x[i]·y[i] over the shorter length (each product below 2^56; callers bound the count).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn dot(x: &[u32], y: &[u32]) -> u64 {
    x.iter().zip(y).map(|(p, q)| u64::from(*p) * u64::from(*q)).sum()
}

/// Σ x[i]·y[i], four products per step: Wasm SIMD's `i64x2.extmul_{low,high}_i32x4_u` is the
/// 32×32→64 multiply of two lanes at once (one `pmuludq` on x86).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot(x: &[u32], y: &[u32]) -> u64 {
    use core::arch::wasm32::{
        i64x2_add, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, u64x2_extract_lane, u64x2_splat, v128, v128_load,
    };
    let mut acc = u64x2_splat(0);
    let (xs, ys) = (x.chunks_exact(4), y.chunks_exact(4));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (p, q) in xs.zip(ys) {
        // SAFETY: `chunks_exact(4)` gives 16 readable bytes; Wasm loads need no alignment.
        let (pv, qv) = unsafe { (v128_load(p.as_ptr().cast::<v128>()), v128_load(q.as_ptr().cast::<v128>())) };
        acc = i64x2_add(acc, u64x2_extmul_low_u32x4(pv, qv));
        acc = i64x2_add(acc, u64x2_extmul_high_u32x4(pv, qv));
    }
    let tail: u64 = x_rest.iter().zip(y_rest).map(|(p, q)| u64::from(*p) * u64::from(*q)).sum();
    u64x2_extract_lane::<0>(acc) + u64x2_extract_lane::<1>(acc) + tail
}

/// R² mod n by doubling: 1 doubled 2·28·len times, reduced each time.
fn r_squared(n: &[u64]) -> Option<Vec<u64>> {
    let len = n.len();
    let mut x = vec![0u64; len + 1];
    *x.first_mut()? = 1;
    for _ in 0..2 * LIMB_BITS as usize * len {
        let mut carry = 0;
        for limb in x.iter_mut() {
            let v = (*limb << 1) | carry;
            carry = v >> LIMB_BITS;
            *limb = v & MASK;
        }
        if !less_than(&x, n) {
            sub_in_place(&mut x, n);
        }
    }
    x.truncate(len);
    Some(x)
}

/// a < b, for little-endian limb vectors (the longer one's extra limbs must be zero to be equal).
fn less_than(a: &[u64], b: &[u64]) -> bool {
    let len = a.len().max(b.len());
    for i in (0..len).rev() {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        if x != y {
            return x < y;
        }
    }
    false
}

/// a −= b, for a ≥ b.
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (i, limb) in a.iter_mut().enumerate() {
        let v = limb.wrapping_sub(b.get(i).copied().unwrap_or(0)).wrapping_sub(borrow);
        borrow = (v >> 63) & 1;
        *limb = v & MASK;
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn bit_len(bytes: &[u8]) -> usize {
    let bytes = strip_zeros(bytes);
    match bytes.first() {
        Some(top) => bytes.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Big-endian bytes to `len` 28-bit limbs; `None` if the value does not fit.
fn to_limbs(bytes: &[u8], len: usize) -> Option<Vec<u64>> {
    let bytes = strip_zeros(bytes);
    if bit_len(bytes) > len * LIMB_BITS as usize {
        return None;
    }
    let mut limbs = vec![0u64; len];
    let (mut acc, mut acc_bits, mut i) = (0u64, 0u32, 0usize);
    for byte in bytes.iter().rev() {
        acc |= u64::from(*byte) << acc_bits;
        acc_bits += 8;
        if acc_bits >= LIMB_BITS {
            *limbs.get_mut(i)? = acc & MASK;
            i += 1;
            acc >>= LIMB_BITS;
            acc_bits -= LIMB_BITS;
        }
    }
    if acc != 0 {
        *limbs.get_mut(i)? = acc;
    }
    Some(limbs)
}

/// Limbs to `len` big-endian bytes.
fn from_limbs(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let (mut acc, mut acc_bits) = (0u64, 0u32);
    let mut limbs = limbs.iter();
    for byte in out.iter_mut().rev() {
        if acc_bits < 8 {
            acc |= limbs.next().copied().unwrap_or(0) << acc_bits;
            acc_bits += LIMB_BITS;
        }
        *byte = (acc & 0xff) as u8;
        acc >>= 8;
        acc_bits -= 8;
    }
    out
}

/// DER DigestInfo prefixes (RFC 8017 §9.2, note 1).
const SHA256_PREFIX: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
const SHA384_PREFIX: [u8; 19] =
    [0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30];
const SHA512_PREFIX: [u8; 19] =
    [0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40];

#[cfg(test)]
#[path = "rsa_tests.rs"]
mod tests;
