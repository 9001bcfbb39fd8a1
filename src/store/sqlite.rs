//! The SQLite backend behind the storage interface (today's `db::Db`).

use async_trait::async_trait;

use super::audit::Actor;
use super::audit::AuditRepo;
use super::billing::BillingRepo;
use super::directory::DirectoryRepo;
use super::effects::Effects;
use super::keys::{
    FeedEntry, FeedHorizon, FeedRead, ImportEffects, KeyChange, KeyRepo, LeakEffects,
    RotationEffects,
};
use super::keys::{KeyFilter, Rotated};
use super::maintenance::{Maintenance, Retention};
use super::sessions::SessionRepo;
use super::usage::UsageRepo;
use super::usage::{UsageBatch, UsageCounts};
use super::work::{MailRepo, WebhookRepo};
use super::UserId;
use super::{KeyHash, KeyId, ProjectId, StoreError, StoreResult};
use crate::db::Db;
use crate::keys::record::KeyRecord;
use crate::store::audit::StoredEvent;
use crate::store::billing::StripeOutcome;
use crate::store::directory::{BootstrapOutcome, Member, MemberChangeError, Membership, Project};
use crate::store::sessions::{
    CodeRequest, CodeRequestOutcome, LoginOutcome, LoginRequest, NewTokens, RefreshOutcome,
    SessionAuth, SessionLimits,
};
use crate::store::work::Outgoing;
use crate::store::work::{Attempt, AttemptOutcome, DeliveryView, DueDelivery, Endpoint};
use crate::store::work::{MailboxMessage, PendingMail};
use crate::types::{Email, Role};

#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    pub fn new(db: Db) -> Self {
        SqliteStore { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[async_trait]
impl KeyRepo for SqliteStore {
    async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.find_key_by_hash(hash.0).await?)
    }

    async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.find_key_by_id(id.as_arc().clone()).await?)
    }

    async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self
            .db
            .key_by_id(project.to_string(), id.to_string())
            .await?)
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<KeyRecord>, i64)> {
        Ok(self
            .db
            .keys_page(project.to_string(), filter, offset, limit)
            .await?)
    }

    async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.create_key(key, max_keys, effects).await?)
    }

    async fn update_key(
        &self,
        project: ProjectId,
        id: KeyId,
        change: KeyChange,
    ) -> StoreResult<Option<KeyRecord>> {
        Ok(self
            .db
            .update_key(project.to_string(), id.to_string(), change)
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
        Ok(self
            .db
            .rotate_key(
                project.to_string(),
                old.to_string(),
                new,
                old_expires_at,
                max_keys,
                effects,
            )
            .await?)
    }

    async fn revoke_leaked(
        &self,
        hash: KeyHash,
        effects: LeakEffects,
    ) -> StoreResult<Option<(KeyRecord, bool)>> {
        Ok(self.db.revoke_leaked(hash.0, effects).await?)
    }

    async fn import_keys(
        &self,
        keys: Vec<KeyRecord>,
        effects: ImportEffects,
    ) -> StoreResult<Result<usize, String>> {
        Ok(self.db.import_keys(keys, effects).await?)
    }

    async fn subscribe_key_changes(
        &self,
    ) -> StoreResult<Option<Box<dyn super::keys::KeyChangeSubscription>>> {
        Ok(None)
    }

    async fn count_active_keys(&self, project: ProjectId) -> StoreResult<i64> {
        Ok(self.db.count_active_keys(project.to_string()).await?)
    }

    async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>> {
        let db = self.db.clone();
        let hashes = tokio::task::spawn_blocking(move || db.imported_key_hashes())
            .await
            .map_err(|_| crate::db::DbError::TaskFailed)??;
        Ok(hashes.into_iter().map(KeyHash).collect())
    }

    async fn key_feed_horizon(&self) -> StoreResult<FeedHorizon> {
        Ok(FeedHorizon(self.db.key_feed_horizon().await?))
    }

    async fn prune_key_changes(&self, before: i64) -> StoreResult<usize> {
        Ok(self.db.prune_key_changes(before).await?)
    }

    async fn read_key_changes(&self, from: FeedHorizon) -> StoreResult<FeedRead> {
        let (rows, next) = self.db.read_key_changes(from.0).await?;
        Ok(FeedRead {
            entries: rows
                .into_iter()
                .map(|(id, hash)| FeedEntry {
                    id,
                    order: id,
                    key_hash: KeyHash(hash),
                })
                .collect(),
            next: FeedHorizon(next),
        })
    }
}

#[async_trait]
impl UsageRepo for SqliteStore {
    async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)> {
        self.db
            .write_usage(batch)
            .await
            .map_err(|(e, batch)| (StoreError::from(e), batch))
    }

    async fn usage_series(
        &self,
        project: ProjectId,
        key: Option<KeyId>,
        from: i64,
        to: i64,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, UsageCounts)>> {
        Ok(self
            .db
            .usage_series(
                project.to_string(),
                key.map(|k| k.to_string()),
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
        Ok(self
            .db
            .project_verifications_since(project.to_string(), since)
            .await?)
    }
}

#[async_trait]
impl AuditRepo for SqliteStore {
    async fn audit_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)> {
        Ok(self
            .db
            .audit_page(project.to_string(), offset, limit)
            .await?)
    }
}

#[async_trait]
impl WebhookRepo for SqliteStore {
    async fn create_webhook(
        &self,
        project: ProjectId,
        url: String,
        events: Vec<String>,
        secret: String,
        created_by: Option<String>,
    ) -> StoreResult<Endpoint> {
        Ok(self
            .db
            .create_webhook(project.to_string(), url, events, secret, created_by)
            .await?)
    }

    async fn webhooks(&self, project: ProjectId) -> StoreResult<Vec<Endpoint>> {
        Ok(self.db.webhooks(project.to_string()).await?)
    }

    async fn webhook(&self, project: ProjectId, id: String) -> StoreResult<Option<Endpoint>> {
        Ok(self.db.webhook(project.to_string(), id).await?)
    }

    async fn delete_webhook(&self, project: ProjectId, id: String) -> StoreResult<bool> {
        Ok(self.db.delete_webhook(project.to_string(), id).await?)
    }

    async fn send_test_event(&self, project: ProjectId, endpoint_id: String) -> StoreResult<()> {
        Ok(self
            .db
            .send_test_event(project.to_string(), endpoint_id)
            .await?)
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        Ok(self
            .db
            .claim_due_deliveries(now_ms, limit, lease_ms)
            .await?)
    }

    async fn record_attempt(&self, attempt: Attempt, outcome: AttemptOutcome) -> StoreResult<()> {
        Ok(self.db.record_attempt(attempt, outcome).await?)
    }

    async fn deliveries(
        &self,
        endpoint_id: String,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<DeliveryView>, i64)> {
        Ok(self.db.deliveries(endpoint_id, offset, limit).await?)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        Ok(self.db.next_delivery_due().await?)
    }
}

#[async_trait]
impl MailRepo for SqliteStore {
    async fn mailbox(&self, limit: i64) -> StoreResult<Vec<MailboxMessage>> {
        Ok(self.db.mailbox(limit).await?)
    }

    async fn claim_due_mail(
        &self,
        now: i64,
        limit: i64,
        lease_secs: i64,
    ) -> StoreResult<Vec<PendingMail>> {
        Ok(self.db.claim_due_mail(now, limit, lease_secs).await?)
    }

    async fn mail_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        Ok(self.db.mail_sent(id, now).await?)
    }

    async fn mail_failed(
        &self,
        id: i64,
        error: String,
        next_attempt_at: i64,
        give_up: bool,
        now: i64,
    ) -> StoreResult<()> {
        Ok(self
            .db
            .mail_failed(id, error, next_attempt_at, give_up, now)
            .await?)
    }

    async fn next_mail_due(&self) -> StoreResult<Option<i64>> {
        Ok(self.db.next_mail_due().await?)
    }
}

#[async_trait]
impl DirectoryRepo for SqliteStore {
    async fn project(
        &self,
        id: ProjectId,
    ) -> StoreResult<Option<crate::store::directory::Project>> {
        Ok(self.db.project(id.to_string()).await?)
    }

    async fn find_project(&self, id_or_name: String) -> StoreResult<Result<Project, String>> {
        Ok(self.db.find_project(id_or_name).await?)
    }

    async fn memberships(&self, user: UserId) -> StoreResult<Vec<Membership>> {
        Ok(self.db.memberships(user.to_string()).await?)
    }

    async fn project_role(
        &self,
        user: UserId,
        project: ProjectId,
    ) -> StoreResult<Option<Membership>> {
        Ok(self
            .db
            .project_role(user.to_string(), project.to_string())
            .await?)
    }

    async fn create_project(
        &self,
        owner: UserId,
        name: String,
        plan: String,
        actor: Actor,
    ) -> StoreResult<Project> {
        Ok(self
            .db
            .create_project(owner.to_string(), name, plan, actor)
            .await?)
    }

    async fn projects_page(
        &self,
        user: UserId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Membership>, i64)> {
        Ok(self
            .db
            .projects_page(user.to_string(), offset, limit)
            .await?)
    }

    async fn members_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Member>, i64)> {
        Ok(self
            .db
            .members_page(project.to_string(), offset, limit)
            .await?)
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
        Ok(self
            .db
            .add_member(project.to_string(), email, role, actor_role, actor, notify)
            .await?)
    }

    async fn bootstrap_user(
        &self,
        email: Email,
        project: Option<(String, Option<Role>)>,
        plan: String,
    ) -> StoreResult<Result<BootstrapOutcome, String>> {
        Ok(self.db.bootstrap_user(email, project, plan).await?)
    }

    async fn change_member(
        &self,
        project: ProjectId,
        user: crate::store::UserId,
        to: Option<crate::types::Role>,
        actor_role: crate::types::Role,
        actor: crate::store::audit::Actor,
    ) -> StoreResult<
        Result<Option<crate::store::directory::Member>, crate::store::directory::MemberChangeError>,
    > {
        Ok(self
            .db
            .change_member(project.to_string(), user.to_string(), to, actor_role, actor)
            .await?)
    }
}

#[async_trait]
impl SessionRepo for SqliteStore {
    async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome> {
        Ok(self.db.request_login_code(req).await?)
    }

    async fn login_with_code(&self, req: LoginRequest) -> StoreResult<LoginOutcome> {
        Ok(self.db.login_with_code(req).await?)
    }

    async fn refresh_session(
        &self,
        presented: [u8; 32],
        tokens: NewTokens,
        limits: SessionLimits,
        actor: Actor,
    ) -> StoreResult<RefreshOutcome> {
        Ok(self
            .db
            .refresh_session(presented, tokens, limits, actor)
            .await?)
    }

    async fn revoke_by_refresh_token(&self, presented: [u8; 32]) -> StoreResult<Option<String>> {
        Ok(self.db.revoke_by_refresh_token(presented).await?)
    }

    async fn revoke_session(
        &self,
        session_id: String,
        reason: &'static str,
        actor: Actor,
    ) -> StoreResult<()> {
        Ok(self.db.revoke_session(session_id, reason, actor).await?)
    }

    async fn authenticate_access_token(
        &self,
        presented: [u8; 32],
        limits: SessionLimits,
    ) -> StoreResult<Option<SessionAuth>> {
        Ok(self.db.authenticate_access_token(presented, limits).await?)
    }
}

#[async_trait]
impl BillingRepo for SqliteStore {
    async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: crate::billing::Action,
    ) -> StoreResult<StripeOutcome> {
        Ok(self
            .db
            .apply_stripe_event(event_id, event_type, action)
            .await?)
    }

    async fn link_stripe_customer(
        &self,
        project: ProjectId,
        customer: String,
        force: bool,
        default_plan: String,
    ) -> StoreResult<crate::billing::link::LinkOutcome> {
        let request = crate::billing::link::LinkRequest::Manual {
            force,
            default_plan,
        };
        Ok(self
            .db
            .link_stripe_customer(project.as_str().to_string(), customer, request)
            .await?)
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(self.db.ping().await?)
    }

    async fn cleanup(&self, retention: Retention) -> StoreResult<usize> {
        let limits = crate::store::sessions::SessionLimits {
            idle_secs: retention.session_idle_secs,
            max_secs: 0,
            reuse_grace_secs: 0,
        };
        Ok(self.db.cleanup(limits).await?)
    }

    async fn throttle_hit(
        &self,
        bucket: String,
        window_secs: i64,
        limit: i64,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        use super::maintenance::{throttle_verdict, throttle_window, THROTTLE_HIT};
        let start = throttle_window(now, window_secs);
        let (hits, prev_hits): (i64, i64) = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    &THROTTLE_HIT.replace('$', "?"),
                    rusqlite::params![bucket, start, window_secs],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await?;
        Ok(throttle_verdict(
            (hits, prev_hits),
            limit,
            start,
            window_secs,
            now,
        ))
    }
}

#[async_trait]
impl super::spend::SpendRepo for SqliteStore {
    async fn spend_credits(
        &self,
        key: KeyId,
        cost: i64,
        now: i64,
    ) -> StoreResult<super::spend::CreditSpend> {
        Ok(self.db.spend_credits(key.to_string(), cost, now).await?)
    }

    async fn refund_credits(&self, key: KeyId, cost: i64, period_start: i64) -> StoreResult<()> {
        Ok(self
            .db
            .refund_credits(key.to_string(), cost, period_start)
            .await?)
    }

    async fn spend_quota(
        &self,
        project: ProjectId,
        plan: String,
        limit: u64,
        now: i64,
    ) -> StoreResult<super::spend::QuotaSpend> {
        Ok(self
            .db
            .spend_quota(project.to_string(), plan, limit, now)
            .await?)
    }
}

impl super::Clocked for SqliteStore {
    fn clock(&self) -> &crate::clock::Clock {
        self.db.clock()
    }
}
