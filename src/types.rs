//! Values parsed once at the edge; code that holds one never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An email address, trimmed and lower-cased. Accepts what people actually
/// type (`local@domain.tld`), refuses anything with spaces, control
/// characters, several `@`, or a domain without a dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > 254 {
            return Err("is longer than 254 characters");
        }
        let (local, domain) = s.split_once('@').ok_or("must contain @")?;
        if local.is_empty() || local.len() > 64 {
            return Err("must have 1-64 characters before @");
        }
        if domain.contains('@') {
            return Err("must contain a single @");
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err("has characters not allowed before @");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err("must have a domain like example.com after @");
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`, for friendly defaults such as project names.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A member's role in a project. Ordered: member < admin < owner.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A display name such as a project name: trimmed, 1-100 characters, no
/// control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Name, &'static str> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is required");
        }
        if s.chars().count() > 100 {
            return Err("must be at most 100 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 3339 in UTC (`2026-11-22T17:42:00Z`) for API answers.
pub fn rfc3339(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse("  Alice@Acme.TEST ").unwrap().as_str(),
            "alice@acme.test"
        );
        assert_eq!(
            Email::parse("a.b+tag@sub.acme.test").unwrap().local_part(),
            "a.b+tag"
        );
        for bad in [
            "",
            "alice",
            "@acme.test",
            "alice@",
            "alice@acme",
            "a@b@acme.test",
            "al ice@acme.test",
            "alice@acme..test",
            "alice@-acme.test",
            ".alice@acme.test",
            "alice\n@acme.test",
            "<script>@acme.test",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@acme.test", "a".repeat(65))).is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Member);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn names_and_times() {
        assert_eq!(Name::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(101)).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}

/// An id taken from a request path (`/api-keys/{id}`). Gatehouse's ids are
/// a prefix, `_` and letters and digits; anything else (control bytes, a
/// NUL that PostgreSQL would refuse to compare, spaces, 200 characters)
/// names nothing that exists, so it fails to parse and the route answers
/// 404 (`http::extract::path_config`) without asking storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathId(String);

impl PathId {
    const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Option<PathId> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| PathId(s.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for PathId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PathId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        PathId::parse(&s).ok_or_else(|| serde::de::Error::custom("not an id"))
    }
}

#[cfg(test)]
mod path_id_tests {
    use super::PathId;

    #[test]
    fn ids_are_prefixed_alphanumerics() {
        assert!(PathId::parse("key_3xY9").is_some());
        assert!(PathId::parse("usr_abc-def").is_some());
        for bad in ["", "a\0b", "key 1", "key/1", "k\u{e9}y", &"k".repeat(65)] {
            assert!(PathId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
