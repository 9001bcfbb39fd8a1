//! Usage in PostgreSQL, written as increments: every node adds what it
//! counted since its last flush and never overwrites a total, and
//! `last_used_at` only moves forward, so the counts of all nodes add up.

use super::{PgError, PgStore};
use crate::store::audit::{AuditFilter, AUDIT_COLUMNS, AUDIT_PAGE_ROWS};
use crate::store::audit::{AuditRepo, StoredEvent};
use crate::store::usage::{UsageBatch, UsageCounts, UsageRepo};
use crate::store::{KeyId, ProjectId, StoreError, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use std::collections::HashMap;

/// Writes a usage batch in one transaction: counts are added to what is
/// stored, last use moves forward, balances are set.
///
/// Rows are locked in one order whatever the batch's own: key by key in
/// ascending id, for each its hourly rows (ascending hour) and then its
/// key row. Two nodes flushing usage of the same keys at once then wait
/// for each other instead of deadlocking (a batch is a `HashMap`, whose
/// order differs from one map to the next).
pub async fn write_usage(
    client: &mut deadpool_postgres::Client,
    batch: &UsageBatch,
) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO usage_hourly (key_id, project_id, hour, valid, invalid, rate_limited, refused)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key_id, hour) DO UPDATE SET
                valid = usage_hourly.valid + excluded.valid,
                invalid = usage_hourly.invalid + excluded.invalid,
                rate_limited = usage_hourly.rate_limited + excluded.rate_limited,
                refused = usage_hourly.refused + excluded.refused",
        )
        .await?;
    let used = tx
        .prepare_cached(
            "UPDATE api_keys SET last_used_at = GREATEST(coalesce(last_used_at, 0), $2) WHERE id = $1",
        )
        .await?;
    let credits = tx
        .prepare_cached(
            "UPDATE api_keys SET credits_remaining = $2, credits_period_start = $3
             WHERE id = $1 AND credits_remaining IS NOT NULL",
        )
        .await?;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for key_id in batch.key_ids_in_order() {
        if let Some(u) = batch.keys.get(key_id) {
            let mut hours: Vec<_> = u.hours.iter().collect();
            hours.sort_unstable_by_key(|(hour, _)| *hour);
            for (hour, c) in hours {
                tx.execute(
                    &upsert,
                    &[
                        &&**key_id,
                        &&*u.project_id,
                        hour,
                        &count(c[0]),
                        &count(c[1]),
                        &count(c[2]),
                        &count(c[3]),
                    ],
                )
                .await?;
            }
            if let Some(at) = u.last_used {
                tx.execute(&used, &[&&**key_id, &at]).await?;
            }
        }
        if let Some(b) = batch.credits.get(key_id) {
            tx.execute(&credits, &[&&**key_id, &b.remaining, &b.period_start])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Usage of a project's keys (or one key) between `from` and `to`, in
/// buckets of `bucket_secs` (3600 or 86400), zero-filled.
pub async fn usage_series(
    client: &impl GenericClient,
    project_id: &str,
    key_id: Option<&str>,
    from: i64,
    to: i64,
    bucket_secs: i64,
) -> Result<Vec<(i64, UsageCounts)>, PgError> {
    let first = from - from.rem_euclid(3600);
    let rows = client
        .query(
            "SELECT (hour / $4) * $4 AS bucket, sum(valid)::BIGINT, sum(invalid)::BIGINT,
                    sum(rate_limited)::BIGINT, sum(refused)::BIGINT
             FROM usage_hourly
             WHERE project_id = $1 AND hour >= $2 AND hour < $3 AND ($5::TEXT IS NULL OR key_id = $5)
             GROUP BY bucket ORDER BY bucket",
            &[&project_id, &first, &to, &bucket_secs, &key_id],
        )
        .await?;
    let count = |r: &tokio_postgres::Row, i: usize| -> Result<u64, PgError> {
        Ok(u64::try_from(r.try_get::<_, i64>(i)?).unwrap_or(0))
    };
    let mut found = HashMap::new();
    for r in &rows {
        found.insert(
            r.try_get::<_, i64>(0)?,
            UsageCounts {
                valid: count(r, 1)?,
                invalid: count(r, 2)?,
                rate_limited: count(r, 3)?,
                refused: count(r, 4)?,
            },
        );
    }
    let mut series = Vec::new();
    let mut t = from - from.rem_euclid(bucket_secs);
    while t < to {
        series.push((t, found.get(&t).copied().unwrap_or_default()));
        t += bucket_secs;
    }
    Ok(series)
}

/// Valid verifications of a project since `since` (the plan quota).
pub async fn project_verifications_since(
    client: &impl GenericClient,
    project_id: &str,
    since: i64,
) -> Result<u64, PgError> {
    let n: i64 = client
        .query_one(
            "SELECT coalesce(sum(valid), 0)::BIGINT FROM usage_hourly WHERE project_id = $1 AND hour >= $2",
            &[&project_id, &since],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// One page of a project's audit log, newest first: the project's own
/// events and the sign-ins of its current members.
pub async fn audit_page(
    client: &impl GenericClient,
    project_id: &str,
    f: &AuditFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<StoredEvent>, i64), PgError> {
    let total: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM audit_events WHERE {AUDIT_PAGE_ROWS}"),
            &[
                &project_id,
                &f.action,
                &f.actor_type,
                &f.actor_id,
                &f.target,
                &f.since,
                &f.until,
            ],
        )
        .await?
        .try_get(0)?;
    let rows = client
        .query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {AUDIT_PAGE_ROWS}
                 ORDER BY id DESC LIMIT $8 OFFSET $9"
            ),
            &[
                &project_id,
                &f.action,
                &f.actor_type,
                &f.actor_id,
                &f.target,
                &f.since,
                &f.until,
                &limit,
                &offset,
            ],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let details: String = r.try_get(8)?;
        events.push(StoredEvent {
            id: r.try_get(0)?,
            project_id: r.try_get(1)?,
            action: r.try_get(2)?,
            actor_type: r.try_get(3)?,
            actor_id: r.try_get(4)?,
            target: r.try_get(5)?,
            ip: r.try_get(6)?,
            request_id: r.try_get(7)?,
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            created_at: r.try_get(9)?,
        });
    }
    Ok((events, total))
}

#[async_trait]
impl UsageRepo for PgStore {
    async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)> {
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Err((e.into(), batch)),
        };
        match write_usage(&mut client, &batch).await {
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
        Ok(usage_series(
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
        Ok(project_verifications_since(&client, project.as_str(), since).await?)
    }
}

#[async_trait]
impl AuditRepo for PgStore {
    async fn audit_page(
        &self,
        project: ProjectId,
        filter: AuditFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)> {
        let client = self.client().await?;
        Ok(audit_page(&client, project.as_str(), &filter, offset, limit).await?)
    }
}
