//! Typed ids across the storage interface, so that a project id passed
//! where a key id belongs does not compile.

use std::fmt;
use std::sync::Arc;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                $name(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn as_arc(&self) -> &Arc<str> {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<Arc<str>> for $name {
            fn from(s: Arc<str>) -> Self {
                $name(s)
            }
        }

        impl From<&Arc<str>> for $name {
            fn from(s: &Arc<str>) -> Self {
                $name(s.clone())
            }
        }
    };
}

id_type!(
    /// `proj_...`
    ProjectId
);
id_type!(
    /// `key_...`
    KeyId
);
id_type!(
    /// `usr_...`
    UserId
);

/// The SHA-256 of an API key: how a key is found, and all that is stored of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell hashes apart in a log; never the whole value.
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_compare_by_value() {
        let a = ProjectId::from("proj_1");
        assert_eq!(a, ProjectId::new(String::from("proj_1")));
        assert_eq!(a.to_string(), "proj_1");
        assert_eq!(format!("{a:?}"), "ProjectId(\"proj_1\")");
        assert_eq!(format!("{:?}", KeyHash([0xab; 32])), "KeyHash(abababab..)");
    }
}
