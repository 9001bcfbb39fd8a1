use std::fmt;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// A configured secret. It never prints: `Debug` and `Serialize` redact it,
/// and there is no `Display`. Use [`Secret::expose`] where the bytes are needed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Substrings that mark a value as something a human typed in as a stand-in.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "replace",
    "your-",
    "your_",
    "todo",
    "xxxx",
    "dummy",
];

/// Whether a secret value is a placeholder (see SPEC section 2): empty, a
/// value shipped in `config.example.toml`, a marker word, `<...>`, or one
/// character repeated.
pub fn is_placeholder(value: &str, shipped_examples: &[String]) -> bool {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return true;
    }
    if shipped_examples.iter().any(|e| e == trimmed) {
        return true;
    }
    let lower = trimmed.to_ascii_lowercase();
    if PLACEHOLDER_MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    if let Some(open) = trimmed.find('<') {
        if trimmed[open..].contains('>') {
            return true;
        }
    }
    let mut chars = trimmed.chars();
    let first = chars.next().expect("non-empty");
    chars.all(|c| c == first)
}

/// A fresh secret: 32 bytes from the system CSPRNG, base64url (43 characters).
/// Regenerated in the unlikely case the random text spells a placeholder marker.
pub fn generate_secret() -> String {
    let rng = SystemRandom::new();
    loop {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes)
            .expect("the system CSPRNG is available");
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !is_placeholder(&value, &[]) {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_redact() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super"));
        assert!(!serde_json::to_string(&s).unwrap().contains("super"));
        assert_eq!(s.expose(), "super-secret-value");
    }

    #[test]
    fn placeholders() {
        let shipped = vec!["Q4f8shippedvalue".to_string()];
        for v in [
            "",
            "   ",
            "changeme",
            "CHANGE-ME-please-0123456789012345678901",
            "my_placeholder_value_that_is_long_enough",
            "an-example-secret",
            "replace with something",
            "your-secret-here",
            "YOUR_SECRET",
            "todo",
            "xxxxxxxxxxxxxxxxx1",
            "dummy",
            "<session key>",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "Q4f8shippedvalue",
        ] {
            assert!(is_placeholder(v, &shipped), "{v:?} should be a placeholder");
        }
        for v in ["k2J9s8dLq0Zx7Vb3Nm4Rt6Yp1Wc5Hf8G", "ab"] {
            assert!(!is_placeholder(v, &shipped), "{v:?} is not a placeholder");
        }
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(!is_placeholder(&a, &[]));
    }
}
