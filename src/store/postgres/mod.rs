//! The PostgreSQL backend: tokio-postgres connections in a deadpool pool.
//!
//! Connections carry `application_name = gatehouse` (unless the URL names
//! one), so operators can tell Gatehouse's connections apart in
//! `pg_stat_activity`. TLS follows libpq's `sslmode` (see [`tls`]).

pub mod billing;
pub mod directory;
pub mod effects;
pub mod keys;
pub mod listen;
pub mod migrate;
pub mod sessions;
pub mod spend;
pub mod tls;
pub mod usage;
pub mod work;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub use migrate::{latest_version, migrate, migrations};

/// `application_name` of the pooled connections.
pub const APPLICATION_NAME: &str = "gatehouse";

/// How long to wait for a connection (from the pool or a new one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database.url: {0}")]
    Config(String),
    #[error("postgresql: {0}")]
    Pool(String),
    #[error("postgresql: {}", chain(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the database is at schema version {found}, newer than this Gatehouse supports ({supported}); \
         run the newer Gatehouse release"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored value that Gatehouse never writes.
    #[error("unreadable stored value in {0}")]
    Corrupt(String),
}

impl PgError {
    /// A fault of the database or the way to it, not of the request: the
    /// same request can succeed later (503, never 500).
    pub fn is_unavailable(&self) -> bool {
        self.unavailability().is_some()
    }

    /// Why the database cannot take this work now, when that is the
    /// cause (by SQLSTATE class: 08 connection, 53 out of resources such as
    /// a full disk, 57P shutting down, 40001/40P01 retry the transaction).
    pub fn unavailability(&self) -> Option<crate::store::Unavailable> {
        use crate::store::Unavailable;
        match self {
            PgError::Pool(_) => Some(Unavailable::Unreachable),
            PgError::Query(e) if e.is_closed() || e.as_db_error().is_none() => {
                Some(Unavailable::Unreachable)
            }
            PgError::Query(e) => {
                let code = e.code()?.code();
                if code == "40001" || code == "40P01" {
                    Some(Unavailable::Busy)
                } else if code.starts_with("53") {
                    Some(Unavailable::CannotWrite)
                } else if code.starts_with("08") || code.starts_with("57P") {
                    Some(Unavailable::Unreachable)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(chain(&e))
    }
}

/// An error with its causes (`a: b: c`): the driver's own messages are
/// terse ("db error", "error performing TLS handshake") and the reason
/// an operator needs is in the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A connection pool for `url` (a libpq-style URL). Nothing is connected
/// until the pool is first used.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, PgError> {
    let parsed = tls::split_url(url)?;
    let mut config: tokio_postgres::Config = parsed
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.ssl_mode(parsed.tls.ssl_mode());
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match parsed.tls.connector()? {
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls, manager_config),
    };
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_postgres_urls_and_hides_passwords() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@h/db"));
        assert!(!is_postgres_url("sqlite:///x"));
        assert!(!is_postgres_url(""));
        assert_eq!(
            redact_url("postgres://gh:s3cret@db.internal:5432/gatehouse?sslmode=require"),
            "postgres://gh:***@db.internal:5432/gatehouse?sslmode=require"
        );
        assert!(!redact_url("postgres://gh:s3cret@db/x").contains("s3cret"));
    }

    #[test]
    fn a_pool_is_built_without_connecting() {
        // Nothing listens on port 1: building the pool must not try.
        pool("postgres://gh@127.0.0.1:1/gatehouse?sslmode=disable", 4).unwrap();
        assert!(matches!(
            pool("postgres://gh@127.0.0.1:1/x?sslmode=sometimes", 4),
            Err(PgError::Config(_))
        ));
    }
}

/// The PostgreSQL backend behind the storage interface.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Where every time this backend writes or compares comes from.
    clock: crate::clock::Clock,
    home: std::sync::Arc<ConnectionHome>,
    /// For the listening connection, which is not pooled.
    url: std::sync::Arc<str>,
}

/// Where the pool's connections live. A tokio-postgres connection is a
/// task on the runtime that opened it; the server's worker threads each
/// run a runtime of their own that ends when the worker stops, which would
/// close every connection a worker happened to open while the pool still
/// hands them out (the usage flush at shutdown would find them dead). So
/// connections are opened on this runtime, on a thread of its own that
/// lives as long as the store; queries still run from any thread (a
/// client talks to its connection task through a channel).
struct ConnectionHome {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ConnectionHome {
    fn start() -> std::io::Result<ConnectionHome> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("gatehouse-pg".into())
            .spawn(move || {
                // Runs until the store is dropped (the sender with it).
                let _ = runtime.block_on(stopped);
            })?;
        Ok(ConnectionHome {
            handle,
            _stop: stop,
        })
    }
}

impl PgStore {
    /// `url` is the one `pool` was made from (the listening connection
    /// uses it too).
    pub fn new(pool: Pool, url: &str) -> Self {
        let home = ConnectionHome::start().expect("a thread for the database connections");
        PgStore {
            pool,
            clock: crate::clock::Clock::system(),
            home: std::sync::Arc::new(home),
            url: url.into(),
        }
    }

    /// The same store read through `clock` (tests move it).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection; a new one is opened on the connections' own
    /// runtime (see [`ConnectionHome`]).
    async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        let pool = self.pool.clone();
        match self
            .home
            .handle
            .spawn(async move { pool.get().await })
            .await
        {
            Ok(client) => Ok(client?),
            Err(_) => Err(PgError::Pool("the connection thread has stopped".into())),
        }
    }
}

mod repo {
    use async_trait::async_trait;

    use super::{keys, PgStore};
    use crate::keys::record::KeyRecord;
    use crate::store::effects::Effects;
    use crate::store::keys::{
        FeedHorizon, FeedRead, ImportEffects, KeyChange, KeyRepo, LeakEffects, RotationEffects,
    };
    use crate::store::keys::{KeyFilter, Rotated};
    use crate::store::{KeyHash, KeyId, ProjectId, StoreResult};

    #[async_trait]
    impl KeyRepo for PgStore {
        async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>> {
            let client = self.client().await?;
            Ok(keys::key_by_hash(&client, &hash.0, false).await?)
        }

        async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {} FROM api_keys WHERE id = $1", keys::KEY_COLUMNS),
                    &[&id.as_str()],
                )
                .await
                .map_err(super::PgError::from)?;
            Ok(row.as_ref().map(keys::key_from).transpose()?)
        }

        async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>> {
            let client = self.client().await?;
            Ok(keys::key_by_id(&client, project.as_str(), id.as_str(), false).await?)
        }

        async fn keys_page(
            &self,
            project: ProjectId,
            filter: KeyFilter,
            offset: i64,
            limit: i64,
        ) -> StoreResult<(Vec<KeyRecord>, i64)> {
            let client = self.client().await?;
            Ok(keys::keys_page(
                &client,
                project.as_str(),
                &filter,
                offset,
                limit,
                self.clock.now(),
            )
            .await?)
        }

        async fn create_key(
            &self,
            key: KeyRecord,
            max_keys: Option<u64>,
            effects: Effects,
        ) -> StoreResult<Option<KeyRecord>> {
            let mut client = self.client().await?;
            Ok(keys::create_key(&mut client, &key, max_keys, &effects)
                .await?
                .map(|()| key))
        }

        async fn update_key(
            &self,
            project: ProjectId,
            id: KeyId,
            change: KeyChange,
        ) -> StoreResult<Option<KeyRecord>> {
            let mut client = self.client().await?;
            Ok(keys::update_key(
                &mut client,
                project.as_str(),
                id.as_str(),
                change,
                self.clock.now(),
            )
            .await?)
        }

        async fn rotate_key(
            &self,
            project: ProjectId,
            old: KeyId,
            new: KeyRecord,
            old_expires_at: Option<i64>,
            max_keys: Option<u64>,
            effects: RotationEffects,
        ) -> StoreResult<Rotated> {
            let mut client = self.client().await?;
            Ok(keys::rotate_key(
                &mut client,
                project.as_str(),
                old.as_str(),
                new,
                old_expires_at,
                max_keys,
                effects,
                self.clock.now(),
            )
            .await?)
        }

        async fn revoke_leaked(
            &self,
            hash: KeyHash,
            effects: LeakEffects,
        ) -> StoreResult<Option<(KeyRecord, bool)>> {
            let mut client = self.client().await?;
            Ok(keys::revoke_leaked(&mut client, &hash.0, effects, self.clock.now()).await?)
        }

        async fn import_keys(
            &self,
            keys_to_import: Vec<KeyRecord>,
            effects: ImportEffects,
        ) -> StoreResult<Result<usize, String>> {
            let mut client = self.client().await?;
            Ok(keys::import_keys(&mut client, &keys_to_import, effects).await?)
        }

        async fn subscribe_key_changes(
            &self,
        ) -> StoreResult<Option<Box<dyn crate::store::keys::KeyChangeSubscription>>> {
            let listener = super::listen::Listener::connect(&self.url).await?;
            Ok(Some(Box::new(listener)))
        }

        async fn count_active_keys(&self, project: ProjectId) -> StoreResult<i64> {
            let client = self.client().await?;
            Ok(keys::active_keys(&client, project.as_str(), self.clock.now()).await?)
        }

        async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>> {
            let client = self.client().await?;
            Ok(keys::imported_key_hashes(&client)
                .await?
                .into_iter()
                .map(KeyHash)
                .collect())
        }

        async fn key_feed_horizon(&self) -> StoreResult<FeedHorizon> {
            let client = self.client().await?;
            Ok(FeedHorizon(keys::key_feed_horizon(&client).await?))
        }

        async fn prune_key_changes(&self, before: i64) -> StoreResult<usize> {
            let client = self.client().await?;
            let n = client
                .execute("DELETE FROM key_changes WHERE changed_at < $1", &[&before])
                .await
                .map_err(super::PgError::from)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        }

        async fn read_key_changes(&self, from: FeedHorizon) -> StoreResult<FeedRead> {
            let mut client = self.client().await?;
            Ok(keys::read_key_changes(&mut client, from.0).await?)
        }
    }
}

mod usage_repo {
    use async_trait::async_trait;

    use super::{usage, PgStore};
    use crate::store::audit::AuditRepo;
    use crate::store::audit::StoredEvent;
    use crate::store::usage::UsageRepo;
    use crate::store::usage::{UsageBatch, UsageCounts};
    use crate::store::{KeyId, ProjectId, StoreError, StoreResult};

    #[async_trait]
    impl UsageRepo for PgStore {
        async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)> {
            let mut client = match self.client().await {
                Ok(c) => c,
                Err(e) => return Err((e.into(), batch)),
            };
            match usage::write_usage(&mut client, &batch).await {
                Ok(()) => Ok(()),
                Err(e) => Err((e.into(), batch)),
            }
        }

        async fn usage_series(
            &self,
            project: ProjectId,
            key: Option<KeyId>,
            from: i64,
            to: i64,
            bucket_secs: i64,
        ) -> StoreResult<Vec<(i64, UsageCounts)>> {
            let client = self.client().await?;
            Ok(usage::usage_series(
                &client,
                project.as_str(),
                key.as_ref().map(|k| k.as_str()),
                from,
                to,
                bucket_secs,
            )
            .await?)
        }

        async fn project_verifications_since(
            &self,
            project: ProjectId,
            since: i64,
        ) -> StoreResult<u64> {
            let client = self.client().await?;
            Ok(usage::project_verifications_since(&client, project.as_str(), since).await?)
        }
    }

    #[async_trait]
    impl AuditRepo for PgStore {
        async fn audit_page(
            &self,
            project: ProjectId,
            offset: i64,
            limit: i64,
        ) -> StoreResult<(Vec<StoredEvent>, i64)> {
            let client = self.client().await?;
            Ok(usage::audit_page(&client, project.as_str(), offset, limit).await?)
        }
    }
}

mod work_repo {
    use async_trait::async_trait;

    use super::{work, PgStore};
    use crate::store::work::{Attempt, AttemptOutcome, DeliveryView, DueDelivery, Endpoint};
    use crate::store::work::{MailRepo, WebhookRepo};
    use crate::store::work::{MailboxMessage, PendingMail};
    use crate::store::{ProjectId, StoreResult};

    #[async_trait]
    impl WebhookRepo for PgStore {
        async fn create_webhook(
            &self,
            project: ProjectId,
            url: String,
            events: Vec<String>,
            secret: String,
            created_by: Option<String>,
        ) -> StoreResult<Endpoint> {
            let client = self.client().await?;
            Ok(work::create_webhook(
                &client,
                project.as_str(),
                &url,
                &events,
                &secret,
                created_by.as_deref(),
                self.clock.now(),
            )
            .await?)
        }

        async fn webhooks(&self, project: ProjectId) -> StoreResult<Vec<Endpoint>> {
            let client = self.client().await?;
            Ok(work::webhooks(&client, project.as_str()).await?)
        }

        async fn webhook(&self, project: ProjectId, id: String) -> StoreResult<Option<Endpoint>> {
            let client = self.client().await?;
            Ok(work::webhook(&client, project.as_str(), &id).await?)
        }

        async fn delete_webhook(&self, project: ProjectId, id: String) -> StoreResult<bool> {
            let client = self.client().await?;
            Ok(work::delete_webhook(&client, project.as_str(), &id).await?)
        }

        async fn send_test_event(
            &self,
            project: ProjectId,
            endpoint_id: String,
        ) -> StoreResult<()> {
            let mut client = self.client().await?;
            Ok(work::send_test_event(
                &mut client,
                project.as_str(),
                &endpoint_id,
                self.clock.now(),
            )
            .await?)
        }

        async fn claim_due_deliveries(
            &self,
            now_ms: i64,
            limit: i64,
            lease_ms: i64,
        ) -> StoreResult<Vec<DueDelivery>> {
            let mut client = self.client().await?;
            Ok(work::claim_due_deliveries(&mut client, now_ms, limit, lease_ms).await?)
        }

        async fn record_attempt(
            &self,
            attempt: Attempt,
            outcome: AttemptOutcome,
        ) -> StoreResult<()> {
            let mut client = self.client().await?;
            Ok(work::record_attempt(&mut client, &attempt, &outcome, self.clock.now()).await?)
        }

        async fn deliveries(
            &self,
            endpoint_id: String,
            offset: i64,
            limit: i64,
        ) -> StoreResult<(Vec<DeliveryView>, i64)> {
            let client = self.client().await?;
            Ok(work::deliveries(&client, &endpoint_id, offset, limit).await?)
        }

        async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
            let client = self.client().await?;
            Ok(work::next_delivery_due(&client).await?)
        }
    }

    #[async_trait]
    impl MailRepo for PgStore {
        async fn mailbox(&self, limit: i64) -> StoreResult<Vec<MailboxMessage>> {
            let client = self.client().await?;
            Ok(work::mailbox(&client, limit).await?)
        }

        async fn claim_due_mail(
            &self,
            now: i64,
            limit: i64,
            lease_secs: i64,
        ) -> StoreResult<Vec<PendingMail>> {
            let client = self.client().await?;
            Ok(work::claim_due_mail(&client, now, limit, lease_secs).await?)
        }

        async fn mail_sent(&self, id: i64, now: i64) -> StoreResult<()> {
            let client = self.client().await?;
            Ok(work::mail_sent(&client, id, now).await?)
        }

        async fn mail_failed(
            &self,
            id: i64,
            error: String,
            next_attempt_at: i64,
            give_up: bool,
            now: i64,
        ) -> StoreResult<()> {
            let client = self.client().await?;
            Ok(work::mail_failed(&client, id, &error, next_attempt_at, give_up, now).await?)
        }

        async fn next_mail_due(&self) -> StoreResult<Option<i64>> {
            let client = self.client().await?;
            Ok(work::next_mail_due(&client).await?)
        }
    }
}

mod directory_repo {
    use async_trait::async_trait;

    use super::{directory, effects, PgError, PgStore};
    use crate::store::audit::Actor;
    use crate::store::directory::DirectoryRepo;
    use crate::store::directory::{
        may_change, member_change_effects, BootstrapOutcome, Member, MemberChangeError, Membership,
        Project, User,
    };
    use crate::store::work::Outgoing;
    use crate::store::{ProjectId, StoreResult, UserId};
    use crate::types::Email;
    use crate::types::Role;

    #[async_trait]
    impl DirectoryRepo for PgStore {
        async fn find_project(&self, id_or_name: String) -> StoreResult<Result<Project, String>> {
            let client = self.client().await?;
            Ok(directory::find_project(&client, &id_or_name).await?)
        }

        async fn memberships(&self, user: UserId) -> StoreResult<Vec<Membership>> {
            let client = self.client().await?;
            Ok(directory::memberships_of(&client, user.as_str()).await?)
        }

        async fn project_role(
            &self,
            user: UserId,
            project: ProjectId,
        ) -> StoreResult<Option<Membership>> {
            let client = self.client().await?;
            Ok(directory::project_role(&client, user.as_str(), project.as_str()).await?)
        }

        async fn create_project(
            &self,
            owner: UserId,
            name: String,
            plan: String,
            actor: Actor,
        ) -> StoreResult<Project> {
            let mut client = self.client().await?;
            Ok(directory::create_project(
                &mut client,
                owner.as_str(),
                &name,
                &plan,
                &actor,
                self.clock.now(),
            )
            .await?)
        }

        async fn projects_page(
            &self,
            user: UserId,
            offset: i64,
            limit: i64,
        ) -> StoreResult<(Vec<Membership>, i64)> {
            let client = self.client().await?;
            Ok(directory::projects_page(&client, user.as_str(), offset, limit).await?)
        }

        async fn members_page(
            &self,
            project: ProjectId,
            offset: i64,
            limit: i64,
        ) -> StoreResult<(Vec<Member>, i64)> {
            let client = self.client().await?;
            Ok(directory::members_page(&client, project.as_str(), offset, limit).await?)
        }

        async fn add_member(
            &self,
            project: ProjectId,
            email: Email,
            role: Role,
            actor_role: Role,
            actor: Actor,
            notify: Outgoing,
        ) -> StoreResult<Result<Member, MemberChangeError>> {
            let mut client = self.client().await?;
            Ok(directory::add_member(
                &mut client,
                project.as_str(),
                &email,
                role,
                actor_role,
                &actor,
                &notify,
                self.clock.now(),
            )
            .await?)
        }

        async fn bootstrap_user(
            &self,
            email: Email,
            project: Option<(String, Option<Role>)>,
            plan: String,
        ) -> StoreResult<Result<BootstrapOutcome, String>> {
            let mut client = self.client().await?;
            Ok(
                directory::bootstrap_user(&mut client, &email, project, &plan, self.clock.now())
                    .await?,
            )
        }

        async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT id, name, plan, created_at FROM projects WHERE id = $1",
                    &[&id.as_str()],
                )
                .await
                .map_err(PgError::from)?;
            Ok(row
                .map(|r| -> Result<Project, PgError> {
                    Ok(Project {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        plan: r.try_get(2)?,
                        created_at: r.try_get(3)?,
                    })
                })
                .transpose()?)
        }

        /// The last-owner rule holds across nodes: every membership row of
        /// the project is locked before the owners are counted, so two
        /// demotions (or removals) of the last two owners take turns and the
        /// second sees one owner left.
        async fn change_member(
            &self,
            project: ProjectId,
            user: UserId,
            to: Option<Role>,
            actor_role: Role,
            actor: Actor,
        ) -> StoreResult<Result<Option<Member>, MemberChangeError>> {
            let now = self.clock.now();
            let mut client = self.client().await?;
            let run = async {
                let tx = client.transaction().await?;
                let roles = tx
                    .query(
                        "SELECT user_id, role FROM memberships WHERE project_id = $1 FOR UPDATE",
                        &[&project.as_str()],
                    )
                    .await?;
                let owners = roles
                    .iter()
                    .filter(|r| r.get::<_, &str>(1) == "owner")
                    .count();
                let row = tx
                    .query_opt(
                        "SELECT u.id, u.email, u.full_name, u.created_at, m.role, m.created_at
                         FROM memberships m JOIN users u ON u.id = m.user_id
                         WHERE m.project_id = $1 AND m.user_id = $2",
                        &[&project.as_str(), &user.as_str()],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(MemberChangeError::NotFound));
                };
                let current = Member {
                    user: User {
                        id: row.try_get(0)?,
                        email: row.try_get(1)?,
                        full_name: row.try_get(2)?,
                        created_at: row.try_get(3)?,
                    },
                    role: Role::parse(row.try_get(4)?)
                        .ok_or_else(|| PgError::Corrupt("memberships.role".into()))?,
                    created_at: row.try_get(5)?,
                };
                let actor_is_target = actor.id.as_deref() == Some(user.as_str());
                if !may_change(actor_role, actor_is_target, Some(current.role), to) {
                    return Ok(Err(MemberChangeError::Forbidden));
                }
                if current.role == Role::Owner && to != Some(Role::Owner) && owners <= 1 {
                    return Ok(Err(MemberChangeError::LastOwner));
                }
                match to {
                    Some(role) => {
                        tx.execute(
                            "UPDATE memberships SET role = $3 WHERE project_id = $1 AND user_id = $2",
                            &[&project.as_str(), &user.as_str(), &role.as_str()],
                        )
                        .await?
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM memberships WHERE project_id = $1 AND user_id = $2",
                            &[&project.as_str(), &user.as_str()],
                        )
                        .await?
                    }
                };
                let effects_of = member_change_effects(project.as_str(), &current, to, &actor);
                effects::write(&tx, &effects_of, now).await?;
                tx.commit().await?;
                Ok::<_, PgError>(Ok(to.map(|role| Member { role, ..current })))
            };
            Ok(run.await?)
        }
    }
}

mod session_repo {
    use async_trait::async_trait;

    use super::{billing, sessions, PgStore};
    use crate::store::audit::Actor;
    use crate::store::billing::BillingRepo;
    use crate::store::billing::StripeOutcome;
    use crate::store::sessions::SessionRepo;
    use crate::store::sessions::{
        CodeRequest, CodeRequestOutcome, LoginOutcome, LoginRequest, NewTokens, RefreshOutcome,
        SessionAuth, SessionLimits,
    };
    use crate::store::StoreResult;

    #[async_trait]
    impl SessionRepo for PgStore {
        async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome> {
            let mut client = self.client().await?;
            Ok(sessions::request_login_code(&mut client, &req, self.clock.now()).await?)
        }

        async fn login_with_code(&self, req: LoginRequest) -> StoreResult<LoginOutcome> {
            let mut client = self.client().await?;
            Ok(sessions::login_with_code(&mut client, &req, self.clock.now()).await?)
        }

        async fn refresh_session(
            &self,
            presented: [u8; 32],
            tokens: NewTokens,
            limits: SessionLimits,
            actor: Actor,
        ) -> StoreResult<RefreshOutcome> {
            let mut client = self.client().await?;
            Ok(sessions::refresh_session(
                &mut client,
                &presented,
                &tokens,
                &limits,
                actor,
                self.clock.now(),
            )
            .await?)
        }

        async fn revoke_by_refresh_token(
            &self,
            presented: [u8; 32],
        ) -> StoreResult<Option<String>> {
            let mut client = self.client().await?;
            Ok(
                sessions::revoke_by_refresh_token(&mut client, &presented, self.clock.now())
                    .await?,
            )
        }

        async fn revoke_session(
            &self,
            session_id: String,
            reason: &'static str,
            actor: Actor,
        ) -> StoreResult<()> {
            let mut client = self.client().await?;
            Ok(
                sessions::revoke_session(
                    &mut client,
                    &session_id,
                    reason,
                    &actor,
                    self.clock.now(),
                )
                .await?,
            )
        }

        async fn authenticate_access_token(
            &self,
            presented: [u8; 32],
            limits: SessionLimits,
        ) -> StoreResult<Option<SessionAuth>> {
            let client = self.client().await?;
            Ok(
                sessions::authenticate_access_token(&client, &presented, &limits, self.clock.now())
                    .await?,
            )
        }
    }

    #[async_trait]
    impl BillingRepo for PgStore {
        async fn apply_stripe_event(
            &self,
            event_id: String,
            event_type: String,
            action: crate::billing::Action,
        ) -> StoreResult<StripeOutcome> {
            let mut client = self.client().await?;
            Ok(billing::apply_stripe_event(
                &mut client,
                &event_id,
                &event_type,
                action,
                self.clock.now(),
            )
            .await?)
        }

        async fn link_stripe_customer(
            &self,
            project: crate::store::ProjectId,
            customer: String,
            force: bool,
            default_plan: String,
        ) -> StoreResult<crate::billing::link::LinkOutcome> {
            let request = crate::billing::link::LinkRequest::Manual {
                force,
                default_plan,
            };
            let mut client = self.client().await?;
            Ok(billing::link_stripe_customer(
                &mut client,
                project.as_str(),
                &customer,
                request,
                self.clock.now(),
            )
            .await?)
        }
    }
}

mod maintenance_repo {
    use async_trait::async_trait;

    use super::{PgError, PgStore};
    use crate::store::maintenance::{Maintenance, Retention};
    use crate::store::StoreResult;

    #[async_trait]
    impl Maintenance for PgStore {
        async fn ping(&self) -> StoreResult<()> {
            let client = self.client().await?;
            client
                .query_one("SELECT 1", &[])
                .await
                .map_err(PgError::from)?;
            Ok(())
        }

        async fn cleanup(&self, retention: Retention) -> StoreResult<usize> {
            let now = self.clock.now();
            let mut client = self.client().await?;
            let run = async {
                let tx = client.transaction().await?;
                let mut n = 0;
                n += tx
                    .execute("DELETE FROM login_codes WHERE expires_at <= $1", &[&now])
                    .await?;
                n += tx
                    .execute(
                        "DELETE FROM code_requests WHERE created_at < $1",
                        &[&(now - 86_400)],
                    )
                    .await?;
                n += tx
                    .execute(
                        "DELETE FROM throttles WHERE window_start < $1",
                        &[&(now - 86_400)],
                    )
                    .await?;
                n += tx
                    .execute(
                        "DELETE FROM quota_counters WHERE period_start < $1",
                        &[&(now - crate::store::maintenance::QUOTA_COUNTER_RETENTION_SECS)],
                    )
                    .await?;
                n += tx
                    .execute("DELETE FROM access_tokens WHERE expires_at <= $1", &[&now])
                    .await?;
                n += tx
                    .execute(
                        "DELETE FROM sessions WHERE expires_at <= $1 OR last_used_at < $2 OR revoked_at < $3",
                        &[&now, &(now - retention.session_idle_secs), &(now - 86_400)],
                    )
                    .await?;
                n += tx
                    .execute(
                        "DELETE FROM mail_outbox WHERE (transport = 'mailbox' AND created_at < $1)
                            OR (sent_at IS NOT NULL AND sent_at < $2) OR (failed_at IS NOT NULL AND failed_at < $2)",
                        &[&(now - 86_400), &(now - 7 * 86_400)],
                    )
                    .await?;
                tx.commit().await?;
                Ok::<u64, tokio_postgres::Error>(n)
            };
            let n = run.await.map_err(PgError::from)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        }

        async fn throttle_hit(
            &self,
            bucket: String,
            window_secs: i64,
            limit: i64,
            now: i64,
        ) -> StoreResult<Option<i64>> {
            use crate::store::maintenance::{throttle_verdict, throttle_window, THROTTLE_HIT};
            let start = throttle_window(now, window_secs);
            let client = self.client().await?;
            let row = client
                .query_one(THROTTLE_HIT, &[&bucket, &start, &window_secs])
                .await
                .map_err(PgError::from)?;
            let hits: i64 = row.try_get(0).map_err(PgError::from)?;
            let prev_hits: i64 = row.try_get(1).map_err(PgError::from)?;
            Ok(throttle_verdict(
                (hits, prev_hits),
                limit,
                start,
                window_secs,
                now,
            ))
        }
    }
}

mod spend_repo {
    use async_trait::async_trait;

    use super::{spend, PgStore};
    use crate::store::spend::{CreditSpend, QuotaSpend, SpendRepo};
    use crate::store::{KeyId, ProjectId, StoreResult};

    #[async_trait]
    impl SpendRepo for PgStore {
        async fn spend_credits(&self, key: KeyId, cost: i64, now: i64) -> StoreResult<CreditSpend> {
            let client = self.client().await?;
            Ok(spend::spend_credits(&client, key.as_str(), cost, now).await?)
        }

        async fn refund_credits(
            &self,
            key: KeyId,
            cost: i64,
            period_start: i64,
        ) -> StoreResult<()> {
            let client = self.client().await?;
            Ok(spend::refund_credits(&client, key.as_str(), cost, period_start).await?)
        }

        async fn spend_quota(
            &self,
            project: ProjectId,
            plan: String,
            limit: u64,
            now: i64,
        ) -> StoreResult<QuotaSpend> {
            let client = self.client().await?;
            Ok(spend::spend_quota(&client, project.as_str(), &plan, limit, now).await?)
        }
    }
}

impl crate::store::Clocked for PgStore {
    fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }
}
