//! The mail outbox: the local mailbox (`mailbox` rows) and the SMTP delivery
//! queue (`smtp` rows). Messages are queued inside the transaction of the
//! change that causes them, so none is lost or sent for a rolled-back change.

use crate::store::work::{MailboxMessage, Outgoing, PendingMail, Transport};
use rusqlite::{params, Connection};

use super::{Db, DbResult};

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

impl Db {
    /// The local mailbox, newest first.
    pub async fn mailbox(&self, limit: i64) -> DbResult<Vec<MailboxMessage>> {
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
    pub async fn mail_sent(&self, id: i64, now: i64) -> DbResult<()> {
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
    pub async fn mail_failed(
        &self,
        id: i64,
        error: String,
        next_attempt_at: i64,
        give_up: bool,
        now: i64,
    ) -> DbResult<()> {
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
    pub async fn next_mail_due(&self) -> DbResult<Option<i64>> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT min(next_attempt_at) FROM mail_outbox WHERE transport = 'smtp' AND sent_at IS NULL AND failed_at IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

impl Db {
    /// Claims SMTP messages due at `now` for `lease_secs`: their next
    /// attempt moves to the end of the lease, so no other worker takes them
    /// meanwhile, and a worker that dies mid-send leaves them due again
    /// once the lease runs out.
    pub async fn claim_due_mail(
        &self,
        now: i64,
        limit: i64,
        lease_secs: i64,
    ) -> DbResult<Vec<PendingMail>> {
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
