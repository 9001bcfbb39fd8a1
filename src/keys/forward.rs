//! What a forward-auth request is about: the original method and path, as
//! the reverse proxy reports them, and the path normalised the way upstream
//! servers read it, so that no spelling of a protected path is judged under
//! a weaker `[[routes]]` rule.
//!
//! The proxy reports through two header families, `X-Forwarded-Method` /
//! `X-Forwarded-Uri` (Caddy, Traefik) and `X-Original-Method` /
//! `X-Original-URI` (nginx). The shipped proxy configurations set all four
//! from their own variables, overwriting what the client sent; when the
//! families still disagree, or a header is repeated, the check is refused
//! rather than decided on the friendlier value.
//!
//! Path parameters (`/orders;x`, `/public/..;/orders`) are what Java servlet
//! containers strip from each segment before they resolve dot segments, so
//! `..;` is `..` to them. By default a `;` in the path is refused; with
//! `forward_auth.path_parameters = "strip"` each segment's `;...` is
//! removed first, the way those servers read it.

use std::borrow::Cow;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

pub use crate::config::PathParameters;

/// Longest original path accepted (bytes, before normalising).
pub const MAX_PATH_LEN: usize = 8192;

/// Why a path cannot be normalised (and the check is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (must start with `/`).
    NotAbsolute,
    TooLong,
    /// `%2F` or `%5C`: upstream servers disagree on whether it separates segments.
    EncodedSeparator,
    /// A raw backslash, which some servers read as a separator.
    Backslash,
    /// A NUL or another control character, raw or percent-encoded.
    ControlCharacter,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A `..` segment above the root.
    AboveRoot,
    /// A `;` in a segment, with `forward_auth.path_parameters = "refuse"`.
    PathParameters,
    /// `%3B`: upstream servers disagree on whether it starts path
    /// parameters (decoded first) or is part of the name (stripped first).
    EncodedSemicolon,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the original path must start with `/`",
            PathError::TooLong => "the original path is too long",
            PathError::EncodedSeparator => "the original path holds an encoded `/` or `\\`",
            PathError::Backslash => "the original path holds a backslash",
            PathError::ControlCharacter => "the original path holds a control character",
            PathError::BadPercentEncoding => "the original path has a malformed percent-encoding",
            PathError::AboveRoot => "the original path climbs above the root with `..`",
            PathError::PathParameters => {
                "the original path holds path parameters (`;` in a segment), which are refused; \
                 set forward_auth.path_parameters = \"strip\" to remove them before matching"
            }
            PathError::EncodedSemicolon => "the original path holds an encoded `;`",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Normalises an original request target for matching `[[routes]]`: the
/// query and fragment are dropped, path parameters refused or stripped
/// (`params`), percent-encoded unreserved characters decoded (other
/// escapes kept, in upper case; bytes outside ASCII escaped), repeated
/// slashes merged and `.` / `..` segments resolved. A trailing slash is
/// kept. The result starts with one `/` and holds no `//`, `.`, `..` or
/// `;`; normalising it again changes nothing.
pub fn normalize_path(raw: &str, params: PathParameters) -> Result<String, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let raw = &raw.as_bytes()[..end];
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw) {
        // The common case: nothing to decode, strip, merge or resolve.
        return Ok(String::from_utf8_lossy(raw).into_owned());
    }
    normalize_bytes(raw, params)
}

/// [`normalize_path`] for a path without its query, of at most
/// [`MAX_PATH_LEN`] bytes, starting with `/`.
fn normalize_bytes(raw: &[u8], params: PathParameters) -> Result<String, PathError> {
    // Decode what upstream servers treat as equal; keep every other escape.
    // Path parameters (from a `;` to the end of its segment) are refused,
    // or left out as servlet containers leave them out (`/..;x/a` is
    // `/../a`); what they hold is checked all the same, since a server
    // that reads a backslash as a separator would end them there.
    let mut decoded = String::with_capacity(raw.len());
    let mut in_parameters = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b';' => return Err(PathError::EncodedSemicolon),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    _ if in_parameters => {}
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => push_encoded(&mut decoded, v),
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b';' => match params {
                PathParameters::Refuse => return Err(PathError::PathParameters),
                PathParameters::Strip => in_parameters = true,
            },
            b'/' => {
                in_parameters = false;
                decoded.push('/');
            }
            _ if in_parameters => {}
            0x80.. => push_encoded(&mut decoded, b),
            _ => decoded.push(b as char),
        }
        i += 1;
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Whether [`normalize_path`] would return `raw` unchanged: visible ASCII
/// without `%`, `\\` or `;`, and no empty (but the last), `.` or `..`
/// segment.
fn is_normal(raw: &[u8]) -> bool {
    raw.iter()
        .all(|&b| (0x21..0x7f).contains(&b) && !matches!(b, b'%' | b'\\' | b';'))
        && !raw.windows(2).any(|pair| pair == b"//")
        && raw[1..]
            .split(|&b| b == b'/')
            .all(|segment| segment != b"." && segment != b"..")
}

/// Why the proxy's report cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The two header families name different methods or paths.
    Disagree(&'static str),
    /// A header appears more than once, or is not visible ASCII.
    Unreadable(&'static str),
    /// The method is not an HTTP method token.
    BadMethod,
    /// Neither `X-Forwarded-Uri` nor `X-Original-URI` was sent.
    NoPath,
    Path(PathError),
}

impl Refusal {
    pub fn message(self) -> String {
        match self {
            Refusal::Disagree(what) => format!(
                "X-Forwarded-{what} and X-Original-{what} disagree; the proxy must set both (or one)"
            ),
            Refusal::Unreadable(name) => format!("{name} must be sent once, as plain text"),
            Refusal::BadMethod => "the original method is not an HTTP method".into(),
            Refusal::NoPath => {
                "the proxy must send the original path in X-Forwarded-Uri or X-Original-URI".into()
            }
            Refusal::Path(e) => format!("{}: refused", e.message()),
        }
    }
}

/// The request a forward-auth check is about.
#[derive(Debug, PartialEq, Eq)]
pub struct Original<'a> {
    pub method: &'a str,
    /// Normalised ([`normalize_path`]); borrowed from the header when it
    /// already was.
    pub path: Cow<'a, str>,
}

/// The proxy's headers, as names built once, in the order of
/// [`Reported`]'s slots, with their names for messages.
const REPORTED: [(HeaderName, &str); 4] = [
    (
        HeaderName::from_static("x-forwarded-method"),
        "x-forwarded-method",
    ),
    (
        HeaderName::from_static("x-original-method"),
        "x-original-method",
    ),
    (
        HeaderName::from_static("x-forwarded-uri"),
        "x-forwarded-uri",
    ),
    (HeaderName::from_static("x-original-uri"), "x-original-uri"),
];
const FORWARDED_METHOD: usize = 0;
const ORIGINAL_METHOD: usize = 1;
const FORWARDED_URI: usize = 2;
const ORIGINAL_URI: usize = 3;

/// The proxy's four headers, found in one pass over the request's headers
/// (each lookup by name would hash the name again), with whether each was
/// repeated.
struct Reported<'a> {
    values: [Option<&'a HeaderValue>; 4],
    repeated: [bool; 4],
}

impl<'a> Reported<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut found = Reported {
            values: [None; 4],
            repeated: [false; 4],
        };
        for (name, value) in headers.iter() {
            if let Some(i) = REPORTED.iter().position(|(n, _)| n == name) {
                found.repeated[i] |= found.values[i].is_some();
                found.values[i] = Some(value);
            }
        }
        found
    }

    /// The header's value, trimmed; refused when repeated or not text.
    fn single(&self, i: usize) -> Result<Option<&'a str>, Refusal> {
        let name = REPORTED[i].1;
        let Some(value) = self.values[i] else {
            return Ok(None);
        };
        if self.repeated[i] {
            return Err(Refusal::Unreadable(name));
        }
        value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| Refusal::Unreadable(name))
    }
}

fn is_method(m: &str) -> bool {
    (1..=32).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphabetic())
}

/// [`normalize_path`], borrowing `raw` (without its query) when it is
/// already normal.
fn normalize_borrowed(raw: &str, params: PathParameters) -> Result<Cow<'_, str>, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if path.len() <= MAX_PATH_LEN && path.starts_with('/') && is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_path(raw, params).map(Cow::Owned)
}

/// Reads the original method and path from the proxy's headers. The method
/// falls back to the check request's own; the path has no fallback. Path
/// parameters are refused or stripped as `params` says.
pub fn original_request<'a>(
    headers: &'a HeaderMap,
    own_method: &'a str,
    params: PathParameters,
) -> Result<Original<'a>, Refusal> {
    let reported = Reported::of(headers);
    let forwarded_method = reported.single(FORWARDED_METHOD)?;
    let original_method = reported.single(ORIGINAL_METHOD)?;
    let method = match (forwarded_method, original_method) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
            return Err(Refusal::Disagree("Method"))
        }
        (a, b) => a.or(b).unwrap_or(own_method),
    };
    if !is_method(method) {
        return Err(Refusal::BadMethod);
    }
    let forwarded_uri = reported.single(FORWARDED_URI)?;
    let original_uri = reported.single(ORIGINAL_URI)?;
    let normalise = |raw: &'a str| normalize_borrowed(raw, params).map_err(Refusal::Path);
    let path = match (forwarded_uri, original_uri) {
        (None, None) => return Err(Refusal::NoPath),
        (Some(a), Some(b)) => {
            let (a, b) = (normalise(a)?, normalise(b)?);
            if !a.eq_ignore_ascii_case(&b) {
                return Err(Refusal::Disagree("Uri"));
            }
            a
        }
        (Some(one), None) | (None, Some(one)) => normalise(one)?,
    };
    Ok(Original { method, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// [`normalize_path`] with the default: path parameters refused.
    fn normalize(raw: &str) -> Result<String, PathError> {
        normalize_path(raw, PathParameters::Refuse)
    }

    fn stripped(raw: &str) -> Result<String, PathError> {
        normalize_path(raw, PathParameters::Strip)
    }

    #[test]
    fn spellings_of_one_path_normalise_alike() {
        for raw in [
            "/orders/7",
            "//orders/7",
            "/orders//7",
            "/./orders/7",
            "/x/../orders/7",
            "/%6Frders/7",
            "/%6frders/%37",
            "/orders/7?x=/public",
            "/orders/7#frag",
            "/orders/./7",
            "/orders/x/%2e%2E/7",
            "/%2E/orders/7",
        ] {
            assert_eq!(normalize(raw), Ok("/orders/7".into()), "{raw}");
        }
        assert_eq!(normalize("/"), Ok("/".into()));
        assert_eq!(normalize("/orders/"), Ok("/orders/".into()));
        assert_eq!(normalize("/orders/7/.."), Ok("/orders/".into()));
        assert_eq!(normalize("/orders/."), Ok("/orders/".into()));
        assert_eq!(normalize("/a/.."), Ok("/".into()));
        assert_eq!(normalize("/a%20b/%c3%a9"), Ok("/a%20b/%C3%A9".into()));
        assert_eq!(normalize("/é"), Ok("/%C3%A9".into()));
        assert_eq!(normalize("/a%25b"), Ok("/a%25b".into()));
    }

    #[test]
    fn paths_that_cannot_be_normalised_are_refused() {
        for (raw, err) in [
            ("", PathError::NotAbsolute),
            ("orders", PathError::NotAbsolute),
            ("http://evil/orders", PathError::NotAbsolute),
            ("/orders%2F7", PathError::EncodedSeparator),
            ("/orders%2f7", PathError::EncodedSeparator),
            ("/x/..%2Forders", PathError::EncodedSeparator),
            ("/%5Corders", PathError::EncodedSeparator),
            ("/orders\\7", PathError::Backslash),
            ("/orders%00", PathError::ControlCharacter),
            ("/orders\0", PathError::ControlCharacter),
            ("/orders%0a", PathError::ControlCharacter),
            ("/orders\t", PathError::ControlCharacter),
            ("/orders%", PathError::BadPercentEncoding),
            ("/orders%4", PathError::BadPercentEncoding),
            ("/orders%zz", PathError::BadPercentEncoding),
            ("/..", PathError::AboveRoot),
            ("/../orders", PathError::AboveRoot),
            ("/a/../../orders", PathError::AboveRoot),
            ("/%2e%2e/orders", PathError::AboveRoot),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalize(&long), Err(PathError::TooLong));
    }

    /// The spellings a servlet container reads as `/orders` (or above the
    /// root): refused by default, judged as that reading when stripped.
    const WITH_PARAMETERS: [(&str, Result<&str, PathError>); 12] = [
        ("/orders;x", Ok("/orders")),
        ("/;x/orders", Ok("/orders")),
        ("/;/orders", Ok("/orders")),
        ("/.;/orders", Ok("/orders")),
        ("/..;/orders", Err(PathError::AboveRoot)),
        ("/x/..;/orders", Ok("/orders")),
        ("/public/..;jsessionid=1/orders/7", Ok("/orders/7")),
        ("/x/%2e%2e;/orders", Ok("/orders")),
        ("/%6Frders;v=1/7", Ok("/orders/7")),
        ("/a;b/c;d/", Ok("/a/c/")),
        ("/orders;x?q=;", Ok("/orders")),
        ("/x/..;%41/orders", Ok("/orders")),
    ];

    #[test]
    fn path_parameters_are_refused_by_default() {
        for (raw, _) in WITH_PARAMETERS {
            assert_eq!(normalize(raw), Err(PathError::PathParameters), "{raw}");
        }
        // In the query they are no path parameters.
        assert_eq!(normalize("/public?x=;/orders"), Ok("/public".into()));
        assert!(PathError::PathParameters
            .message()
            .contains("forward_auth.path_parameters = \"strip\""));
    }

    #[test]
    fn stripped_path_parameters_read_as_servlet_containers_read_them() {
        for (raw, expected) in WITH_PARAMETERS {
            assert_eq!(stripped(raw), expected.map(String::from), "{raw}");
        }
        // Without a `;` both modes agree.
        assert_eq!(stripped("/x/../orders"), Ok("/orders".into()));
        // What the parameters hold is checked too: a server that reads a
        // backslash or an encoded slash as a separator ends them there.
        for (raw, err) in [
            ("/public;\\..\\orders", PathError::Backslash),
            ("/public;%2F..%2Forders", PathError::EncodedSeparator),
            ("/public;%00", PathError::ControlCharacter),
            ("/public;%zz", PathError::BadPercentEncoding),
        ] {
            assert_eq!(stripped(raw), Err(err), "{raw}");
        }
    }

    /// `%3B` is `;` to a server that decodes before it strips and part of
    /// the name to one that strips first: refused in both modes.
    #[test]
    fn an_encoded_semicolon_is_refused_in_both_modes() {
        for raw in [
            "/orders%3Bx",
            "/orders%3bx",
            "/%3B/orders",
            "/..%3B/orders",
            "/x/..%3B/orders",
            "/x/..%3b/orders",
            "/public/.%3B/orders",
        ] {
            assert_eq!(normalize(raw), Err(PathError::EncodedSemicolon), "{raw}");
            assert_eq!(stripped(raw), Err(PathError::EncodedSemicolon), "{raw}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_two_header_families_must_agree() {
        let ok = |pairs: &[(&'static str, &str)]| {
            original_request(&headers(pairs), "GET", PathParameters::Refuse)
                .map(|o| (o.method.to_string(), o.path.into_owned()))
        };
        assert_eq!(
            ok(&[("x-forwarded-method", "POST"), ("x-forwarded-uri", "/a")]),
            Ok(("POST".into(), "/a".into()))
        );
        assert_eq!(
            ok(&[("x-original-method", "post"), ("x-original-uri", "/a?q")]),
            Ok(("post".into(), "/a".into()))
        );
        assert_eq!(ok(&[("x-original-uri", "/a")]).unwrap().0, "GET");
        // Both families, same request in other spellings: fine.
        assert!(ok(&[
            ("x-forwarded-method", "GET"),
            ("x-original-method", "get"),
            ("x-forwarded-uri", "/orders/7"),
            ("x-original-uri", "//orders/./7?x"),
        ])
        .is_ok());
        assert_eq!(
            ok(&[
                ("x-forwarded-method", "GET"),
                ("x-original-method", "POST"),
                ("x-original-uri", "/a")
            ]),
            Err(Refusal::Disagree("Method"))
        );
        assert_eq!(
            ok(&[
                ("x-forwarded-uri", "/public"),
                ("x-original-uri", "/orders")
            ]),
            Err(Refusal::Disagree("Uri"))
        );
        assert_eq!(
            ok(&[("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")]),
            Err(Refusal::Unreadable("x-forwarded-uri"))
        );
        assert_eq!(
            ok(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/")
            ]),
            Err(Refusal::Unreadable("x-forwarded-method"))
        );
        assert_eq!(ok(&[("x-forwarded-method", "GET")]), Err(Refusal::NoPath));
        assert_eq!(
            ok(&[("x-forwarded-method", "G T"), ("x-forwarded-uri", "/")]),
            Err(Refusal::BadMethod)
        );
        assert_eq!(
            ok(&[("x-forwarded-uri", "/%2e%2e/x")]),
            Err(Refusal::Path(PathError::AboveRoot))
        );
        assert_eq!(
            ok(&[("x-forwarded-uri", "/x/..;/orders")]),
            Err(Refusal::Path(PathError::PathParameters))
        );
        // Stripped, both families must still agree on what they name.
        let stripped = |pairs: &[(&'static str, &str)]| {
            original_request(&headers(pairs), "GET", PathParameters::Strip)
                .map(|o| o.path.into_owned())
        };
        assert_eq!(
            stripped(&[
                ("x-forwarded-uri", "/x/..;/orders"),
                ("x-original-uri", "/orders;jsessionid=1")
            ]),
            Ok("/orders".into())
        );
        assert_eq!(
            stripped(&[
                ("x-forwarded-uri", "/public;/orders"),
                ("x-original-uri", "/public/..;/orders")
            ]),
            Err(Refusal::Disagree("Uri"))
        );
    }

    /// Paths built from the pieces that matter: separators, dots, escapes.
    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%41".to_string()),
            Just("%".to_string()),
            Just("?".to_string()),
            Just("\\".to_string()),
            "[a-zA-Z0-9_~;:@!$&'()*+,=-]{1,4}",
            "%[0-9a-fA-F]{2}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    fn modes() -> impl Strategy<Value = PathParameters> {
        prop_oneof![Just(PathParameters::Refuse), Just(PathParameters::Strip)]
    }

    proptest! {
        #[test]
        fn normalising_never_panics(raw in any::<String>(), params in modes()) {
            let _ = normalize_path(&raw, params);
        }

        #[test]
        fn normalised_paths_are_canonical(raw in path_like(), params in modes()) {
            let raw = format!("/{raw}");
            if let Ok(p) = normalize_path(&raw, params) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.starts_with("//"));
                prop_assert!(!p.contains("//"), "{p}");
                for segment in p.split('/') {
                    prop_assert!(segment != "." && segment != "..", "{p}");
                }
                prop_assert!(!p.contains(['?', '#', '\\', ';']));
                prop_assert_eq!(normalize_path(&p, params), Ok(p.clone()), "idempotent");
                prop_assert_eq!(
                    normalize_path(&p, PathParameters::Refuse),
                    Ok(p.clone()),
                    "normal in either mode"
                );
            }
        }

        /// Stripping never makes a path acceptable that is refused for
        /// another reason than its parameters, and a path without a `;`
        /// reads the same in both modes.
        #[test]
        fn stripping_changes_only_paths_with_parameters(raw in path_like()) {
            let raw = format!("/{raw}");
            let path = &raw[..raw.find(['?', '#']).unwrap_or(raw.len())];
            let (refused, stripped) = (
                normalize_path(&raw, PathParameters::Refuse),
                normalize_path(&raw, PathParameters::Strip),
            );
            if path.contains(';') {
                prop_assert!(refused.is_err());
            } else {
                prop_assert_eq!(refused, stripped);
            }
        }

        #[test]
        fn paths_taken_as_normal_are_what_normalising_returns(raw in path_like(), params in modes()) {
            let raw = format!("/{raw}");
            if is_normal(raw.as_bytes()) {
                prop_assert_eq!(normalize_bytes(raw.as_bytes(), params), Ok(raw.clone()));
            }
        }

        #[test]
        fn borrowing_a_normal_path_changes_nothing(
            raw in path_like(),
            slash in any::<bool>(),
            params in modes(),
        ) {
            let raw = if slash { format!("/{raw}") } else { raw };
            prop_assert_eq!(
                normalize_borrowed(&raw, params).map(Cow::into_owned),
                normalize_path(&raw, params)
            );
        }

        #[test]
        fn the_query_never_changes_the_path(path in "(/[a-z.;]{0,3}){1,5}", query in ".*", params in modes()) {
            prop_assert_eq!(
                normalize_path(&format!("{path}?{query}"), params),
                normalize_path(&path, params)
            );
        }
    }
}
