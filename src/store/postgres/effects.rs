//! What commits with a change in PostgreSQL: audit rows, webhook outbox
//! rows and queued mail, written inside the caller's transaction, so each
//! exists exactly when the change that caused it was committed.

use deadpool_postgres::GenericClient;

use super::PgError;
use crate::crypto::new_id;
use crate::store::audit::AuditEvent;
use crate::store::work::{Outgoing, Transport};
use crate::telemetry::traces::current_traceparent;

pub async fn record_audit(
    client: &impl GenericClient,
    event: &AuditEvent<'_>,
    now: i64,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO audit_events (project_id, action, actor_type, actor_id, target, ip, request_id, details, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &event.project_id,
                &event.action,
                &event.actor.kind.as_str(),
                &event.actor.id,
                &event.target,
                &event.actor.ip,
                &event.actor.request_id,
                &event.details.to_string(),
                &now,
            ],
        )
        .await?;
    Ok(())
}

/// Queues `event` for every active endpoint of the project that subscribes
/// to it. Returns the message id when any endpoint does.
pub async fn emit(
    client: &impl GenericClient,
    project_id: &str,
    event: &str,
    data: serde_json::Value,
    now: i64,
) -> Result<Option<String>, PgError> {
    let rows = client
        .query(
            "SELECT id, events FROM webhook_endpoints WHERE project_id = $1 AND is_active",
            &[&project_id],
        )
        .await?;
    let mut targets = Vec::new();
    for row in rows {
        let events: String = row.try_get(1)?;
        if serde_json::from_str::<Vec<String>>(&events).is_ok_and(|e| e.iter().any(|x| x == event))
        {
            targets.push(row.try_get::<_, String>(0)?);
        }
    }
    queue(client, project_id, event, data, &targets, now).await
}

/// Queues `event` for the given endpoints (none: nothing is written).
pub async fn queue(
    client: &impl GenericClient,
    project_id: &str,
    event: &str,
    data: serde_json::Value,
    targets: &[String],
    now: i64,
) -> Result<Option<String>, PgError> {
    if targets.is_empty() {
        return Ok(None);
    }
    let id = new_id("msg");
    let payload = serde_json::json!({
        "type": event,
        "timestamp": crate::types::rfc3339(now),
        "data": data,
    });
    client
        .execute(
            "INSERT INTO webhook_messages (id, project_id, type, payload, created_at, traceparent) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &project_id, &event, &payload.to_string(), &now, &current_traceparent()],
        )
        .await?;
    for endpoint in targets {
        client
            .execute(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at_ms, created_at, updated_at)
                 VALUES ($1, $2, 'pending', $3, $4, $4)",
                &[&id, endpoint, &now.saturating_mul(1000), &now],
            )
            .await?;
    }
    Ok(Some(id))
}

/// Queues a message on each of its transports (a mailbox copy counts as sent).
pub async fn enqueue_mail(
    client: &impl GenericClient,
    msg: &Outgoing,
    now: i64,
) -> Result<(), PgError> {
    for transport in &msg.transports {
        let (name, sent_at) = match transport {
            Transport::Mailbox => ("mailbox", Some(now)),
            Transport::Smtp => ("smtp", None),
        };
        client
            .execute(
                "INSERT INTO mail_outbox (transport, recipient, subject, body, created_at, expires_at, next_attempt_at, sent_at, traceparent)
                 VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8)",
                &[&name, &msg.to, &msg.subject, &msg.body, &now, &msg.expires_at, &sent_at, &current_traceparent()],
            )
            .await?;
    }
    Ok(())
}

/// Writes every effect of a change in the caller's transaction.
pub async fn write(
    client: &impl GenericClient,
    effects: &crate::store::effects::Effects,
    now: i64,
) -> Result<(), PgError> {
    for a in &effects.audit {
        record_audit(
            client,
            &AuditEvent {
                project_id: a.project_id.as_deref(),
                action: a.action,
                actor: &a.actor,
                target: a.target.as_deref(),
                details: a.details.clone(),
            },
            now,
        )
        .await?;
    }
    for w in &effects.webhooks {
        emit(client, &w.project_id, w.event, w.data.clone(), now).await?;
    }
    for m in &effects.mail {
        enqueue_mail(client, m, now).await?;
    }
    Ok(())
}
