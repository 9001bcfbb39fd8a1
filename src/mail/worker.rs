//! The SMTP delivery worker: sends due outbox messages with lettre, retries
//! failures with exponential backoff, gives up only when a message is no
//! longer useful. Messages live in the database, so a restart loses none.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};
use crate::drain::Drain;
use crate::store::work::PendingMail;
use crate::store::Store;
use crate::telemetry::traces::{self, Tracing};
use opentelemetry::KeyValue;

/// The delay before attempt `attempts + 1`: base * 2^attempts, capped.
pub fn backoff(cfg: &SmtpConfig, attempts: u32) -> u64 {
    let factor = 1u64.checked_shl(attempts.min(30)).unwrap_or(u64::MAX);
    cfg.retry_base_secs
        .saturating_mul(factor)
        .min(cfg.retry_max_secs)
}

fn build_transport(cfg: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = cfg.host.as_deref().unwrap_or_default().trim();
    let builder = match cfg.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
        }
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
        }
    };
    let mut builder = builder
        .port(cfg.port)
        .timeout(Some(Duration::from_secs(cfg.timeout_secs)));
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    Ok(builder.build())
}

fn build_message(
    from: &str,
    mail: &PendingMail,
    message_id_domain: &str,
    look: &super::compose::Look,
) -> Result<Message, String> {
    let html = look.html(&mail.subject, &mail.body);
    let content = super::compose::Content {
        subject: &mail.subject,
        text: &mail.body,
        html: Some(&html),
    };
    super::compose::compose(
        from,
        &mail.to,
        &content,
        super::compose::message_id(message_id_domain),
    )
}

/// How long a claimed message is kept from other workers: well past the
/// SMTP client's own timeouts.
const MAIL_LEASE_SECS: i64 = 120;

/// What the delivery worker works with.
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub smtp: SmtpConfig,
    /// The right-hand side of every Message-ID ([`super::compose::message_id_domain`]).
    pub message_id_domain: String,
    /// The brand of the HTML part (`[ui]`).
    pub look: super::compose::Look,
    /// Notified when a message is queued ([`super::Mailer::wake_handle`]).
    pub wake: Arc<tokio::sync::Notify>,
    pub traces: Option<Tracing>,
    /// Marks each batch in progress, so a graceful stop can finish it.
    pub work: Arc<Drain>,
}

/// Runs until the server stops.
pub async fn run(worker: Worker) {
    let cfg = &worker.smtp;
    if cfg.host.as_deref().is_none_or(|h| h.trim().is_empty()) {
        return;
    }
    let transport = match build_transport(cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "SMTP is misconfigured; mail stays queued");
            return;
        }
    };
    loop {
        // A graceful stop waits for the batch to be sent and recorded.
        let Some(busy) = worker.work.begin() else {
            return;
        };
        let now = worker.store.clock().now();
        // Claimed with a lease: one node sends each message; if this one dies
        // mid-send, the message is due again when the lease runs out.
        match worker.store.claim_due_mail(now, 20, MAIL_LEASE_SECS).await {
            Ok(batch) => {
                for mail in batch {
                    deliver(&worker, &transport, mail).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the mail outbox"),
        }
        drop(busy);
        let now = worker.store.clock().now();
        let wait = match worker.store.next_mail_due().await {
            Ok(Some(due)) => (due - now).clamp(0, 30) as u64,
            _ => 30,
        };
        if wait > 0 {
            tokio::select! {
                _ = worker.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            }
        }
    }
}

async fn deliver(
    worker: &Worker,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    mail: PendingMail,
) {
    let (store, cfg) = (&worker.store, &worker.smtp);
    let now = worker.store.clock().now();
    if now >= mail.expires_at {
        tracing::warn!(id = mail.id, to = %mail.to, "mail expired before it could be delivered");
        let _ = store
            .mail_failed(mail.id, "expired before delivery".into(), now, true, now)
            .await;
        return;
    }
    // A child of the request that queued the mail; the recipient is left out.
    let trace = worker.traces.as_ref().map(|t| {
        t.start_queued_work(
            "smtp.send",
            mail.traceparent.as_deref(),
            vec![
                KeyValue::new("gatehouse.mail.id", mail.id),
                KeyValue::new("gatehouse.mail.attempt", i64::from(mail.attempts + 1)),
                KeyValue::new("server.address", cfg.host.clone().unwrap_or_default()),
                KeyValue::new("server.port", i64::from(cfg.port)),
            ],
        )
    });
    let result = match build_message(&cfg.from, &mail, &worker.message_id_domain, &worker.look) {
        Ok(message) => transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => {
            tracing::error!(id = mail.id, error = %e, "mail cannot be built; giving up");
            let _ = store.mail_failed(mail.id, e, now, true, now).await;
            return;
        }
    };
    if let Some(cx) = &trace {
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        traces::finish(
            cx,
            vec![KeyValue::new("gatehouse.mail.outcome", outcome)],
            result.is_err().then_some("not sent"),
        );
    }
    match result {
        Ok(()) => {
            tracing::info!(id = mail.id, to = %mail.to, subject = %mail.subject, "mail delivered");
            if let Err(e) = store.mail_sent(mail.id, store.clock().now()).await {
                tracing::warn!(id = mail.id, error = %e, "delivered mail could not be marked sent");
            }
        }
        Err(error) => {
            let delay = backoff(cfg, mail.attempts) as i64;
            let next = now + delay;
            let give_up = next >= mail.expires_at;
            tracing::warn!(id = mail.id, to = %mail.to, attempt = mail.attempts + 1, retry_in_secs = delay, give_up, error = %error, "mail delivery failed");
            let _ = store.mail_failed(mail.id, error, next, give_up, now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = SmtpConfig {
            retry_base_secs: 5,
            retry_max_secs: 900,
            ..Default::default()
        };
        let delays: Vec<u64> = (0..10).map(|a| backoff(&cfg, a)).collect();
        assert_eq!(delays[..5], [5, 10, 20, 40, 80]);
        assert_eq!(delays[9], 900);
        assert_eq!(backoff(&cfg, 200), 900);
    }
}
