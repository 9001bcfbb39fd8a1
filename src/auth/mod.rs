//! Email-code login, sessions and CSRF, and the `Principal` extractor.

pub mod cookies;
pub mod login;
pub mod principal;
pub mod redirect;
pub mod rules;
pub mod throttle;
pub mod tokens;

pub use principal::{Principal, ProjectAccess, SessionPrincipal, Via};
