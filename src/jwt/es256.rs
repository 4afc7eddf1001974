//! ES256 verification (ECDSA over P-256 with SHA-256; SEC 1 v2 §4.1.4, FIPS 186-5 §6.4.2)
//! with a per-key precomputed table.
//!
//! Why: inside a Wasm VM an ES256 verification is dominated by the point multiplications of
//! R = u1·G + u2·Q. `ring` 0.17 and RustCrypto `p256` 0.14 (`VerifyingKey::verify`) spend about
//! 256 point doublings plus ~100 additions on it: 630–730 µs under V8. Public keys come from a
//! JWKS and verify thousands of tokens, so here each key is prepared once: a fixed-base table
//! of j·2^(7i)·Q (i = 0..36, j = 1..64, affine) turns u2·Q into 37 mixed additions and no
//! doublings; u1·G uses a table of the same shape for G (window 8: 33 additions), built once
//! per process. About 70 mixed Jacobian additions in all: ~100 µs per verification in V8.
//!
//! Field arithmetic is `p256`'s own (`FieldArithmetic::FieldElement`, through its `hazmat`
//! trait); only the point formulas (Jacobian, a = −3) are written here. On wasm32 that field
//! uses 64-bit limbs, so each limb product is a call to compiler-builtins' `__multi3`: ~110 ns
//! per field multiplication in V8, and 80–85% of a verification. Everything involved is public
//! (key, signature, message), so the code is variable-time on purpose.
//!
//! Memory: 37·64 affine points of 64 bytes = 151,552 bytes per key, plus one static table for
//! G of 33·128 points = 270,336 bytes, built by the first `PreparedP256Key::new`. In V8,
//! preparing a key takes ~5.5 ms (the first one, with G's table and cold code, ~20–26 ms);
//! [`LazyP256Key`] does it when the key first verifies a token.

use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::hazmat::FieldArithmetic;
use p256::elliptic_curve::ops::Reduce;
use p256::{FieldBytes, NistP256, Scalar};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::OnceLock;

type Fe = <NistP256 as FieldArithmetic>::FieldElement;

/// Window of the per-key table for Q (5..=8): 7 → 151,552 bytes per key, 37 additions.
const W_Q: usize = 7;
/// Window of the process-wide table for G (5..=8): 8 → 270,336 bytes once, 33 additions.
const W_G: usize = 8;

/// Signed digits of a scalar < 2^256 in radix 2^w: one more than 256 / w.
const fn digit_count(w: usize) -> usize {
    256 / w + 1
}

/// Multiples per window: digits are in [−2^(w−1)+1, 2^(w−1)].
const fn half(w: usize) -> usize {
    1 << (w - 1)
}

const MAX_DIGITS: usize = digit_count(5);
// `recode` writes at most MAX_DIGITS digits and an i16 holds a digit of up to 8 bits.
const _: () = assert!(W_Q >= 5 && W_Q <= 8 && W_G >= 5 && W_G <= 8);

/// b of y² = x³ − 3x + b (SEC 2 §2.4.2), big-endian.
const B_BE: [u8; 32] = [
    0x5a, 0xc6, 0x35, 0xd8, 0xaa, 0x3a, 0x93, 0xe7, 0xb3, 0xeb, 0xbd, 0x55, 0x76, 0x98, 0x86, 0xbc, 0x65, 0x1d, 0x06,
    0xb0, 0xcc, 0x53, 0xb0, 0xf6, 0x3b, 0xce, 0x3c, 0x3e, 0x27, 0xd2, 0x60, 0x4b,
];
const GX_BE: [u8; 32] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d,
    0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];
const GY_BE: [u8; 32] = [
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33,
    0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];
/// The group order n.
const N_BE: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// p − n: an x-coordinate x ≥ n gives r = x − n, which is below p − n.
const P_MINUS_N_BE: [u8; 32] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x43, 0x19, 0x05,
    0x53, 0x58, 0xe8, 0x61, 0x7b, 0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
];

/// An ES256 public key prepared for verification.
#[derive(Clone)]
pub struct PreparedP256Key {
    /// The uncompressed SEC1 point it was made from (`0x04 ‖ x ‖ y`).
    point: [u8; 65],
    /// Window i (i = 0..digit_count(W_Q)) holds j·2^(W_Q·i)·Q for j = 1..=half(W_Q).
    table: Box<[Aff]>,
}

impl PartialEq for PreparedP256Key {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl Eq for PreparedP256Key {}

impl fmt::Debug for PreparedP256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreparedP256Key")
    }
}

impl PreparedP256Key {
    /// Prepares an uncompressed SEC1 point (`0x04 ‖ x ‖ y`, 65 bytes). `None` unless x, y < p
    /// and the point is on the curve (which also rules out the identity, which has no such
    /// encoding). Compressed points are not accepted: a JWK carries both coordinates.
    pub fn new(sec1: &[u8]) -> Option<Self> {
        let (point, q) = parse_point(sec1)?;
        let table = build_table(&q, W_Q)?;
        // Build G's table now (once per VM) rather than in the middle of a verification.
        g_table()?;
        Some(Self { point, table })
    }

    /// Bytes held by the table.
    #[cfg(test)]
    pub fn table_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table)
    }

    /// Verifies a 64-byte `r ‖ s` signature (JWS ES256, RFC 7518 §3.4) over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.verify_digest(&digest, sig)
    }

    /// Verifies a 64-byte `r ‖ s` signature over a SHA-256 digest.
    pub fn verify_digest(&self, digest: &[u8; 32], sig: &[u8]) -> bool {
        self.verify_inner(digest, sig).unwrap_or(false)
    }

    fn verify_inner(&self, digest: &[u8; 32], sig: &[u8]) -> Option<bool> {
        verify_with(digest, sig, |u2| add_multiple(Jac::IDENTITY, &self.table, u2, W_Q))
    }
}

/// An ES256 key verified without a table of its own: u2·Q by signed 5-bit windows (255
/// doublings and 52 additions over 1·Q..16·Q, made for each verification), u1·G by the shared
/// table for G. For keys beyond the number prepared (`MAX_PREPARED_ES256` in jwks.rs): about
/// five times a prepared key's time (280 against 56 µs on an x86-64 host), and no memory held
/// per key. (It replaces `ring`'s P-256, which was 35 KB of the module for this one path.)
pub struct PlainP256Key {
    q: Aff,
}

impl PlainP256Key {
    /// Checks the point as [`PreparedP256Key::new`] does.
    pub fn new(sec1: &[u8]) -> Option<Self> {
        let (_, q) = parse_point(sec1)?;
        Some(Self { q })
    }

    /// Verifies a 64-byte `r ‖ s` signature (JWS ES256) over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.verify_digest(&digest, sig)
    }

    /// Verifies a 64-byte `r ‖ s` signature over a SHA-256 digest.
    pub fn verify_digest(&self, digest: &[u8; 32], sig: &[u8]) -> bool {
        verify_with(digest, sig, |u2| self.times(u2)).unwrap_or(false)
    }

    /// k·Q, most significant window first.
    fn times(&self, k: &Scalar) -> Option<Jac> {
        const W: usize = 5;
        let mut multiples = Vec::with_capacity(half(W));
        let mut cur = Jac::from(self.q);
        multiples.push(cur);
        for _ in 1..half(W) {
            cur = cur.add_aff(&self.q, false);
            multiples.push(cur);
        }
        let table = batch_to_affine(&multiples)?;
        let mut digits = [0i16; MAX_DIGITS];
        recode(k, W, &mut digits);
        let mut acc = Jac::IDENTITY;
        for &d in digits.iter().take(digit_count(W)).rev() {
            for _ in 0..W {
                acc = acc.double();
            }
            if d != 0 {
                acc = acc.add_aff(table.get(usize::from(d.unsigned_abs()) - 1)?, d < 0);
            }
        }
        Some(acc)
    }
}

/// ECDSA verification (r, s ∈ [1, n − 1]; no low-s rule: JWS has none) with u2·Q computed by
/// `u2_times_q`.
fn verify_with(digest: &[u8; 32], sig: &[u8], u2_times_q: impl FnOnce(&Scalar) -> Option<Jac>) -> Option<bool> {
    let sig: &[u8; 64] = sig.try_into().ok()?;
    let (r_be, s_be) = sig.split_at(32);
    let r = scalar_nonzero(r_be)?;
    let s = scalar_nonzero(s_be)?;
    // e: the digest's leftmost 256 bits (all of it) reduced mod n.
    let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(*digest));
    let w: Scalar = Option::from(s.invert_vartime())?;
    let u1 = e * w;
    let u2 = r * w;

    let acc = u2_times_q(&u2)?;
    let acc = add_multiple(acc, g_table()?, &u1, W_G)?;
    if acc.is_identity() {
        return Some(false);
    }
    // x(R) = X/Z²; accept iff x(R) mod n == r, i.e. x(R) ∈ {r, r + n} (r + n only when < p).
    let r_fe = fe_from_be(r_be)?;
    let z2 = acc.z.square();
    if r_fe * z2 == acc.x {
        return Some(true);
    }
    if r_be < P_MINUS_N_BE.as_slice() {
        return Some((r_fe + fe_from_be(&N_BE)?) * z2 == acc.x);
    }
    Some(false)
}

/// An uncompressed SEC1 point and its affine coordinates, if valid (see [`PreparedP256Key::new`]).
fn parse_point(sec1: &[u8]) -> Option<([u8; 65], Aff)> {
    let point: [u8; 65] = sec1.try_into().ok()?;
    let (tag, xy) = point.split_first()?;
    if *tag != 4 {
        return None;
    }
    let (x, y) = xy.split_at(32);
    let q = Aff { x: fe_from_be(x)?, y: fe_from_be(y)? };
    q.on_curve().then_some((point, q))
}

/// An ES256 key whose tables are built when it first verifies a token: a key set may publish
/// ES256 keys that are never used (and the first one also builds the table for G), so loading
/// keys stays quick and costs no memory for them.
pub struct LazyP256Key {
    point: [u8; 65],
    prepared: OnceLock<Option<PreparedP256Key>>,
}

impl LazyP256Key {
    /// Checks the point as [`PreparedP256Key::new`] does, without building anything.
    pub fn new(sec1: &[u8]) -> Option<Self> {
        let (point, _) = parse_point(sec1)?;
        Some(Self { point, prepared: OnceLock::new() })
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        self.prepared
            .get_or_init(|| PreparedP256Key::new(&self.point))
            .as_ref()
            .is_some_and(|key| key.verify(message, sig))
    }

    /// Whether the tables have been built.
    pub fn is_prepared(&self) -> bool {
        self.prepared.get().is_some_and(Option::is_some)
    }
}

impl PartialEq for LazyP256Key {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl Eq for LazyP256Key {}

impl fmt::Debug for LazyP256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyP256Key(prepared: {})", self.is_prepared())
    }
}

/// acc + k·P, P given by its fixed-base table of window `w` (no doublings).
#[inline]
fn add_multiple(mut acc: Jac, table: &[Aff], k: &Scalar, w: usize) -> Option<Jac> {
    let mut digits = [0i16; MAX_DIGITS];
    recode(k, w, &mut digits);
    let h = half(w);
    for (window, &d) in table.chunks_exact(h).zip(digits.iter()) {
        if d != 0 {
            let p = window.get(usize::from(d.unsigned_abs()) - 1)?;
            acc = acc.add_aff(p, d < 0);
        }
    }
    Some(acc)
}

/// A scalar in [1, n − 1] from 32 big-endian bytes.
fn scalar_nonzero(be: &[u8]) -> Option<Scalar> {
    let fb = FieldBytes::try_from(be).ok()?;
    let s: Scalar = Option::from(Scalar::from_repr(fb))?;
    (!bool::from(s.is_zero())).then_some(s)
}

/// Field element from 32 big-endian bytes; `None` unless below p.
fn fe_from_be(be: &[u8]) -> Option<Fe> {
    let fb = FieldBytes::try_from(be).ok()?;
    Option::from(Fe::from_repr(fb))
}

/// Signed fixed-window recoding: k = Σ digits[i]·2^(w·i), digits[i] ∈ [−2^(w−1)+1, 2^(w−1)].
fn recode(k: &Scalar, w: usize, digits: &mut [i16; MAX_DIGITS]) {
    // little-endian 64-bit limbs, plus a zero limb so that every window can read two
    let mut limbs = [0u64; 5];
    for (limb, chunk) in limbs.iter_mut().zip(k.to_bytes().rchunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *limb = u64::from_be_bytes(b);
    }
    let mask = (1u64 << w) - 1;
    let half = 1i16 << (w - 1);
    let mut carry = 0i16;
    for (i, digit) in digits.iter_mut().enumerate().take(digit_count(w)) {
        let pos = i * w;
        let (word, shift) = (pos / 64, pos % 64);
        let lo = limbs.get(word).copied().unwrap_or(0) >> shift;
        let hi = match shift {
            0 => 0,
            _ => limbs.get(word + 1).copied().unwrap_or(0) << (64 - shift),
        };
        // w ≤ 8 bits: fits an i16
        let v = ((lo | hi) & mask) as i16 + carry;
        (*digit, carry) = if v > half { (v - (1 << w), 1) } else { (v, 0) };
    }
}

/// The process-wide table for G.
fn g_table() -> Option<&'static [Aff]> {
    static TABLE: OnceLock<Option<Box<[Aff]>>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let g = Aff { x: fe_from_be(&GX_BE)?, y: fe_from_be(&GY_BE)? };
            build_table(&g, W_G)
        })
        .as_deref()
}

/// Windows i = 0..digit_count(w), each j·2^(w·i)·P for j = 1..=2^(w−1), in affine coordinates.
/// Each window is normalized with one inversion (together with the next window's base), so
/// that no more than one window of Jacobian points is held at a time.
fn build_table(p: &Aff, w: usize) -> Option<Box<[Aff]>> {
    let h = half(w);
    let windows = digit_count(w);
    let mut table = Vec::with_capacity(windows * h);
    let mut window = Vec::with_capacity(h + 1);
    let mut base = *p;
    for i in 0..windows {
        window.clear();
        let mut cur = Jac::from(base);
        window.push(cur);
        for _ in 1..h {
            cur = cur.add_aff(&base, false);
            window.push(cur);
        }
        if i + 1 < windows {
            // cur = 2^(w−1)·base; one more doubling gives the next window's base, 2^w·base.
            window.push(cur.double());
        }
        let affine = batch_to_affine(&window)?;
        table.extend_from_slice(affine.get(..h)?);
        if let Some(next) = affine.get(h) {
            base = *next;
        }
    }
    Some(table.into_boxed_slice())
}

/// Affine point, never the identity.
#[derive(Clone, Copy)]
struct Aff {
    x: Fe,
    y: Fe,
}

impl Aff {
    /// y² = x³ − 3x + b
    fn on_curve(&self) -> bool {
        let Some(b) = fe_from_be(&B_BE) else { return false };
        let rhs = self.x.square() * self.x - (self.x.double() + self.x) + b;
        self.y.square() == rhs
    }
}

/// Jacobian point (X, Y, Z) = (X/Z², Y/Z³); Z = 0 is the identity.
#[derive(Clone, Copy)]
struct Jac {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl From<Aff> for Jac {
    fn from(a: Aff) -> Jac {
        Jac { x: a.x, y: a.y, z: Fe::ONE }
    }
}

impl Jac {
    const IDENTITY: Jac = Jac { x: Fe::ONE, y: Fe::ONE, z: Fe::ZERO };

    fn is_identity(&self) -> bool {
        bool::from(self.z.is_zero())
    }

    /// dbl-2001-b for a = −3: 3M + 5S.
    fn double(&self) -> Jac {
        if self.is_identity() {
            return *self;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x * gamma;
        let t = (self.x - delta) * (self.x + delta);
        let alpha = t.double() + t;
        let beta4 = beta.double().double();
        let x3 = alpha.square() - beta4.double();
        let z3 = (self.y + self.z).square() - gamma - delta;
        let y3 = alpha * (beta4 - x3) - gamma.square().double().double().double();
        Jac { x: x3, y: y3, z: z3 }
    }

    /// self + q, or self − q when `negate`; q affine: 8M + 3S. Exceptional cases (self the
    /// identity, self = ±q) handled by branches: variable time.
    #[inline]
    fn add_aff(&self, q: &Aff, negate: bool) -> Jac {
        let qy = if negate { -q.y } else { q.y };
        if self.is_identity() {
            return Jac { x: q.x, y: qy, z: Fe::ONE };
        }
        let z1z1 = self.z.square();
        let u2 = q.x * z1z1;
        let s2 = qy * (self.z * z1z1);
        let h = u2 - self.x;
        let r = s2 - self.y;
        if bool::from(h.is_zero()) {
            return if bool::from(r.is_zero()) { self.double() } else { Jac::IDENTITY };
        }
        let hh = h.square();
        let hhh = h * hh;
        let v = self.x * hh;
        let x3 = r.square() - hhh - v.double();
        let y3 = r * (v - x3) - self.y * hhh;
        let z3 = self.z * h;
        Jac { x: x3, y: y3, z: z3 }
    }
}

/// All points to affine with one inversion (Montgomery's trick). `None` if any is the identity.
fn batch_to_affine(points: &[Jac]) -> Option<Vec<Aff>> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::ONE;
    for p in points {
        if p.is_identity() {
            return None;
        }
        prefix.push(acc); // product of the z before this one
        acc *= p.z;
    }
    let mut inv: Fe = Option::from(acc.invert_vartime())?;
    let mut out = vec![Aff { x: Fe::ZERO, y: Fe::ZERO }; points.len()];
    for ((o, p), before) in out.iter_mut().zip(points).zip(prefix).rev() {
        let zi = inv * before; // 1/z of this point
        inv *= p.z;
        let zi2 = zi.square();
        *o = Aff { x: p.x * zi2, y: p.y * (zi2 * zi) };
    }
    Some(out)
}

#[cfg(test)]
#[path = "es256_tests.rs"]
mod tests;
