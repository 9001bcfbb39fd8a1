//! The webhook delivery worker: signs and posts due deliveries, records
//! every attempt, retries failures on `webhooks.retry_delays_secs` with
//! jitter, disables an endpoint that answers 410, never follows redirects.
//! Deliveries live in the database, so a restart resumes them.

use std::time::{Duration, Instant};

use std::sync::Arc;

use futures_util::future::join_all;

use opentelemetry::KeyValue;

use crate::config::WebhooksConfig;
use crate::drain::Drain;
use crate::store::work::{Attempt, AttemptOutcome, DueDelivery};
use crate::store::Store;
use crate::telemetry::traces::{self, Tracing};

/// What the delivery worker works with.
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub config: WebhooksConfig,
    /// Private and loopback targets allowed (local mode, or
    /// `webhooks.allow_private_targets`).
    pub allow_private: bool,
    pub traces: Option<Tracing>,
    /// Marks each batch in progress, so a graceful stop can finish it.
    pub work: Arc<Drain>,
}

fn build_client(timeout: Duration, allow_private: bool) -> awc::Client {
    let connector = awc::Connector::new()
        .connector(super::connect::GuardedConnector { allow_private })
        .timeout(timeout);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .timeout(timeout)
        .add_default_header((
            "user-agent",
            concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}

/// When to try again after attempt number `attempt` failed, or `None` when
/// the schedule is used up. Up to 10% jitter spreads retries out.
pub fn next_attempt(delays: &[u64], attempt: u32, now_ms: i64) -> Option<i64> {
    let delay_ms = *delays.get(attempt.checked_sub(1)? as usize)? as i64 * 1000;
    let jitter = (delay_ms as f64 * 0.1 * fastrand::f64()) as i64;
    Some(now_ms + delay_ms + jitter)
}

/// Runs until the server stops.
pub async fn run(worker: Worker) {
    let cfg = &worker.config;
    let allow_private = worker.allow_private;
    let client = build_client(Duration::from_secs(cfg.timeout_secs), allow_private);
    // Claimed with a lease longer than an attempt can take: one node makes
    // each attempt; if it dies mid-send, another retries after the lease
    // with the same webhook-id.
    let lease_ms = (cfg.timeout_secs as i64)
        .saturating_add(30)
        .saturating_mul(1000);
    loop {
        // A graceful stop waits for the batch to be sent and recorded.
        let Some(busy) = worker.work.begin() else {
            return;
        };
        match worker
            .store
            .claim_due_deliveries(worker.store.clock().now_ms(), 20, lease_ms)
            .await
        {
            Ok(batch) => {
                join_all(batch.into_iter().map(|d| deliver(&worker, &client, d))).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read webhook deliveries"),
        }
        drop(busy);
        let wait_ms = match worker.store.next_delivery_due().await {
            Ok(Some(due)) => (due - worker.store.clock().now_ms()).clamp(50, 1000),
            _ => 1000,
        };
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    }
}

async fn deliver(worker: &Worker, client: &awc::Client, d: DueDelivery) {
    let allow_private = worker.allow_private;
    let attempt = d.attempts + 1;
    let started = Instant::now();
    let trace = worker.traces.as_ref().map(|t| {
        t.start_queued_work(
            "webhook.deliver",
            d.traceparent.as_deref(),
            span_attributes(&d, attempt),
        )
    });
    let (status, error) = if !d.endpoint_active {
        (None, Some("the endpoint is disabled".to_string()))
    } else if let Err(why) = super::validate_url(&d.url, allow_private) {
        (None, Some(format!("target refused: {why}")))
    } else {
        let timestamp = worker.store.clock().now();
        match super::sign(&d.secret, &d.message_id, timestamp, &d.payload) {
            None => (None, Some("the signing secret is malformed".to_string())),
            Some(signature) => {
                let mut request = client
                    .post(&d.url)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("webhook-id", d.message_id.as_str()))
                    .insert_header(("webhook-timestamp", timestamp.to_string()))
                    .insert_header(("webhook-signature", signature));
                if let Some(tp) = trace.as_ref().and_then(traces::traceparent_of) {
                    request = request.insert_header(("traceparent", tp));
                }
                let sent = request.send_body(d.payload.clone()).await;
                match sent {
                    Ok(mut res) => {
                        // Read (and discard) a little of the answer so the connection can be reused.
                        let _ = res.body().limit(64 * 1024).await;
                        (Some(res.status().as_u16()), None)
                    }
                    Err(e) => (None, Some(e.to_string())),
                }
            }
        }
    };
    let outcome = match status {
        Some(s) if (200..300).contains(&s) => AttemptOutcome::Delivered,
        Some(410) => AttemptOutcome::Gone,
        _ if !d.endpoint_active => AttemptOutcome::Failed,
        _ => match next_attempt(
            &worker.config.retry_delays_secs,
            attempt,
            worker.store.clock().now_ms(),
        ) {
            Some(at) => AttemptOutcome::Retry(at),
            None => AttemptOutcome::Failed,
        },
    };
    tracing::info!(
        delivery = d.id,
        webhook_id = %d.message_id,
        endpoint = %d.endpoint_id,
        attempt,
        status = ?status,
        error = ?error,
        outcome = ?outcome,
        "webhook attempt"
    );
    if let Some(cx) = &trace {
        let mut attributes = vec![KeyValue::new("gatehouse.webhook.outcome", outcome.label())];
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        // The reason stays in the attempt record: it can quote the target URL.
        let failed = (!matches!(outcome, AttemptOutcome::Delivered)).then_some("not delivered");
        traces::finish(cx, attributes, failed);
    }
    let duration_ms = started.elapsed().as_millis() as i64;
    if let Err(e) = worker
        .store
        .record_attempt(
            Attempt {
                delivery_id: d.id,
                endpoint_id: d.endpoint_id,
                number: attempt,
                response_status: status,
                error,
                duration_ms,
            },
            outcome,
        )
        .await
    {
        tracing::warn!(error = %e, "webhook attempt could not be recorded");
    }
}

/// The delivery span's attributes: ids, attempt and the target's host,
/// never its URL (webhook URLs often carry a token in the path or query).
fn span_attributes(d: &DueDelivery, attempt: u32) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("gatehouse.webhook.id", d.message_id.clone()),
        KeyValue::new("gatehouse.webhook.endpoint_id", d.endpoint_id.clone()),
        KeyValue::new("gatehouse.webhook.attempt", i64::from(attempt)),
        KeyValue::new("http.request.method", "POST"),
    ];
    if let Ok(url) = url::Url::parse(&d.url) {
        if let Some(host) = url.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter() {
        let delays = [5, 300];
        let a = next_attempt(&delays, 1, 1_000_000).unwrap();
        assert!((1_005_000..=1_005_500).contains(&a), "{a}");
        let b = next_attempt(&delays, 2, 1_000_000).unwrap();
        assert!((1_300_000..=1_330_000).contains(&b), "{b}");
        assert_eq!(next_attempt(&delays, 3, 1_000_000), None);
        assert_eq!(next_attempt(&delays, 0, 1_000_000), None);
    }
}
