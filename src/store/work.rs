//! Webhook endpoints and deliveries, and the mail outbox, behind the
//! storage interface. Due work is claimed with a lease: the next attempt
//! moves to the end of the lease, so each item is worked on by one worker
//! (one node) at a time, and an item whose worker died is due again once
//! the lease runs out.

use async_trait::async_trait;

use super::{ProjectId, StoreResult};

/// Sent by "send test event"; delivered only to the endpoint asked for.
pub const TEST_EVENT: &str = "webhook.test";

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Mailbox,
    Smtp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mailbox => "mailbox",
            Transport::Smtp => "smtp",
        }
    }
}

/// A message and where it goes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub transports: Vec<Transport>,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// Not worth delivering after this (e.g. when the login code expires).
    pub expires_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxMessage {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct PendingMail {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub attempts: u32,
    pub expires_at: i64,
    /// The trace of the request that queued the mail, when traces are exported.
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub project_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
}

/// A delivery due for an attempt, with what is needed to make it.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub id: i64,
    pub message_id: String,
    pub payload: String,
    pub attempts: u32,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub endpoint_active: bool,
    /// The trace of the request that caused the event, when traces are exported.
    pub traceparent: Option<String>,
}

/// What happened to one attempt.
#[derive(Clone, Debug)]
pub enum AttemptOutcome {
    Delivered,
    /// Retry at this time (epoch milliseconds).
    Retry(i64),
    /// No more attempts.
    Failed,
    /// 410 Gone: the endpoint is disabled and nothing more is sent to it.
    Gone,
}

impl AttemptOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry(_) => "retry",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Gone => "gone",
        }
    }
}

/// One attempt as the worker made it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub delivery_id: i64,
    pub endpoint_id: String,
    /// 1 for the first try.
    pub number: u32,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Clone, Debug)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: i64,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct DeliveryView {
    pub id: i64,
    pub message_id: String,
    pub event_type: String,
    pub status: String,
    pub created_at: i64,
    pub next_attempt_at_ms: Option<i64>,
    pub attempts: Vec<AttemptView>,
}
