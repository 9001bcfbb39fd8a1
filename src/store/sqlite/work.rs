//! Work in SQLite: webhook endpoints, the event outbox, deliveries and
//! their attempts; the mail outbox (the local mailbox and the SMTP queue).
//! Messages and events are queued inside the transaction of the change
//! that causes them, so none is lost or sent for a rolled-back change.

use crate::store::work::{
    Attempt, AttemptOutcome, AttemptView, DeliveryView, DueDelivery, Endpoint, MailRepo,
    MailboxMessage, Outgoing, PendingMail, Transport, WebhookRepo,
};
use crate::store::{ProjectId, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{DbResult, SqliteStore};
use crate::crypto::new_id;

const ENDPOINT_COLUMNS: &str =
    "id, project_id, url, events, secret, is_active, disabled_reason, created_at";

fn endpoint_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Endpoint> {
    let events: String = r.get(3)?;
    Ok(Endpoint {
        id: r.get(0)?,
        project_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.get(4)?,
        is_active: r.get(5)?,
        disabled_reason: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// Queues `event` for every active endpoint of the project that subscribes
/// to it, inside the caller's transaction: the event exists exactly when
/// the change that caused it was committed.
pub(crate) fn emit(
    conn: &Connection,
    project_id: &str,
    event: &str,
    data: serde_json::Value,
    now: i64,
) -> DbResult<()> {
    let endpoints: Vec<(String, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, events FROM webhook_endpoints WHERE project_id = ?1 AND is_active = 1",
        )?;
        let rows = stmt.query_map([project_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let targets: Vec<String> = endpoints
        .into_iter()
        .filter(|(_, events)| {
            serde_json::from_str::<Vec<String>>(events).is_ok_and(|e| e.iter().any(|x| x == event))
        })
        .map(|(id, _)| id)
        .collect();
    queue(conn, project_id, event, data, &targets, now)
}

fn queue(
    conn: &Connection,
    project_id: &str,
    event: &str,
    data: serde_json::Value,
    targets: &[String],
    now: i64,
) -> DbResult<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let id = new_id("msg");
    let payload = serde_json::json!({
        "type": event,
        "timestamp": crate::types::rfc3339(now),
        "data": data,
    });
    conn.execute(
        "INSERT INTO webhook_messages (id, project_id, type, payload, created_at, traceparent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, project_id, event, payload.to_string(), now, crate::telemetry::traces::current_traceparent()],
    )?;
    for endpoint in targets {
        conn.execute(
            "INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at_ms, created_at, updated_at)
             VALUES (?1, ?2, 'pending', ?3, ?4, ?4)",
            params![id, endpoint, now * 1000, now],
        )?;
    }
    Ok(())
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
        let project_id = project.to_string();
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let endpoint = Endpoint {
                id: new_id("whk"),
                project_id,
                url,
                events,
                secret,
                is_active: true,
                disabled_reason: None,
                created_at: now,
            };
            c.execute(
                "INSERT INTO webhook_endpoints (id, project_id, url, events, secret, is_active, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7)",
                params![
                    endpoint.id,
                    endpoint.project_id,
                    endpoint.url,
                    serde_json::to_string(&endpoint.events).expect("strings"),
                    endpoint.secret,
                    now,
                    created_by
                ],
            )?;
            Ok(endpoint)
        })
        .await
    }

    async fn webhooks(&self, project: ProjectId) -> StoreResult<Vec<Endpoint>> {
        let project_id = project.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = ?1 ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([project_id], endpoint_from)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn webhook(&self, project: ProjectId, id: String) -> StoreResult<Option<Endpoint>> {
        let project_id = project.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project_id = ?1 AND id = ?2"),
                params![project_id, id],
                endpoint_from,
            )
            .optional()?)
        })
        .await
    }

    /// Deletes an endpoint with its pending deliveries.
    async fn delete_webhook(&self, project: ProjectId, id: String) -> StoreResult<bool> {
        let project_id = project.to_string();
        self.call(move |c| {
            Ok(c.execute(
                "DELETE FROM webhook_endpoints WHERE project_id = ?1 AND id = ?2",
                params![project_id, id],
            )? > 0)
        })
        .await
    }

    /// Queues a test event for one endpoint.
    async fn send_test_event(&self, project: ProjectId, endpoint_id: String) -> StoreResult<()> {
        let project_id = project.to_string();
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            queue(
                &tx,
                &project_id,
                crate::store::work::TEST_EVENT,
                serde_json::json!({ "endpoint_id": endpoint_id }),
                std::slice::from_ref(&endpoint_id),
                now,
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records an attempt and its consequence in one transaction.
    async fn record_attempt(&self, attempt: Attempt, outcome: AttemptOutcome) -> StoreResult<()> {
        let Attempt {
            delivery_id,
            endpoint_id,
            number: attempt,
            response_status,
            error,
            duration_ms,
        } = attempt;
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, response_status, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![delivery_id, attempt, now, response_status, error, duration_ms],
            )?;
            let (status, next) = match outcome {
                AttemptOutcome::Delivered => ("delivered", None),
                AttemptOutcome::Retry(at) => ("pending", Some(at)),
                AttemptOutcome::Failed | AttemptOutcome::Gone => ("failed", None),
            };
            tx.execute(
                "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_at_ms = ?4, updated_at = ?5 WHERE id = ?1",
                params![delivery_id, status, attempt, next, now],
            )?;
            if matches!(outcome, AttemptOutcome::Gone) {
                tx.execute(
                    "UPDATE webhook_endpoints SET is_active = 0, disabled_reason = 'the endpoint answered 410 Gone' WHERE id = ?1",
                    [&endpoint_id],
                )?;
                tx.execute(
                    "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at_ms = NULL, updated_at = ?2
                     WHERE endpoint_id = ?1 AND status = 'pending'",
                    params![endpoint_id, now],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// An endpoint's deliveries with every attempt, newest first.
    async fn deliveries(
        &self,
        endpoint_id: String,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<DeliveryView>, i64)> {
        self.call(move |c| {
            let total: i64 = c.query_row("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ?1", [&endpoint_id], |r| r.get(0))?;
            let mut stmt = c.prepare(
                "SELECT d.id, d.message_id, m.type, d.status, d.created_at, d.next_attempt_at_ms
                 FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
                 WHERE d.endpoint_id = ?1 ORDER BY d.id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let mut out: Vec<DeliveryView> = stmt
                .query_map(params![endpoint_id, limit, offset], |r| {
                    Ok(DeliveryView {
                        id: r.get(0)?,
                        message_id: r.get(1)?,
                        event_type: r.get(2)?,
                        status: r.get(3)?,
                        created_at: r.get(4)?,
                        next_attempt_at_ms: r.get(5)?,
                        attempts: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut attempts = c.prepare(
                "SELECT attempt, at, response_status, error, duration_ms FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt",
            )?;
            for d in out.iter_mut() {
                d.attempts = attempts
                    .query_map([d.id], |r| {
                        Ok(AttemptView {
                            attempt: r.get(0)?,
                            at: r.get(1)?,
                            response_status: r.get(2)?,
                            error: r.get(3)?,
                            duration_ms: r.get(4)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
            }
            Ok((out, total))
        })
        .await
    }

    /// When the next pending delivery is due (epoch ms), if any.
    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT min(next_attempt_at_ms) FROM webhook_deliveries WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Claims deliveries due at `now_ms` for `lease_ms` (see
    /// [`Db::claim_due_mail`]): the next attempt moves to the end of the
    /// lease until the attempt is recorded.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due: Vec<DueDelivery> = {
                let mut stmt = tx.prepare(
                    "SELECT d.id, d.message_id, m.payload, d.attempts, e.id, e.url, e.secret, e.is_active, m.traceparent
                     FROM webhook_deliveries d
                     JOIN webhook_messages m ON m.id = d.message_id
                     JOIN webhook_endpoints e ON e.id = d.endpoint_id
                     WHERE d.status = 'pending' AND d.next_attempt_at_ms <= ?1
                     ORDER BY d.next_attempt_at_ms, d.id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now_ms, limit], due_delivery_from)?;
                rows.collect::<Result<_, _>>()?
            };
            for d in &due {
                tx.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at_ms = ?2 WHERE id = ?1",
                    params![d.id, now_ms.saturating_add(lease_ms)],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }
}

fn due_delivery_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<DueDelivery> {
    Ok(DueDelivery {
        id: r.get(0)?,
        message_id: r.get(1)?,
        payload: r.get(2)?,
        attempts: r.get(3)?,
        endpoint_id: r.get(4)?,
        url: r.get(5)?,
        secret: r.get(6)?,
        endpoint_active: r.get(7)?,
        traceparent: r.get(8)?,
    })
}

pub(crate) fn enqueue(conn: &Connection, msg: &Outgoing, now: i64) -> DbResult<()> {
    for transport in &msg.transports {
        let sent_at = (*transport == Transport::Mailbox).then_some(now);
        conn.execute(
            "INSERT INTO mail_outbox (transport, recipient, subject, body, created_at, expires_at, next_attempt_at, sent_at, traceparent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?7, ?8)",
            params![transport.as_str(), msg.to, msg.subject, msg.body, now, msg.expires_at, sent_at, crate::telemetry::traces::current_traceparent()],
        )?;
    }
    Ok(())
}

#[async_trait]
impl MailRepo for SqliteStore {
    /// The local mailbox, newest first.
    async fn mailbox(&self, limit: i64) -> StoreResult<Vec<MailboxMessage>> {
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, recipient, subject, body, created_at FROM mail_outbox
                 WHERE transport = 'mailbox' ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok(MailboxMessage {
                    id: r.get(0)?,
                    to: r.get(1)?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Delivered: the body (which may hold a login code) is erased.
    async fn mail_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE mail_outbox SET sent_at = ?2, attempts = attempts + 1, body = '', last_error = NULL WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    /// A failed attempt: retried at `next_attempt_at`, or given up (and its
    /// body erased) when `give_up`.
    async fn mail_failed(
        &self,
        id: i64,
        error: String,
        next_attempt_at: i64,
        give_up: bool,
        now: i64,
    ) -> StoreResult<()> {
        self.call(move |c| {
            if give_up {
                c.execute(
                    "UPDATE mail_outbox SET failed_at = ?2, attempts = attempts + 1, body = '', last_error = ?3 WHERE id = ?1",
                    params![id, now, error],
                )?;
            } else {
                c.execute(
                    "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, next_attempt_at, error],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The earliest time a pending SMTP message is due, if any.
    async fn next_mail_due(&self) -> StoreResult<Option<i64>> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT min(next_attempt_at) FROM mail_outbox WHERE transport = 'smtp' AND sent_at IS NULL AND failed_at IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Claims SMTP messages due at `now` for `lease_secs`: their next
    /// attempt moves to the end of the lease, so no other worker takes them
    /// meanwhile, and a worker that dies mid-send leaves them due again
    /// once the lease runs out.
    async fn claim_due_mail(
        &self,
        now: i64,
        limit: i64,
        lease_secs: i64,
    ) -> StoreResult<Vec<PendingMail>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let due: Vec<PendingMail> = {
                let mut stmt = tx.prepare(
                    "SELECT id, recipient, subject, body, attempts, expires_at, traceparent FROM mail_outbox
                     WHERE transport = 'smtp' AND sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at, id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now, limit], |r| {
                    Ok(PendingMail {
                        id: r.get(0)?,
                        to: r.get(1)?,
                        subject: r.get(2)?,
                        body: r.get(3)?,
                        attempts: r.get(4)?,
                        expires_at: r.get(5)?,
                        traceparent: r.get(6)?,
                    })
                })?;
                rows.collect::<Result<_, _>>()?
            };
            for m in &due {
                tx.execute(
                    "UPDATE mail_outbox SET next_attempt_at = ?2 WHERE id = ?1",
                    params![m.id, now.saturating_add(lease_secs)],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }
}
