//! Email-code login, sessions and CSRF, and the `Principal` extractor.

pub mod cookies;
pub mod login;
pub mod principal;
pub mod redirect;
/// The rules of codes and sessions live with their storage (the backends
/// decide with them inside their transactions).
pub use crate::store::session_rules as rules;
pub mod throttle;
pub mod tokens;

pub use principal::{Principal, ProjectAccess, SessionPrincipal, Via};
