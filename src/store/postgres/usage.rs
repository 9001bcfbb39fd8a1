//! Usage in PostgreSQL, written as increments: every node adds what it
//! counted since its last flush and never overwrites a total, and
//! `last_used_at` only moves forward, so the counts of all nodes add up.

use deadpool_postgres::GenericClient;

use super::PgError;
use crate::db::keys::UsageBatch;

/// Adds a batch's counts and `last_used_at` values in the caller's
/// transaction. Credit balances are not written here: they are decided by
/// the node that spends them (see the cluster design), not summed.
pub async fn add_usage(client: &impl GenericClient, batch: &UsageBatch) -> Result<(), PgError> {
    let upsert = client
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
    let used = client
        .prepare_cached(
            "UPDATE api_keys SET last_used_at = GREATEST(coalesce(last_used_at, 0), $2) WHERE id = $1",
        )
        .await?;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (key_id, u) in &batch.keys {
        for (hour, c) in &u.hours {
            client
                .execute(
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
            client.execute(&used, &[&&**key_id, &at]).await?;
        }
    }
    Ok(())
}
