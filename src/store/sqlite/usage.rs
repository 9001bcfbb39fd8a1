//! Usage counts in SQLite: batches of hourly increments, and the series
//! and totals read back from them.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{params, TransactionBehavior};

use super::SqliteStore;
use crate::store::usage::{UsageBatch, UsageCounts, UsageRepo};
use crate::store::{KeyId, ProjectId, StoreError, StoreResult};

#[async_trait]
impl UsageRepo for SqliteStore {
    /// Writes a usage batch in one transaction.
    async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)> {
        let copy = batch.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO usage_hourly (key_id, project_id, hour, valid, invalid, rate_limited, refused)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (key_id, hour) DO UPDATE SET valid = valid + excluded.valid,
                        invalid = invalid + excluded.invalid, rate_limited = rate_limited + excluded.rate_limited,
                        refused = refused + excluded.refused",
                )?;
                let mut used = tx.prepare_cached(
                    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                )?;
                for (key_id, u) in &batch.keys {
                    for (hour, c) in &u.hours {
                        upsert.execute(params![&**key_id, &*u.project_id, hour, c[0] as i64, c[1] as i64, c[2] as i64, c[3] as i64])?;
                    }
                    if let Some(at) = u.last_used {
                        used.execute(params![&**key_id, at])?;
                    }
                }
                let mut credits = tx.prepare_cached(
                    "UPDATE api_keys SET credits_remaining = ?2, credits_period_start = ?3 WHERE id = ?1 AND credits_remaining IS NOT NULL",
                )?;
                for (key_id, b) in &batch.credits {
                    credits.execute(params![&**key_id, b.remaining, b.period_start])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| (e, copy))
    }

    /// Usage of a project's keys (or one key) between `from` and `to`, in
    /// buckets of `bucket_secs` (3600 or 86400), zero-filled.
    async fn usage_series(
        &self,
        project: ProjectId,
        key: Option<KeyId>,
        from: i64,
        to: i64,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, UsageCounts)>> {
        self.call(move |c| {
            let (project_id, key_id) = (project.as_str(), key.as_ref().map(|k| k.as_str()));
            let mut stmt = c.prepare(
                "SELECT (hour / ?4) * ?4 AS bucket, sum(valid), sum(invalid), sum(rate_limited), sum(refused)
                 FROM usage_hourly
                 WHERE project_id = ?1 AND hour >= ?2 AND hour < ?3 AND (?5 IS NULL OR key_id = ?5)
                 GROUP BY bucket ORDER BY bucket",
            )?;
            let first = from - from.rem_euclid(3600);
            let rows = stmt.query_map(params![project_id, first, to, bucket_secs, key_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    UsageCounts {
                        valid: r.get::<_, i64>(1)? as u64,
                        invalid: r.get::<_, i64>(2)? as u64,
                        rate_limited: r.get::<_, i64>(3)? as u64,
                        refused: r.get::<_, i64>(4)? as u64,
                    },
                ))
            })?;
            let found: HashMap<i64, UsageCounts> = rows.collect::<Result<_, _>>()?;
            let mut series = Vec::new();
            let mut t = from - from.rem_euclid(bucket_secs);
            while t < to {
                series.push((t, found.get(&t).copied().unwrap_or_default()));
                t += bucket_secs;
            }
            Ok(series)
        })
        .await
    }

    /// Valid verifications of a project since `since` (the plan quota).
    async fn project_verifications_since(
        &self,
        project: ProjectId,
        since: i64,
    ) -> StoreResult<u64> {
        self.call(move |c| {
            let project_id = project.as_str();
            let n: i64 = c.query_row(
                "SELECT coalesce(sum(valid), 0) FROM usage_hourly WHERE project_id = ?1 AND hour >= ?2",
                params![project_id, since],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }
}
