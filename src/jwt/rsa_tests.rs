use super::*;
use ring::rand::{SecureRandom, SystemRandom};
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, RsaKeyPair};

const KEYS: [(&str, &[u8]); 4] = [
    ("a", include_bytes!("testdata/rsa-a.der")),
    ("b", include_bytes!("testdata/rsa-b.der")),
    ("3072", include_bytes!("testdata/rsa-3072.der")),
    ("4096", include_bytes!("testdata/rsa-4096.der")),
];

/// Moduli that are not a multiple of 512 bits (ring cannot sign with them): modulus and an
/// OpenSSL signature of ODD_MESSAGE (see testdata/README.md).
const ODD: [(&str, &str, &[u8]); 2] = [
    ("2056", include_str!("testdata/rsa-2056.modulus.hex"), include_bytes!("testdata/rsa-2056.sig")),
    ("2100", include_str!("testdata/rsa-2100.modulus.hex"), include_bytes!("testdata/rsa-2100.sig")),
];
const ODD_MESSAGE: &[u8] = b"gatehouse RS256 test message";

fn from_hex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    let padded = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex.to_string() };
    (0..padded.len()).step_by(2).map(|i| u8::from_str_radix(&padded[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn odd_sized_moduli_verify_openssl_signatures() {
    for (name, hex, sig) in ODD {
        let n = from_hex(hex);
        let key = RsaKey::new(&n, &[1, 0, 1]).unwrap_or_else(|| panic!("key {name}"));
        assert_eq!(key.bits(), name.parse::<usize>().unwrap());
        assert_eq!(sig.len(), n.len());
        assert!(key.verify_pkcs1(Hash::Sha256, ODD_MESSAGE, sig), "key {name}");
        // ring agrees.
        let ring_ok = PublicKeyComponents { n: &n[..], e: &[1u8, 0, 1][..] }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, ODD_MESSAGE, sig)
            .is_ok();
        assert!(ring_ok, "key {name}: ring disagrees");
        for i in 0..sig.len() {
            let mut bad = sig.to_vec();
            bad[i] ^= 0x80 >> (i % 8);
            assert!(!key.verify_pkcs1(Hash::Sha256, ODD_MESSAGE, &bad), "key {name}: flipped byte {i} accepted");
        }
        assert!(!key.verify_pkcs1(Hash::Sha256, b"gatehouse RS256 test messagf", sig));
    }
}

fn keys() -> Vec<(&'static str, RsaKeyPair, RsaKey)> {
    KEYS.iter()
        .map(|(name, der)| {
            let kp = RsaKeyPair::from_der(der).unwrap_or_else(|e| panic!("key {name}: {e}"));
            let c: PublicKeyComponents<Vec<u8>> = kp.public().into();
            let key = RsaKey::new(&c.n, &c.e).unwrap_or_else(|| panic!("key {name} not prepared"));
            (*name, kp, key)
        })
        .collect()
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SystemRandom::new().fill(&mut v).unwrap();
    v
}

fn sign(kp: &RsaKeyPair, hash: Hash, msg: &[u8]) -> Vec<u8> {
    let alg = match hash {
        Hash::Sha256 => &signature::RSA_PKCS1_SHA256,
        Hash::Sha384 => &signature::RSA_PKCS1_SHA384,
        Hash::Sha512 => &signature::RSA_PKCS1_SHA512,
    };
    let mut sig = vec![0u8; kp.public().modulus_len()];
    kp.sign(alg, &SystemRandom::new(), msg, &mut sig).unwrap();
    sig
}

#[test]
fn accepts_what_ring_signs_for_every_key_size_and_hash() {
    for (name, kp, key) in keys() {
        for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            for len in [0, 1, 64, 700] {
                let msg = random(len);
                let sig = sign(&kp, hash, &msg);
                assert!(key.verify_pkcs1(hash, &msg, &sig), "key {name} {hash:?} len {len}");
            }
        }
    }
}

#[test]
fn refuses_tampered_signatures_messages_and_hashes() {
    for (name, kp, key) in keys() {
        let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9".to_vec();
        let sig = sign(&kp, Hash::Sha256, &msg);
        assert!(key.verify_pkcs1(Hash::Sha256, &msg, &sig));
        // Every byte of the signature, one bit flipped (a stride keeps the 4096-bit case quick).
        for i in (0..sig.len()).step_by(3) {
            let mut bad = sig.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(!key.verify_pkcs1(Hash::Sha256, &msg, &bad), "key {name}: flipped byte {i} accepted");
        }
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x20;
            assert!(!key.verify_pkcs1(Hash::Sha256, &bad, &sig), "key {name}: message byte {i} changed, accepted");
        }
        assert!(!key.verify_pkcs1(Hash::Sha384, &msg, &sig), "key {name}: another hash accepted");
        assert!(!key.verify_pkcs1(Hash::Sha512, &msg, &sig));
        // Length: one byte short, one byte long (a leading zero keeps the value).
        assert!(!key.verify_pkcs1(Hash::Sha256, &msg, &sig[1..]));
        let mut long = vec![0u8];
        long.extend_from_slice(&sig);
        assert!(!key.verify_pkcs1(Hash::Sha256, &msg, &long), "key {name}: padded signature accepted");
        // Degenerate values: 0, 1, n−1, n, all ones.
        let k = sig.len();
        let c: PublicKeyComponents<Vec<u8>> = kp.public().into();
        let mut one = vec![0u8; k];
        one[k - 1] = 1;
        let mut n_minus_1 = c.n.clone();
        *n_minus_1.last_mut().unwrap() -= 1; // n is odd
        for (what, s) in
            [("0", vec![0u8; k]), ("1", one), ("n-1", n_minus_1), ("n", c.n.clone()), ("ff…", vec![0xff; k])]
        {
            assert!(!key.verify_pkcs1(Hash::Sha256, &msg, &s), "key {name}: signature {what} accepted");
        }
    }
}

#[test]
fn montgomery_product_matches_a_slow_reference() {
    // a·b mod n by shift-and-add (one bit of b at a time), to check mont_mul against.
    fn slow_mul_mod(a: &[u64], b: &[u64], n: &[u64]) -> Vec<u64> {
        let len = n.len();
        let mut acc = vec![0u64; len + 1];
        for i in (0..len * LIMB_BITS as usize).rev() {
            // acc = 2·acc mod n
            let mut carry = 0;
            for limb in acc.iter_mut() {
                let v = (*limb << 1) | carry;
                carry = v >> LIMB_BITS;
                *limb = v & MASK;
            }
            if !less_than(&acc, n) {
                sub_in_place(&mut acc, n);
            }
            if b[i / LIMB_BITS as usize] >> (i % LIMB_BITS as usize) & 1 == 1 {
                let mut carry = 0;
                for (j, limb) in acc.iter_mut().enumerate() {
                    let v = *limb + a.get(j).copied().unwrap_or(0) + carry;
                    carry = v >> LIMB_BITS;
                    *limb = v & MASK;
                }
                if !less_than(&acc, n) {
                    sub_in_place(&mut acc, n);
                }
            }
        }
        acc.truncate(len);
        acc
    }
    let odd = RsaKey::new(&from_hex(ODD[1].1), &[1, 0, 1]).unwrap();
    let prepared = keys().into_iter().filter(|(n, _, _)| ["a", "4096"].contains(n)).map(|(n, _, k)| (n, k));
    for (name, key) in prepared.chain([("2100", odd)]) {
        let len = key.n.len();
        let below_n = |mut bytes: Vec<u8>| {
            bytes[0] &= key.n_bytes[0];
            let mut v = to_limbs(&bytes, len).unwrap();
            while !less_than(&v, &key.n) {
                let top = v.iter().rposition(|l| *l != 0).unwrap();
                v[top] >>= 1;
            }
            v
        };
        let mut n_minus_1 = key.n.clone();
        n_minus_1[0] -= 1;
        let mut one = vec![0u64; len];
        one[0] = 1;
        let mut samples = vec![
            (vec![0u64; len], n_minus_1.clone()),
            (one.clone(), n_minus_1.clone()),
            (n_minus_1.clone(), n_minus_1),
        ];
        for _ in 0..if key.n.len() > 100 { 3 } else { 12 } {
            samples.push((below_n(random(key.n_bytes.len())), below_n(random(key.n_bytes.len()))));
        }
        let mut scratch = Scratch::new(len);
        for (a, b) in samples {
            // mont(mont(a, b), R²) = a·b·R⁻¹·R²·R⁻¹ = a·b mod n.
            let ab = key.mont_mul(&key.mont_mul(&a, &b, &mut scratch), &key.rr, &mut scratch);
            assert_eq!(ab, slow_mul_mod(&a, &b, &key.n), "key {name}");
            // The same slice twice takes the squaring path.
            let aa = key.mont_mul(&key.mont_mul(&a, &a, &mut scratch), &key.rr, &mut scratch);
            assert_eq!(aa, slow_mul_mod(&a, &a, &key.n), "key {name}: square");
        }
    }
}

#[test]
fn unusable_keys_are_refused() {
    let (_, kp, _) = keys().into_iter().next().unwrap();
    let c: PublicKeyComponents<Vec<u8>> = kp.public().into();
    let f4 = [1, 0, 1];
    assert!(RsaKey::new(&c.n, &f4).is_some());
    let mut even = c.n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    assert!(RsaKey::new(&even, &f4).is_none(), "even modulus");
    assert!(RsaKey::new(&c.n[1..], &f4).is_none(), "2040-bit modulus");
    let mut big = vec![0xff; 1025];
    big[1024] = 0xfd;
    assert!(RsaKey::new(&big, &f4).is_none(), "8200-bit modulus");
    let mut leading_zeros = vec![0, 0];
    leading_zeros.extend_from_slice(&c.n);
    assert!(RsaKey::new(&leading_zeros, &[0, 1, 0, 1]).is_some(), "leading zeros are not bits");
    for e in [&[1u8][..], &[2], &[0], &[], &[1, 0, 0, 0, 0, 1], &[2, 0, 0, 0, 1]] {
        assert!(RsaKey::new(&c.n, e).is_none(), "exponent {e:?}");
    }
    assert!(RsaKey::new(&c.n, &[3]).is_some());
    assert!(RsaKey::new(&c.n, &[1, 0, 0, 0, 1]).is_some(), "2^32+1 is allowed, as in ring");
}

#[test]
fn limb_conversions_round_trip() {
    for len in [256usize, 257, 263, 512] {
        let bytes = random(len);
        let limbs = to_limbs(&bytes, (len * 8).div_ceil(LIMB_BITS as usize)).unwrap();
        assert!(limbs.iter().all(|l| *l <= MASK));
        assert_eq!(from_limbs(&limbs, len), bytes);
        // One limb too few for the value: refused rather than truncated.
        let mut top_set = bytes.clone();
        top_set[0] |= 0x80;
        assert!(to_limbs(&top_set, (len * 8) / LIMB_BITS as usize).is_none());
    }
}
