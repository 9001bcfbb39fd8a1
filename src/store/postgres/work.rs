//! Work shared by nodes in PostgreSQL: webhook endpoints and deliveries,
//! and the mail outbox. Due work is claimed with a lease (`FOR UPDATE SKIP
//! LOCKED`, then the next attempt moved to the end of the lease), so each
//! delivery or message is sent by one node at a time, and one that dies
//! mid-send leaves it due again once the lease runs out (with the same
//! `webhook-id`: the message id never changes).

use super::{effects, PgError, PgStore};
use crate::crypto::new_id;
use crate::store::work::{
    Attempt, AttemptOutcome, AttemptView, DeliveryView, DueDelivery, Endpoint, MailRepo,
    MailboxMessage, PendingMail, WebhookRepo,
};
use crate::store::{ProjectId, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

const ENDPOINT_COLUMNS: &str =
    "id, project_id, url, events, secret, is_active, disabled_reason, created_at";

fn endpoint_from(r: &Row) -> Result<Endpoint, PgError> {
    let events: String = r.try_get(3)?;
    Ok(Endpoint {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        url: r.try_get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.try_get(4)?,
        is_active: r.try_get(5)?,
        disabled_reason: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub async fn create_webhook(
    client: &impl GenericClient,
    project_id: &str,
    url: &str,
    events: &[String],
    secret: &str,
    created_by: Option<&str>,
    now: i64,
) -> Result<Endpoint, PgError> {
    let endpoint = Endpoint {
        id: new_id("whk"),
        project_id: project_id.into(),
        url: url.into(),
        events: events.to_vec(),
        secret: secret.into(),
        is_active: true,
        disabled_reason: None,
        created_at: now,
    };
    client
        .execute(
            "INSERT INTO webhook_endpoints (id, project_id, url, events, secret, is_active, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7)",
            &[
                &endpoint.id,
                &endpoint.project_id,
                &endpoint.url,
                &serde_json::to_string(&endpoint.events).expect("strings serialize"),
                &endpoint.secret,
                &now,
                &created_by,
            ],
        )
        .await?;
    Ok(endpoint)
}

pub async fn webhooks(
    client: &impl GenericClient,
    project_id: &str,
) -> Result<Vec<Endpoint>, PgError> {
    client
        .query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = $1 ORDER BY created_at, id"),
            &[&project_id],
        )
        .await?
        .iter()
        .map(endpoint_from)
        .collect()
}

pub async fn webhook(
    client: &impl GenericClient,
    project_id: &str,
    id: &str,
) -> Result<Option<Endpoint>, PgError> {
    client
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = $1 AND id = $2"),
            &[&project_id, &id],
        )
        .await?
        .as_ref()
        .map(endpoint_from)
        .transpose()
}

/// Deletes an endpoint with its deliveries.
pub async fn delete_webhook(
    client: &impl GenericClient,
    project_id: &str,
    id: &str,
) -> Result<bool, PgError> {
    Ok(client
        .execute(
            "DELETE FROM webhook_endpoints WHERE project_id = $1 AND id = $2",
            &[&project_id, &id],
        )
        .await?
        > 0)
}

/// Queues a test event for one endpoint.
pub async fn send_test_event(
    client: &mut deadpool_postgres::Client,
    project_id: &str,
    endpoint_id: &str,
    now: i64,
) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    effects::queue(
        &tx,
        project_id,
        crate::store::work::TEST_EVENT,
        serde_json::json!({ "endpoint_id": endpoint_id }),
        &[endpoint_id.to_string()],
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Claims deliveries due at `now_ms` for `lease_ms`.
pub async fn claim_due_deliveries(
    client: &mut deadpool_postgres::Client,
    now_ms: i64,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<DueDelivery>, PgError> {
    let tx = client.transaction().await?;
    let claimed: Vec<i64> = tx
        .query(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = $3
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at_ms <= $1
                 ORDER BY next_attempt_at_ms, id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[&now_ms, &limit, &now_ms.saturating_add(lease_ms)],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let rows = tx
        .query(
            "SELECT d.id, d.message_id, m.payload, d.attempts, e.id, e.url, e.secret, e.is_active, m.traceparent
             FROM webhook_deliveries d
             JOIN webhook_messages m ON m.id = d.message_id
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.id = ANY($1) ORDER BY d.id",
            &[&claimed],
        )
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(DueDelivery {
                id: r.try_get(0)?,
                message_id: r.try_get(1)?,
                payload: r.try_get(2)?,
                attempts: count(r.try_get(3)?),
                endpoint_id: r.try_get(4)?,
                url: r.try_get(5)?,
                secret: r.try_get(6)?,
                endpoint_active: r.try_get(7)?,
                traceparent: r.try_get(8)?,
            })
        })
        .collect()
}

/// Records an attempt and its consequence in one transaction.
pub async fn record_attempt(
    client: &mut deadpool_postgres::Client,
    attempt: &Attempt,
    outcome: &AttemptOutcome,
    now: i64,
) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, response_status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &attempt.delivery_id,
            &i64::from(attempt.number),
            &now,
            &attempt.response_status.map(i64::from),
            &attempt.error,
            &attempt.duration_ms,
        ],
    )
    .await?;
    let (status, next) = match outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::Retry(at) => ("pending", Some(*at)),
        AttemptOutcome::Failed | AttemptOutcome::Gone => ("failed", None),
    };
    tx.execute(
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at_ms = $4, updated_at = $5 WHERE id = $1",
        &[&attempt.delivery_id, &status, &i64::from(attempt.number), &next, &now],
    )
    .await?;
    if matches!(outcome, AttemptOutcome::Gone) {
        tx.execute(
            "UPDATE webhook_endpoints SET is_active = FALSE, disabled_reason = 'the endpoint answered 410 Gone' WHERE id = $1",
            &[&attempt.endpoint_id],
        )
        .await?;
        tx.execute(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at_ms = NULL, updated_at = $2
             WHERE endpoint_id = $1 AND status = 'pending'",
            &[&attempt.endpoint_id, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// An endpoint's deliveries with every attempt, newest first, and the total.
pub async fn deliveries(
    client: &impl GenericClient,
    endpoint_id: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<DeliveryView>, i64), PgError> {
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1",
            &[&endpoint_id],
        )
        .await?
        .try_get(0)?;
    let rows = client
        .query(
            "SELECT d.id, d.message_id, m.type, d.status, d.created_at, d.next_attempt_at_ms
             FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
             WHERE d.endpoint_id = $1 ORDER BY d.id DESC LIMIT $2 OFFSET $3",
            &[&endpoint_id, &limit, &offset],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get(0)?;
        let attempts = client
            .query(
                "SELECT attempt, at, response_status, error, duration_ms FROM webhook_attempts
                 WHERE delivery_id = $1 ORDER BY attempt",
                &[&id],
            )
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptView {
                    attempt: count(a.try_get(0)?),
                    at: a.try_get(1)?,
                    response_status: a
                        .try_get::<_, Option<i64>>(2)?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get(3)?,
                    duration_ms: a.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, PgError>>()?;
        out.push(DeliveryView {
            id,
            message_id: r.try_get(1)?,
            event_type: r.try_get(2)?,
            status: r.try_get(3)?,
            created_at: r.try_get(4)?,
            next_attempt_at_ms: r.try_get(5)?,
            attempts,
        });
    }
    Ok((out, total))
}

/// When the next pending delivery is due (epoch ms), if any.
pub async fn next_delivery_due(client: &impl GenericClient) -> Result<Option<i64>, PgError> {
    Ok(client
        .query_one(
            "SELECT min(next_attempt_at_ms) FROM webhook_deliveries WHERE status = 'pending'",
            &[],
        )
        .await?
        .try_get(0)?)
}

/// The local mailbox, newest first.
pub async fn mailbox(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<MailboxMessage>, PgError> {
    client
        .query(
            "SELECT id, recipient, subject, body, created_at FROM mail_outbox
             WHERE transport = 'mailbox' ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(MailboxMessage {
                id: r.try_get(0)?,
                to: r.try_get(1)?,
                subject: r.try_get(2)?,
                body: r.try_get(3)?,
                created_at: r.try_get(4)?,
            })
        })
        .collect()
}

/// Claims SMTP messages due at `now` for `lease_secs`.
pub async fn claim_due_mail(
    client: &impl GenericClient,
    now: i64,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<PendingMail>, PgError> {
    client
        .query(
            "UPDATE mail_outbox SET next_attempt_at = $3
             WHERE id IN (
                 SELECT id FROM mail_outbox
                 WHERE transport = 'smtp' AND sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, recipient, subject, body, attempts, expires_at, traceparent",
            &[&now, &limit, &now.saturating_add(lease_secs)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PendingMail {
                id: r.try_get(0)?,
                to: r.try_get(1)?,
                subject: r.try_get(2)?,
                body: r.try_get(3)?,
                attempts: count(r.try_get(4)?),
                expires_at: r.try_get(5)?,
                traceparent: r.try_get(6)?,
            })
        })
        .collect()
}

/// Delivered: the body (which may hold a login code) is erased.
pub async fn mail_sent(client: &impl GenericClient, id: i64, now: i64) -> Result<(), PgError> {
    client
        .execute(
            "UPDATE mail_outbox SET sent_at = $2, attempts = attempts + 1, body = '', last_error = NULL WHERE id = $1",
            &[&id, &now],
        )
        .await?;
    Ok(())
}

/// A failed attempt: retried at `next_attempt_at`, or given up (and its
/// body erased) when `give_up`.
pub async fn mail_failed(
    client: &impl GenericClient,
    id: i64,
    error: &str,
    next_attempt_at: i64,
    give_up: bool,
    now: i64,
) -> Result<(), PgError> {
    if give_up {
        client
            .execute(
                "UPDATE mail_outbox SET failed_at = $2, attempts = attempts + 1, body = '', last_error = $3 WHERE id = $1",
                &[&id, &now, &error],
            )
            .await?;
    } else {
        client
            .execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1",
                &[&id, &next_attempt_at, &error],
            )
            .await?;
    }
    Ok(())
}

/// The earliest time a pending SMTP message is due, if any.
pub async fn next_mail_due(client: &impl GenericClient) -> Result<Option<i64>, PgError> {
    Ok(client
        .query_one(
            "SELECT min(next_attempt_at) FROM mail_outbox WHERE transport = 'smtp' AND sent_at IS NULL AND failed_at IS NULL",
            &[],
        )
        .await?
        .try_get(0)?)
}

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
        Ok(create_webhook(
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
        Ok(webhooks(&client, project.as_str()).await?)
    }

    async fn webhook(&self, project: ProjectId, id: String) -> StoreResult<Option<Endpoint>> {
        let client = self.client().await?;
        Ok(webhook(&client, project.as_str(), &id).await?)
    }

    async fn delete_webhook(&self, project: ProjectId, id: String) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(delete_webhook(&client, project.as_str(), &id).await?)
    }

    async fn send_test_event(&self, project: ProjectId, endpoint_id: String) -> StoreResult<()> {
        let mut client = self.client().await?;
        Ok(send_test_event(
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
        Ok(claim_due_deliveries(&mut client, now_ms, limit, lease_ms).await?)
    }

    async fn record_attempt(&self, attempt: Attempt, outcome: AttemptOutcome) -> StoreResult<()> {
        let mut client = self.client().await?;
        Ok(record_attempt(&mut client, &attempt, &outcome, self.clock.now()).await?)
    }

    async fn deliveries(
        &self,
        endpoint_id: String,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<DeliveryView>, i64)> {
        let client = self.client().await?;
        Ok(deliveries(&client, &endpoint_id, offset, limit).await?)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        Ok(next_delivery_due(&client).await?)
    }
}

#[async_trait]
impl MailRepo for PgStore {
    async fn mailbox(&self, limit: i64) -> StoreResult<Vec<MailboxMessage>> {
        let client = self.client().await?;
        Ok(mailbox(&client, limit).await?)
    }

    async fn claim_due_mail(
        &self,
        now: i64,
        limit: i64,
        lease_secs: i64,
    ) -> StoreResult<Vec<PendingMail>> {
        let client = self.client().await?;
        Ok(claim_due_mail(&client, now, limit, lease_secs).await?)
    }

    async fn mail_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        let client = self.client().await?;
        Ok(mail_sent(&client, id, now).await?)
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
        Ok(mail_failed(&client, id, &error, next_attempt_at, give_up, now).await?)
    }

    async fn next_mail_due(&self) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        Ok(next_mail_due(&client).await?)
    }
}
