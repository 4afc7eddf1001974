use super::*;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::ProjectivePoint;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};

fn ring_verify(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig).is_ok()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn random_key(rng: &SystemRandom) -> EcdsaKeyPair {
    let pk8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), rng).unwrap()
}

fn random_scalar(rng: &SystemRandom) -> Scalar {
    loop {
        let mut b = [0u8; 32];
        rng.fill(&mut b).unwrap();
        let s = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(b));
        if !bool::from(s.is_zero()) {
            return s;
        }
    }
}

/// Big-endian 256-bit a + b, `None` on overflow.
fn add_be(a: &[u8], b: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    (carry == 0).then_some(out)
}

/// Big-endian 256-bit a − b (a ≥ b).
fn sub_be(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// A key both ways, prepared (a table of its own) and plain (none): they must agree on every
/// point and every signature.
struct Both(PreparedP256Key, PlainP256Key);

impl Both {
    fn new(point: &[u8]) -> Option<Both> {
        match (PreparedP256Key::new(point), PlainP256Key::new(point)) {
            (Some(prepared), Some(plain)) => Some(Both(prepared, plain)),
            (None, None) => None,
            _ => panic!("prepared and plain keys disagree on a point"),
        }
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (prepared, plain) = (self.0.verify(msg, sig), self.1.verify(msg, sig));
        assert_eq!(prepared, plain, "prepared and plain keys disagree on a signature");
        prepared
    }

    fn verify_digest(&self, digest: &[u8; 32], sig: &[u8]) -> bool {
        let (prepared, plain) = (self.0.verify_digest(digest, sig), self.1.verify_digest(digest, sig));
        assert_eq!(prepared, plain, "prepared and plain keys disagree on a signature");
        prepared
    }
}

fn sec1(p: &ProjectivePoint) -> Vec<u8> {
    p.to_affine().to_sec1_point(false).as_bytes().to_vec()
}

#[test]
fn agrees_with_ring_on_random_keys_and_tampering() {
    let rng = SystemRandom::new();
    for _ in 0..200 {
        let kp = random_key(&rng);
        let point = kp.public_key().as_ref();
        let key = Both::new(point).unwrap();
        let mut len = [0u8; 1];
        rng.fill(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(len[0]) * 3];
        rng.fill(&mut msg).unwrap();
        let sig = kp.sign(&rng, &msg).unwrap().as_ref().to_vec();
        assert!(key.verify(&msg, &sig));
        let digest: [u8; 32] = Sha256::digest(&msg).into();
        assert!(key.verify_digest(&digest, &sig));

        // (r, n − s) is valid too; JWS has no low-s rule, and ring accepts it
        let mut other_s = sig.clone();
        other_s[32..].copy_from_slice(&sub_be(&N_BE, &sig[32..]));
        assert!(ring_verify(point, &msg, &other_s));
        assert!(key.verify(&msg, &other_s));

        let mut bad: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pick = [0u8; 2];
        rng.fill(&mut pick).unwrap();
        for half in [0, 32] {
            let mut t = sig.clone();
            t[half + usize::from(pick[0] % 32)] ^= 1 << (pick[1] % 8);
            bad.push((msg.clone(), t));
        }
        let mut m = msg.clone();
        match m.first_mut() {
            Some(b) => *b ^= 1,
            None => m.push(0),
        }
        bad.push((m, sig.clone()));
        let n_plus_1 = add_be(&N_BE, &[0; 31].iter().chain([1].iter()).copied().collect::<Vec<u8>>()).unwrap();
        for v in [[0u8; 32], N_BE, n_plus_1, [0xff; 32]] {
            for half in [0, 32] {
                let mut t = sig.clone();
                t[half..half + 32].copy_from_slice(&v);
                bad.push((msg.clone(), t));
            }
        }
        let mut swapped = sig[32..].to_vec();
        swapped.extend_from_slice(&sig[..32]);
        bad.push((msg.clone(), swapped));
        bad.push((msg.clone(), sig[..63].to_vec()));
        bad.push((msg.clone(), [&sig[..], &[0]].concat()));
        bad.push((msg.clone(), Vec::new()));
        for (m, s) in &bad {
            assert!(!ring_verify(point, m, s));
            assert!(!key.verify(m, s), "accepted a tampered signature");
        }
    }
}

/// x(R) ≥ n: r = x(R) − n, so only the (r + n)·Z² == X comparison accepts. R is a point with
/// x = n + k; Q is chosen so that u1·G + u2·Q = R.
#[test]
fn accepts_x_coordinate_above_n() {
    let rng = SystemRandom::new();
    let g = ProjectivePoint::GENERATOR;
    let mut found = 0;
    for k in 1u8..=255 {
        let mut small = [0u8; 32];
        small[31] = k;
        let x = add_be(&N_BE, &small).unwrap();
        let Ok(r_point) = p256::PublicKey::from_sec1_bytes(&[&[2u8][..], &x].concat()) else { continue };
        let r: Scalar = Option::from(Scalar::from_repr(FieldBytes::from(small))).unwrap();
        let msg = b"x(R) >= n";
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(<[u8; 32]>::from(Sha256::digest(msg))));
        let s = random_scalar(&rng);
        let w = s.invert().unwrap();
        let (u1, u2) = (e * w, r * w);
        let q = (ProjectivePoint::from(*r_point.as_affine()) - g * u1) * u2.invert().unwrap();
        let point = sec1(&q);
        let sig = [&small[..], &s.to_bytes()[..]].concat();
        assert!(ring_verify(&point, msg, &sig));
        let key = Both::new(&point).unwrap();
        assert!(key.verify(msg, &sig));
        let mut off = sig.clone();
        off[31] ^= 1;
        assert!(!key.verify(msg, &off));
        found += 1;
        if found == 4 {
            return;
        }
    }
    panic!("no x in n + [1, 255] on the curve");
}

/// e = −r·d makes u1·G + u2·Q the identity, which must be rejected.
#[test]
fn rejects_identity_result() {
    let rng = SystemRandom::new();
    for _ in 0..8 {
        let d = random_scalar(&rng);
        let key = Both::new(&sec1(&(ProjectivePoint::GENERATOR * d))).unwrap();
        let (r, s) = (random_scalar(&rng), random_scalar(&rng));
        let e = -(r * d);
        let sig = [&r.to_bytes()[..], &s.to_bytes()[..]].concat();
        assert!(!key.verify_digest(&e.to_bytes().into(), &sig));
        // and a genuine signature over a chosen digest verifies
        let k = random_scalar(&rng);
        let rr = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(
            <[u8; 32]>::try_from(&sec1(&(ProjectivePoint::GENERATOR * k))[1..33]).unwrap(),
        ));
        let ee = random_scalar(&rng);
        let ss = k.invert().unwrap() * (ee + rr * d);
        let sig = [&rr.to_bytes()[..], &ss.to_bytes()[..]].concat();
        assert!(key.verify_digest(&ee.to_bytes().into(), &sig));
    }
}

/// NIST CAVP FIPS 186-4 SigVer-style vectors (P-256, SHA-256; message given as its digest).
#[test]
fn known_answers() {
    let vectors = [
        (
            "1ccbe91c075fc7f4f033bfa248db8fccd3565de94bbfb12f3c59ff46c271bf83",
            "ce4014c68811f9a21a1fdb2c0e6113e06db7ca93b7404e78dc7ccd5ca89a4ca9",
            "44acf6b7e36c1342c2c5897204fe09504e1e2efb1a900377dbc4e7a6a133ec56",
            "f3ac8061b514795b8843e3d6629527ed2afd6b1f6a555a7acabb5e6f79c8c2ac",
            "8bf77819ca05a6b2786c76262bf7371cef97b218e96f175a3ccdda2acc058903",
        ),
        (
            "e266ddfdc12668db30d4ca3e8f7749432c416044f2d2b8c10bf3d4012aeffa8a",
            "bfa86404a2e9ffe67d47c587ef7a97a7f456b863b4d02cfc6928973ab5b1cb39",
            "9b2db89cb0e8fa3cc7608b4d6cc1dec0114e0b9ff4080bea12b134f489ab2bbc",
            "976d3a4e9d23326dc0baa9fa560b7c4e53f42864f508483a6473b6a11079b2db",
            "1b766e9ceb71ba6c01dcd46e0af462cd4cfa652ae5017d4555b8eeefe36e1932",
        ),
        (
            "74ccd8a62fba0e667c50929a53f78c21b8ff0c3c737b0b40b1750b2302b0bde8",
            "29074e21f3a0ef88b9efdf10d06aa4c295cc1671f758ca0e4cd108803d0f2614",
            "b804cf88af0c2eff8bbbfb3660ebb3294138e9d3ebd458884e19818061dacff0",
            "35fb60f5ca0f3ca08542fb3cc641c8263a2cab7a90ee6a5e1583fac2bb6f6bd1",
            "ee59d81bc9db1055cc0ed97b159d8784af04e98511d0a9a407b99bb292572e96",
        ),
    ];
    for (qx, qy, digest, r, s) in vectors {
        let key = Both::new(&[vec![4], hex(qx), hex(qy)].concat()).unwrap();
        let digest: [u8; 32] = hex(digest).try_into().unwrap();
        let sig = [hex(r), hex(s)].concat();
        assert!(key.verify_digest(&digest, &sig));
        let mut wrong = digest;
        wrong[0] ^= 0x80;
        assert!(!key.verify_digest(&wrong, &sig));
    }
}

#[test]
fn rejects_invalid_keys() {
    let rng = SystemRandom::new();
    let good = random_key(&rng).public_key().as_ref().to_vec();
    assert!(Both::new(&good).is_some());
    let flip = |i: usize, m: u8| {
        let mut t = good.clone();
        t[i] ^= m;
        t
    };
    let p = hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    let bad: Vec<Vec<u8>> = vec![
        flip(64, 1),                                               // y + 1: off the curve
        flip(10, 0x40),                                            // another x: off the curve
        flip(0, 4 ^ 6),                                            // hybrid encoding
        vec![0],                                                   // the identity's SEC1 encoding
        [vec![4], vec![0; 64]].concat(),                           // (0, 0)
        [vec![4], p.clone(), p.clone()].concat(),                  // coordinates = p
        [vec![4], vec![0xff; 64]].concat(),                        // coordinates ≥ p
        [vec![2 + (good[64] & 1)], good[1..33].to_vec()].concat(), // compressed
        good[..64].to_vec(),
        [&good[..], &[0]].concat(),
        Vec::new(),
    ];
    for b in bad {
        assert!(Both::new(&b).is_none());
    }
}

#[test]
fn table_size() {
    let rng = SystemRandom::new();
    let key = PreparedP256Key::new(random_key(&rng).public_key().as_ref()).unwrap();
    assert_eq!(key.table_bytes(), digit_count(W_Q) * half(W_Q) * 64);
}
