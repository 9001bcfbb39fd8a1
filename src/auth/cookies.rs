//! Session cookies: HttpOnly, SameSite=Lax, Path=/, and `Secure` with the
//! `__Host-` name prefix whenever `public_url` is https.

use actix_web::cookie::{time::Duration, Cookie, SameSite};

pub struct CookieNames {
    pub access: &'static str,
    pub refresh: &'static str,
}

pub fn names(https: bool) -> CookieNames {
    if https {
        CookieNames {
            access: "__Host-gatehouse_access",
            refresh: "__Host-gatehouse_refresh",
        }
    } else {
        CookieNames {
            access: "gatehouse_access",
            refresh: "gatehouse_refresh",
        }
    }
}

fn build(name: &'static str, value: String, https: bool, max_age: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .max_age(Duration::seconds(max_age))
        .finish()
}

/// The pair of cookies for a fresh access/refresh token pair.
pub fn session(
    https: bool,
    access: String,
    access_ttl: i64,
    refresh: String,
    refresh_ttl: i64,
) -> [Cookie<'static>; 2] {
    let n = names(https);
    [
        build(n.access, access, https, access_ttl),
        build(n.refresh, refresh, https, refresh_ttl),
    ]
}

/// Cookies that delete both session cookies.
pub fn cleared(https: bool) -> [Cookie<'static>; 2] {
    let n = names(https);
    [
        build(n.access, String::new(), https, 0),
        build(n.refresh, String::new(), https, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_cookies_are_secure_and_host_prefixed() {
        let [a, r] = session(true, "a".into(), 3600, "r".into(), 86400);
        let text = a.to_string();
        assert!(text.starts_with("__Host-gatehouse_access=a"), "{text}");
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(text.contains(attr), "{attr} in {text}");
        }
        assert!(r.to_string().starts_with("__Host-gatehouse_refresh=r"));
        let [a, _] = session(false, "a".into(), 3600, "r".into(), 86400);
        assert!(!a.to_string().contains("Secure"));
        assert!(a.to_string().starts_with("gatehouse_access="));
    }
}
