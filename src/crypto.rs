//! Small cryptographic helpers shared by every feature.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Compares two secrets in constant time. Both sides are hashed first so the
/// comparison does not even reveal their lengths.
pub fn secure_eq(a: &[u8], b: &[u8]) -> bool {
    let ha = digest::digest(&digest::SHA256, a);
    let hb = digest::digest(&digest::SHA256, b);
    ha.as_ref().ct_eq(hb.as_ref()).into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from base62 with the system CSPRNG
/// (rejection sampling: no modulo bias).
pub fn random_base62(len: usize) -> String {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).expect("the system CSPRNG is available");
        for &b in &buf {
            // 248 = 4 * 62: values at or above it would bias the low digits.
            if b < 248 {
                out.push(BASE62[(b % 62) as usize] as char);
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

/// A new identifier: `{prefix}_` and 20 base62 characters (~119 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base62(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_eq_compares_content() {
        assert!(secure_eq(b"abc", b"abc"));
        assert!(!secure_eq(b"abc", b"abd"));
        assert!(!secure_eq(b"abc", b"abcd"));
    }

    #[test]
    fn base62_is_uniform_enough_and_well_formed() {
        let s = random_base62(62 * 400);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mut counts = [0usize; 62];
        for b in s.bytes() {
            counts[BASE62.iter().position(|c| *c == b).unwrap()] += 1;
        }
        // Each symbol expected 400 times; a biased draw would skew the low ones.
        assert!(counts.iter().all(|c| (250..=550).contains(c)), "{counts:?}");
        assert_eq!(new_id("usr").len(), 24);
    }
}
