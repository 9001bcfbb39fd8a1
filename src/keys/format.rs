//! The API key format (SPEC section 8):
//! `{prefix}_{sk|pk}_{32 random base62}{6 base62 CRC-32}`.
//!
//! The checksum is the CRC-32 (IEEE, as zlib computes it) of the ASCII bytes
//! of everything before it, in base62 (`0-9A-Za-z`), most significant digit
//! first, left-padded with `0` to 6 characters. Anyone can reject a mistyped
//! or invented key offline, and Gatehouse does so without touching storage.

use std::fmt;

use crate::crypto::{random_base62, sha256};

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the key shown as its display `prefix` in metadata.
pub const DISPLAY_PREFIX_LEN: usize = 16;

pub use crate::store::key_record::KeyType;

/// The CRC-32 of `data` as 6 base62 digits (ASCII).
pub fn checksum_digits(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(data) as u64;
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// The CRC-32 of `data` as 6 base62 digits.
pub fn checksum(data: &[u8]) -> String {
    String::from_utf8(checksum_digits(data).to_vec()).expect("ASCII")
}

/// A key that has the right shape and checksum. Its text never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    text: String,
    kind: KeyType,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

impl ApiKey {
    /// A fresh key: 32 characters from the CSPRNG (~190 bits) plus checksum.
    pub fn generate(prefix: &str, kind: KeyType) -> ApiKey {
        let body = format!("{prefix}_{}_{}", kind.tag(), random_base62(RANDOM_LEN));
        let text = format!("{body}{}", checksum(body.as_bytes()));
        ApiKey { text, kind }
    }

    /// Checks shape and checksum; no storage is involved.
    pub fn parse(raw: &str, prefix: &str) -> Result<ApiKey, MalformedKey> {
        let kind = Self::check(raw, prefix)?;
        Ok(ApiKey {
            text: raw.to_string(),
            kind,
        })
    }

    /// [`ApiKey::parse`] without keeping the key: no allocation, for the
    /// verification hot path.
    pub fn check(raw: &str, prefix: &str) -> Result<KeyType, MalformedKey> {
        let rest = raw
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(MalformedKey)?;
        let (tag, tail) = rest.split_at_checked(3).ok_or(MalformedKey)?;
        let kind = match tag {
            "sk_" => KeyType::Secret,
            "pk_" => KeyType::Publishable,
            _ => return Err(MalformedKey),
        };
        if tail.len() != RANDOM_LEN + CHECKSUM_LEN
            || !tail.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(MalformedKey);
        }
        let split = raw.len() - CHECKSUM_LEN;
        if checksum_digits(&raw.as_bytes()[..split]) != raw.as_bytes()[split..] {
            return Err(MalformedKey);
        }
        Ok(kind)
    }

    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The plaintext, for the one response that returns it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What is stored: SHA-256 of the key text.
    pub fn hash(&self) -> [u8; 32] {
        sha256(self.text.as_bytes())
    }

    /// The first 16 characters, e.g. `gate_sk_Ab3dE6gH`, shown in metadata.
    pub fn display_prefix(&self) -> &str {
        &self.text[..DISPLAY_PREFIX_LEN.min(self.text.len())]
    }
}

/// Whether a credential is meant as an API key (starts with
/// `{prefix}_sk_` or `{prefix}_pk_`), even if it is malformed.
pub fn looks_like_key(raw: &str, prefix: &str) -> bool {
    raw.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r.starts_with("sk_") || r.starts_with("pk_"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedKey;

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently with Python's zlib:
    /// `n = zlib.crc32(body.encode())`, then base62 (0-9A-Za-z), most
    /// significant digit first, padded to 6.
    #[test]
    fn checksum_matches_zlib_crc32() {
        for (body, expected) in [
            ("gate_sk_0123456789ABCDEFGHIJabcdefghijKL", "4RgEqp"),
            ("acme_pk_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "4WOOfN"),
            ("The quick brown fox jumps over the lazy dog", "1C9bYH"),
            ("", "000000"),
        ] {
            assert_eq!(checksum(body.as_bytes()), expected, "{body}");
        }
        let key = "gate_sk_0123456789ABCDEFGHIJabcdefghijKL4RgEqp";
        assert_eq!(ApiKey::parse(key, "gate").unwrap().kind(), KeyType::Secret);
        // The largest CRC fits in 6 digits: 62^6 > 2^32.
        assert!(62u64.pow(6) > u32::MAX as u64);
    }

    #[test]
    fn generated_keys_parse_and_match_the_pattern() {
        for kind in [KeyType::Secret, KeyType::Publishable] {
            let key = ApiKey::generate("gate", kind);
            let text = key.expose();
            assert_eq!(text.len(), "gate_sk_".len() + 38);
            assert!(text.starts_with(&format!("gate_{}_", kind.tag())));
            let parsed = ApiKey::parse(text, "gate").unwrap();
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.display_prefix().len(), 16);
            assert!(looks_like_key(text, "gate"));
        }
    }

    #[test]
    fn altered_or_foreign_keys_are_malformed() {
        let key = ApiKey::generate("gate", KeyType::Secret);
        let text = key.expose().to_string();
        // Change one character of the random part.
        let mut altered = text.clone().into_bytes();
        altered[10] = if altered[10] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(ApiKey::parse(&altered, "gate"), Err(MalformedKey));
        for bad in [
            "",
            "gate_sk_",
            &text[..text.len() - 1],
            &format!("{text}0"),
            &text.replace("gate_sk_", "gate_xk_"),
            &text.replace("gate_", "acme_"),
            "gate_sk_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(ApiKey::parse(bad, "gate"), Err(MalformedKey), "{bad}");
        }
        assert!(!looks_like_key("gat_abc", "gate"));
        assert!(looks_like_key("gate_pk_short", "gate"));
    }

    #[test]
    fn key_type_names_round_trip() {
        for (kind, name, tag) in [
            (KeyType::Secret, "secret", "sk"),
            (KeyType::Publishable, "publishable", "pk"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.tag(), tag);
            assert_eq!(KeyType::parse(name), Some(kind));
        }
        assert_eq!(KeyType::parse("sk"), None);
        assert_eq!(KeyType::parse("Secret"), None);
    }

    #[test]
    fn a_right_checksum_does_not_excuse_a_wrong_shape() {
        // Checksums computed with Python's zlib, as above.
        for bad in [
            "gate_sk_0123456789ABCDEFGHIJabcdefghij-L3XbZVi", // a `-` in the random part
            "gate_sk_0123456789ABCDEFGHIJabcdefghijKLM4ARPLq", // one character too many
            "gate_sk_0123456789ABCDEFGHIJabcdefghijK2wnMOv",  // one too few
        ] {
            assert_eq!(ApiKey::check(bad, "gate"), Err(MalformedKey), "{bad}");
        }
    }

    #[test]
    fn what_is_stored_is_the_sha256_of_the_key_and_debug_hides_it() {
        let text = "gate_sk_0123456789ABCDEFGHIJabcdefghijKL4RgEqp";
        let key = ApiKey::parse(text, "gate").unwrap();
        // `printf %s KEY | sha256sum`
        let hex: String = key.hash().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "9a783b157ce409d5088592729d84f286a3c00511fba8043d0b085d757cb8f476"
        );
        assert_eq!(format!("{key:?}"), "ApiKey(gate_sk_01234567…)");
    }

    /// The rule of SPEC section 8 written out independently: the shape by
    /// hand, the checksum as zlib's CRC-32 in base62 built from the most
    /// significant digit down.
    fn oracle(raw: &str, prefix: &str) -> Option<KeyType> {
        let rest = raw.strip_prefix(prefix)?.strip_prefix('_')?;
        let kind = if rest.starts_with("sk_") {
            KeyType::Secret
        } else if rest.starts_with("pk_") {
            KeyType::Publishable
        } else {
            return None;
        };
        let tail = &rest[3..];
        if tail.len() != 38 || !tail.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let body = &raw[..raw.len() - 6];
        let crc = crc32fast::hash(body.as_bytes()) as u64;
        let digits: String = (0..6)
            .rev()
            .map(|i| ALPHABET[((crc / 62u64.pow(i)) % 62) as usize] as char)
            .collect();
        (raw[raw.len() - 6..] == digits).then_some(kind)
    }

    fn with_checksum(body: &str) -> String {
        format!("{body}{}", checksum(body.as_bytes()))
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_judged_exactly_as_the_rule_says(raw in "\\PC{0,60}", prefix in "[a-z0-9]{2,12}") {
            proptest::prop_assert_eq!(ApiKey::check(&raw, &prefix).ok(), oracle(&raw, &prefix));
            proptest::prop_assert_eq!(ApiKey::check(&raw, "gate").ok(), oracle(&raw, "gate"));
        }

        #[test]
        fn keys_with_a_right_checksum_parse_and_round_trip(
            prefix in "[a-z0-9]{2,12}",
            publishable: bool,
            random in "[0-9A-Za-z]{32}",
        ) {
            let kind = if publishable { KeyType::Publishable } else { KeyType::Secret };
            let text = with_checksum(&format!("{prefix}_{}_{random}", kind.tag()));
            let key = ApiKey::parse(&text, &prefix).unwrap();
            proptest::prop_assert_eq!(key.kind(), kind);
            proptest::prop_assert_eq!(key.expose(), text.as_str());
            proptest::prop_assert_eq!(oracle(&text, &prefix), Some(kind));
            proptest::prop_assert!(looks_like_key(&text, &prefix));
            let generated = ApiKey::generate(&prefix, kind);
            proptest::prop_assert_eq!(ApiKey::parse(generated.expose(), &prefix).unwrap(), generated);
        }

        /// CRC-32 catches every change of one character (a burst of at
        /// most 8 bits), in the random part or in the checksum.
        #[test]
        fn one_changed_character_is_always_caught(
            random in "[0-9A-Za-z]{32}",
            at in 8usize..46,
            replacement in "[0-9A-Za-z]",
        ) {
            let text = with_checksum(&format!("gate_sk_{random}"));
            let mut bytes = text.clone().into_bytes();
            let new = replacement.as_bytes()[0];
            proptest::prop_assume!(bytes[at] != new);
            bytes[at] = new;
            let altered = String::from_utf8(bytes).unwrap();
            proptest::prop_assert_eq!(ApiKey::check(&altered, "gate"), Err(MalformedKey));
        }
    }
}
