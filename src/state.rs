//! The state every handler receives (`web::Data<AppState>`), passed
//! explicitly: there are no globals.

use std::sync::Arc;

use crate::auth::tokens::Keyring;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::keys::store::KeyStore;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::store::sessions::SessionLimits;
use crate::store::Store;

pub struct AppState {
    pub config: Arc<Config>,
    /// `config.effective_public_url()`, worked out once.
    pub public_url: url::Url,
    /// Whether browsers reach Gatehouse over https (secure cookies, HSTS).
    pub https: bool,
    /// The storage interface: everything reads and writes through it.
    pub store: Arc<dyn Store>,
    /// Shared with the conventions middleware.
    pub metrics: Arc<Metrics>,
    /// Rate-limit windows in Redis, when `redis.url` is set.
    pub shared_windows: Option<Arc<crate::cluster::redis::SharedWindows>>,
    pub catalog: Catalog,
    pub keyring: Keyring,
    pub mailer: Mailer,
    pub keys: Arc<KeyStore>,
    /// Present when `[[billing.plans]]` are configured.
    pub quotas: Option<crate::billing::quota::Quotas>,
    /// The OpenAPI document, generated once at start by the caller (the
    /// document describes the routes, which take this state: building it
    /// here would make the state depend on its own users).
    pub openapi_json: String,
    /// Trace export, when configured (`telemetry::traces`).
    pub traces: Option<crate::telemetry::traces::Tracing>,
    /// The webhook and mail batches in progress, finished before exit.
    pub work: Arc<crate::drain::Drain>,
    /// `[ui]` as the pages use it: the name, the theme and the logo.
    pub branding: Arc<crate::ui::branding::Branding>,
    /// The connections a graceful stop lets the proxy close first.
    pub http: Arc<crate::drain::HttpDrain>,
}

impl AppState {
    /// `config` must have passed the startup checks; in particular
    /// `secrets.session_key` is set (local mode generates one).
    pub fn new(config: Config, store: Arc<dyn Store>, openapi_json: String) -> Self {
        let catalog = Catalog::from_config(&config);
        let session_key = config
            .secrets
            .session_key
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_else(|| crate::config::generate_secret().into_bytes());
        let metrics = Metrics::new();
        let mut keys = KeyStore::new(&config, store.clone());
        let shared_windows =
            crate::cluster::redis::SharedWindows::new(&config.redis, metrics.rate_limits.clone());
        if let Some(shared) = &shared_windows {
            keys.share_windows(shared.clone());
        }
        let config = Arc::new(config);
        let public_url = config.effective_public_url();
        let quotas = (!config.billing.plans.is_empty())
            .then(|| crate::billing::quota::Quotas::new(config.clone()));
        AppState {
            https: public_url.scheme() == "https",
            public_url,
            keys: Arc::new(keys),
            quotas,
            keyring: Keyring::new(&session_key),
            mailer: Mailer::new(config.clone()),
            branding: Arc::new(crate::ui::branding::Branding::new(&config.ui)),
            config,
            store,
            metrics: Arc::new(metrics),
            shared_windows,
            openapi_json,
            catalog,
            traces: None,
            work: Arc::default(),
            http: Arc::default(),
        }
    }

    /// The plans' monthly verification quotas; `None` without plans.
    pub fn quota_gate(&self) -> Option<&crate::billing::quota::Quotas> {
        self.quotas.as_ref()
    }

    /// The one path for key changes, with this process's cache.
    pub fn key_service(&self) -> crate::keys::admin::KeyService<'_> {
        crate::keys::admin::KeyService::new(&*self.store, &self.config, Some(&self.keys))
    }

    /// A key rotated with a grace period draws on its successor's balance
    /// (spends are made there): the record with that balance, for showing.
    pub async fn with_shared_balance(
        &self,
        mut k: crate::keys::record::KeyRecord,
    ) -> Result<crate::keys::record::KeyRecord, crate::store::StoreError> {
        if let (Some(successor), Some(_)) = (&k.rotated_to, k.credits) {
            let successor = crate::store::KeyId::new(successor.clone());
            if let Some(s) = self.store.find_key_by_id(successor).await? {
                k.credits = s.credits;
            }
        }
        Ok(k)
    }

    /// A key's metadata as the API shows it.
    pub fn key_view(&self, k: &crate::keys::record::KeyRecord) -> crate::keys::view::KeyView {
        crate::keys::view::KeyView::new(
            k,
            self.config.keys.default_rate_limit,
            self.store.clock().now(),
        )
    }

    pub fn session_limits(&self) -> SessionLimits {
        crate::auth::rules::SessionLimits::of(&self.config.auth)
    }

    /// The login flow, with what it needs from here.
    pub fn login(&self) -> crate::auth::login::Login<'_> {
        crate::auth::login::Login {
            store: &*self.store,
            keyring: &self.keyring,
            mailer: &self.mailer,
            config: &self.config,
        }
    }

    /// Work to finish before the process exits after a graceful stop: the
    /// webhook deliveries and mail being sent are finished and recorded
    /// (up to `http.shutdown_timeout_secs`), and usage counts still in
    /// memory are written.
    pub async fn shutdown(&self) {
        let grace = std::time::Duration::from_secs(self.config.http.shutdown_timeout_secs);
        if !self.work.stop(grace).await {
            tracing::warn!(
                "webhook deliveries or mail still in progress at shutdown; \
                 they are sent again once their claim runs out"
            );
        }
        match self.keys.usage.flush(&*self.store).await {
            Ok(()) => tracing::info!("usage written; stopped"),
            Err(e) => tracing::error!(error = %e, "usage could not be written at shutdown"),
        }
    }
}
