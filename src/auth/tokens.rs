//! Login codes, session tokens and CSRF tokens: generation from the system
//! CSPRNG and the keyed hashes that are all the database ever stores.

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::crypto::random_base62;
use crate::types::Email;

/// Keyed hashing with `secrets.session_key`. A stolen database alone cannot
/// be used to test guesses of codes or tokens.
#[derive(Clone)]
pub struct Keyring {
    key: hmac::Key,
}

pub type TokenHash = [u8; 32];

impl Keyring {
    pub fn new(session_key: &[u8]) -> Self {
        Keyring {
            key: hmac::Key::new(hmac::HMAC_SHA256, session_key),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> TokenHash {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p);
            ctx.update(b"\x00");
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    pub fn code_hash(&self, email: &Email, code: &str) -> TokenHash {
        self.mac(&[b"login-code", email.as_str().as_bytes(), code.as_bytes()])
    }

    pub fn token_hash(&self, token: &str) -> TokenHash {
        self.mac(&[b"token", token.as_bytes()])
    }

    /// The CSRF token of a session: derived, so nothing is stored, and
    /// useless for any other session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        let mac = self.mac(&[b"csrf", session_id.as_bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..24])
    }
}

/// A numeric code of `len` digits, uniform (rejection sampling, no modulo bias).
pub fn generate_code(len: u32) -> String {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len as usize);
    let mut buf = [0u8; 32];
    while out.len() < len as usize {
        rng.fill(&mut buf).expect("the system CSPRNG is available");
        for &b in &buf {
            // 250 = 25 * 10: larger values would favour low digits.
            if b < 250 {
                out.push((b'0' + b % 10) as char);
                if out.len() == len as usize {
                    break;
                }
            }
        }
    }
    out
}

/// Access tokens: `gat_` + 43 base62 characters (~256 bits).
pub fn new_access_token() -> String {
    format!("gat_{}", random_base62(43))
}

/// Refresh tokens: `grt_` + 43 base62 characters (~256 bits).
pub fn new_refresh_token() -> String {
    format!("grt_{}", random_base62(43))
}

/// Session ids: `ses_` + 22 base62 characters (~131 bits).
pub fn new_session_id() -> String {
    format!("ses_{}", random_base62(22))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_right_length_and_spread() {
        for len in [6, 8, 10] {
            let c = generate_code(len);
            assert_eq!(c.len(), len as usize);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        let mut counts = [0usize; 10];
        for _ in 0..2000 {
            for b in generate_code(10).bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|c| (1700..=2300).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn hashes_are_keyed_and_bound_to_their_inputs() {
        let a = Keyring::new(b"key-a-0123456789012345678901234567");
        let b = Keyring::new(b"key-b-0123456789012345678901234567");
        let email = Email::parse("x@acme.test").unwrap();
        let other = Email::parse("y@acme.test").unwrap();
        assert_eq!(a.code_hash(&email, "123456"), a.code_hash(&email, "123456"));
        assert_ne!(a.code_hash(&email, "123456"), b.code_hash(&email, "123456"));
        assert_ne!(a.code_hash(&email, "123456"), a.code_hash(&other, "123456"));
        assert_ne!(a.token_hash("t"), a.code_hash(&email, "t"));
        assert_ne!(a.csrf_token("ses_1"), a.csrf_token("ses_2"));
        assert_eq!(a.csrf_token("ses_1").len(), 32);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let t = new_access_token();
        assert_eq!(t.len(), 47);
        assert_ne!(t, new_access_token());
        assert!(new_refresh_token().starts_with("grt_"));
    }
}
