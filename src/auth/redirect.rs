//! The `next` target of `/auth/refresh`: only a same-site relative path.

use percent_encoding::percent_decode_str;

/// Returns `raw` when it is a safe same-site path, checked as given and
/// after every layer of percent-decoding: it must start with exactly one `/`
/// (not `//`, not `/\`), hold no backslash, whitespace or control character,
/// and so carry no scheme or host. Anything else is `None` (use `/`).
pub fn safe_next(raw: &str) -> Option<&str> {
    if raw.len() > 2048 {
        return None;
    }
    let mut current = raw.to_string();
    for _ in 0..4 {
        if !is_safe_path(&current) {
            return None;
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8()
            .ok()?
            .into_owned();
        if decoded == current {
            return Some(raw);
        }
        current = decoded;
    }
    // Still changing after several decodings: refuse rather than guess.
    None
}

fn is_safe_path(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        && !s
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_pass() {
        for ok in [
            "/",
            "/dashboard",
            "/keys?show=revoked",
            "/a/b#frag",
            "/caf%C3%A9",
        ] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "https:evil.example",
            "javascript:alert(1)",
            "%2F%2Fevil.example",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%09/evil.example",
            "/%0d%0aSet-Cookie:x",
            "/%252F%252Fevil.example",
            "dashboard",
            "/a b",
            "/%ff",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
