//! The state every handler receives (`web::Data<AppState>`), passed
//! explicitly: there are no globals.

use std::sync::Arc;

use crate::auth::tokens::Keyring;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::sessions::SessionLimits;
use crate::db::Db;
use crate::mail::Mailer;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub metrics: Metrics,
    pub catalog: Catalog,
    pub keyring: Keyring,
    pub mailer: Mailer,
    /// The OpenAPI document, generated once at start.
    pub openapi_json: String,
}

impl AppState {
    /// `config` must have passed the startup checks; in particular
    /// `secrets.session_key` is set (local mode generates one).
    pub fn new(config: Config, db: Db) -> Self {
        let catalog = Catalog::from_config(&config);
        let session_key = config
            .secrets
            .session_key
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_else(|| crate::config::generate_secret().into_bytes());
        let config = Arc::new(config);
        AppState {
            keyring: Keyring::new(&session_key),
            mailer: Mailer::new(config.clone()),
            config,
            db,
            metrics: Metrics::new(),
            catalog,
            openapi_json: crate::openapi::document_json(),
        }
    }

    pub fn session_limits(&self) -> SessionLimits {
        let a = &self.config.auth;
        SessionLimits {
            idle_secs: a.session_idle_secs as i64,
            max_secs: a.session_max_secs as i64,
            reuse_grace_secs: a.refresh_reuse_grace_secs as i64,
        }
    }

    /// Work to finish before the process exits after a graceful stop.
    pub async fn shutdown(&self) {
        tracing::info!("stopped");
    }
}
