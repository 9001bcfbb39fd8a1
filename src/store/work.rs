//! Webhook endpoints and deliveries, and the mail outbox, behind the
//! storage interface. Due work is claimed with a lease: the next attempt
//! moves to the end of the lease, so each item is worked on by one worker
//! (one node) at a time, and an item whose worker died is due again once
//! the lease runs out.

use async_trait::async_trait;

use super::{ProjectId, StoreResult};
use crate::db::mail::{MailboxMessage, PendingMail};
use crate::db::webhooks::{Attempt, AttemptOutcome, DeliveryView, DueDelivery, Endpoint};

#[async_trait]
pub trait WebhookRepo: Send + Sync {
    async fn create_webhook(
        &self,
        project: ProjectId,
        url: String,
        events: Vec<String>,
        secret: String,
        created_by: Option<String>,
    ) -> StoreResult<Endpoint>;
    async fn webhooks(&self, project: ProjectId) -> StoreResult<Vec<Endpoint>>;
    async fn webhook(&self, project: ProjectId, id: String) -> StoreResult<Option<Endpoint>>;
    /// Deletes an endpoint with its deliveries; `false` when there was none.
    async fn delete_webhook(&self, project: ProjectId, id: String) -> StoreResult<bool>;
    async fn send_test_event(&self, project: ProjectId, endpoint_id: String) -> StoreResult<()>;
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>>;
    async fn record_attempt(&self, attempt: Attempt, outcome: AttemptOutcome) -> StoreResult<()>;
    async fn deliveries(
        &self,
        endpoint_id: String,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<DeliveryView>, i64)>;
    async fn next_delivery_due(&self) -> StoreResult<Option<i64>>;
}

#[async_trait]
pub trait MailRepo: Send + Sync {
    /// The local mailbox, newest first.
    async fn mailbox(&self, limit: i64) -> StoreResult<Vec<MailboxMessage>>;
    async fn claim_due_mail(
        &self,
        now: i64,
        limit: i64,
        lease_secs: i64,
    ) -> StoreResult<Vec<PendingMail>>;
    async fn mail_sent(&self, id: i64, now: i64) -> StoreResult<()>;
    async fn mail_failed(
        &self,
        id: i64,
        error: String,
        next_attempt_at: i64,
        give_up: bool,
        now: i64,
    ) -> StoreResult<()>;
    async fn next_mail_due(&self) -> StoreResult<Option<i64>>;
}
