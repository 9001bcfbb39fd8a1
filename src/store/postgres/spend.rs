//! Credits and quotas spent in PostgreSQL (see [`crate::store::spend`]).
//! Each spend is one conditional `UPDATE`: concurrent spends of one key
//! queue on its row lock and each re-checks the condition on the row it
//! finally sees, so the balance never goes below zero and no credit is
//! spent twice; a spend that waited on a rotation finds `rotated_to` set
//! and moves on to the successor, which holds the balance from then on.

use super::{PgError, PgStore};
use crate::store::credits::{Balance, Interval, Refill};
use crate::store::spend::{period_starts, settle, CreditSpend, QuotaSpend, SpendRepo};
use crate::store::{KeyId, ProjectId, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;

/// See `store::sqlite::spend`: the refill a spend applies first.
const REFILL_DUE: &str = "(credits_refill_amount IS NOT NULL AND credits_refill_interval IS NOT NULL
     AND coalesce(credits_period_start, 0) < (CASE credits_refill_interval WHEN 'daily' THEN $2::BIGINT ELSE $3::BIGINT END))";

fn spend_sql() -> String {
    format!(
        "UPDATE api_keys SET
            credits_remaining = (CASE WHEN {REFILL_DUE} THEN credits_refill_amount ELSE credits_remaining END) - $4::BIGINT,
            credits_period_start = CASE WHEN {REFILL_DUE}
                THEN (CASE credits_refill_interval WHEN 'daily' THEN $2::BIGINT ELSE $3::BIGINT END)
                ELSE coalesce(credits_period_start, 0) END
         WHERE id = $1 AND credits_remaining IS NOT NULL AND rotated_to IS NULL
           AND (CASE WHEN {REFILL_DUE} THEN credits_refill_amount ELSE credits_remaining END) >= $4::BIGINT
         RETURNING credits_remaining, credits_period_start"
    )
}

pub async fn spend_credits(
    client: &impl GenericClient,
    key_id: &str,
    cost: i64,
    now: i64,
) -> Result<CreditSpend, PgError> {
    let (day, month) = period_starts(now);
    let mut id = key_id.to_string();
    for _ in 0..4 {
        if cost > 0 {
            let statement = client.prepare_cached(&spend_sql()).await?;
            if let Some(row) = client
                .query_opt(&statement, &[&id, &day, &month, &cost])
                .await?
            {
                return Ok(CreditSpend::Spent {
                    remaining: row.try_get(0)?,
                    period_start: row.try_get(1)?,
                });
            }
        }
        let row = client
            .query_opt(
                "SELECT credits_remaining, credits_refill_amount, credits_refill_interval,
                        credits_period_start, rotated_to FROM api_keys WHERE id = $1",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(CreditSpend::Insufficient { remaining: 0 });
        };
        if let Some(successor) = row.try_get::<_, Option<String>>(4)? {
            id = successor;
            continue;
        }
        let Some(remaining) = row.try_get::<_, Option<i64>>(0)? else {
            return Ok(CreditSpend::Unlimited);
        };
        let amount: Option<i64> = row.try_get(1)?;
        let interval: Option<String> = row.try_get(2)?;
        let balance = Balance {
            remaining,
            refill: match (amount, interval.as_deref().and_then(Interval::parse)) {
                (Some(amount), Some(interval)) => Some(Refill { amount, interval }),
                _ => None,
            },
            period_start: row.try_get::<_, Option<i64>>(3)?.unwrap_or(0),
        };
        if let Some(settled) = settle(balance, cost, now) {
            return Ok(settled);
        }
    }
    Ok(CreditSpend::Insufficient { remaining: 0 })
}

pub async fn refund_credits(
    client: &impl GenericClient,
    key_id: &str,
    cost: i64,
    period_start: i64,
) -> Result<(), PgError> {
    client
        .execute(
            "UPDATE api_keys SET credits_remaining = credits_remaining + $2
             WHERE id = $1 AND credits_remaining IS NOT NULL
               AND coalesce(credits_period_start, 0) = $3",
            &[&key_id, &cost, &period_start],
        )
        .await?;
    Ok(())
}

pub async fn spend_quota(
    client: &impl GenericClient,
    project_id: &str,
    plan: &str,
    limit: u64,
    now: i64,
) -> Result<QuotaSpend, PgError> {
    let month = Interval::Monthly.period_start(now);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Counted unless the limit is reached or the project is no longer on
    // the plan the limit came from (one statement: the row lock of the
    // counter orders concurrent spends, the plan is read as of each).
    let increment = client
        .prepare_cached(
            "UPDATE quota_counters SET used = used + 1
             WHERE project_id = $1 AND period_start = $2 AND used < $3
               AND EXISTS (SELECT 1 FROM projects WHERE id = $1 AND plan = $4)",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&project_id, &month, &limit, &plan];
    if client.execute(&increment, &params).await? == 1 {
        return Ok(QuotaSpend::Spent);
    }
    let created = client
        .execute(
            "INSERT INTO quota_counters (project_id, period_start, used)
             SELECT $1, $2, coalesce(sum(valid), 0)::BIGINT FROM usage_hourly
             WHERE project_id = $1 AND hour >= $2
             ON CONFLICT (project_id, period_start) DO NOTHING",
            &[&project_id, &month],
        )
        .await?;
    if created == 1 && client.execute(&increment, &params).await? == 1 {
        return Ok(QuotaSpend::Spent);
    }
    let current: Option<String> = client
        .query_opt("SELECT plan FROM projects WHERE id = $1", &[&project_id])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    Ok(if current.as_deref() == Some(plan) {
        QuotaSpend::Exhausted
    } else {
        QuotaSpend::PlanChanged
    })
}

#[async_trait]
impl SpendRepo for PgStore {
    async fn spend_credits(&self, key: KeyId, cost: i64, now: i64) -> StoreResult<CreditSpend> {
        let client = self.client().await?;
        Ok(spend_credits(&client, key.as_str(), cost, now).await?)
    }

    async fn refund_credits(&self, key: KeyId, cost: i64, period_start: i64) -> StoreResult<()> {
        let client = self.client().await?;
        Ok(refund_credits(&client, key.as_str(), cost, period_start).await?)
    }

    async fn spend_quota(
        &self,
        project: ProjectId,
        plan: String,
        limit: u64,
        now: i64,
    ) -> StoreResult<QuotaSpend> {
        let client = self.client().await?;
        Ok(spend_quota(&client, project.as_str(), &plan, limit, now).await?)
    }
}
