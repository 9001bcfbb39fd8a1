//! The state every handler receives (`web::Data<AppState>`), passed
//! explicitly: there are no globals.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub metrics: Metrics,
    pub catalog: Catalog,
    /// The OpenAPI document, generated once at start.
    pub openapi_json: String,
}

impl AppState {
    pub fn new(config: Config, db: Db) -> Self {
        let catalog = Catalog::from_config(&config);
        AppState {
            config: Arc::new(config),
            db,
            metrics: Metrics::new(),
            catalog,
            openapi_json: crate::openapi::document_json(),
        }
    }

    /// Work to finish before the process exits after a graceful stop.
    pub async fn shutdown(&self) {
        tracing::info!("stopped");
    }
}
