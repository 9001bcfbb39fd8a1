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

    #[test]
    fn targets_up_to_2048_characters_pass() {
        let longest = format!("/{}", "a".repeat(2047));
        assert_eq!(safe_next(&longest), Some(longest.as_str()));
        let too_long = format!("{longest}a");
        assert_eq!(safe_next(&too_long), None);
        assert_eq!(safe_next(&format!("{too_long}aaaa")), None);
    }

    /// Where a browser on `https://gate.example/` goes for a `Location`.
    fn resolved_host(location: &str) -> Option<String> {
        url::Url::parse("https://gate.example/some/page")
            .unwrap()
            .join(location)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    }

    proptest::proptest! {
        /// Whatever is accepted stays on the site, as given and after each
        /// layer of percent-decoding; and it is returned unchanged.
        #[test]
        fn accepted_targets_stay_on_the_site(raw in "\\PC{0,40}|/[\\\\/%0-9a-fA-F.:@a-z\\t ]{0,20}") {
            if let Some(next) = safe_next(&raw) {
                proptest::prop_assert_eq!(next, raw.as_str());
                let mut current = raw.clone();
                loop {
                    let host = resolved_host(&current);
                    proptest::prop_assert_eq!(host.as_deref(), Some("gate.example"), "{:?}", current);
                    proptest::prop_assert!(current.starts_with('/') && !current.starts_with("//") && !current.starts_with("/\\"));
                    proptest::prop_assert!(!current.chars().any(|c| c.is_control() || c == '\\'));
                    let decoded = percent_decode_str(&current).decode_utf8().unwrap().into_owned();
                    if decoded == current {
                        break;
                    }
                    current = decoded;
                }
            }
        }

        /// Plain paths of unreserved characters always pass unchanged.
        #[test]
        fn plain_paths_pass(segments in proptest::collection::vec("[A-Za-z0-9._~-]{1,12}", 0..5), query in "[a-z0-9=&]{0,12}") {
            let mut path = format!("/{}", segments.join("/"));
            if !query.is_empty() {
                path = format!("{path}?{query}");
            }
            proptest::prop_assume!(!path.starts_with("//"));
            proptest::prop_assert_eq!(safe_next(&path), Some(path.as_str()));
        }

        /// Anything that starts another host, however it is spelt, falls back.
        #[test]
        fn other_hosts_never_pass(host in "[a-z]{1,10}\\.[a-z]{2,4}", scheme in "(https?|javascript|data):", encode_levels in 0usize..3) {
            let mut slashes = "//".to_string();
            for _ in 0..encode_levels {
                slashes = slashes.replace('%', "%25").replace('/', "%2F");
            }
            for raw in [
                format!("//{host}"),
                format!("/\\{host}"),
                format!("{scheme}//{host}"),
                format!("{scheme}{host}"),
                format!("{slashes}{host}"),
                format!("/%09/{host}"),
            ] {
                proptest::prop_assert_eq!(safe_next(&raw), None, "{}", raw);
            }
        }
    }
}
