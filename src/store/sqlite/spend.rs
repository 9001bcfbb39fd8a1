//! Credits and quotas spent in SQLite (see [`crate::store::spend`]). Every
//! spend is one statement, so it is atomic even when several processes
//! share the database file.

use crate::store::spend::SpendRepo;
use crate::store::{KeyId, ProjectId, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{DbResult, SqliteStore};
use crate::store::credits::{Balance, Interval, Refill};
use crate::store::spend::{period_starts, settle, CreditSpend, QuotaSpend};

/// One verification counted against a month's quota, unless the limit is
/// reached or the project is no longer on the plan the limit came from.
const QUOTA_INCREMENT: &str = "UPDATE quota_counters SET used = used + 1
     WHERE project_id = ?1 AND period_start = ?2 AND used < ?3
       AND EXISTS (SELECT 1 FROM projects WHERE id = ?1 AND plan = ?4)";

/// The refill a spend applies: when the key refills and a new interval has
/// begun, the balance restarts from the refill amount (as
/// [`Balance::refill`] decides).
const REFILL_DUE: &str = "(credits_refill_amount IS NOT NULL AND credits_refill_interval IS NOT NULL
     AND coalesce(credits_period_start, 0) < (CASE credits_refill_interval WHEN 'daily' THEN ?2 ELSE ?3 END))";

fn spend_sql() -> String {
    format!(
        "UPDATE api_keys SET
            credits_remaining = (CASE WHEN {REFILL_DUE} THEN credits_refill_amount ELSE credits_remaining END) - ?4,
            credits_period_start = CASE WHEN {REFILL_DUE}
                THEN (CASE credits_refill_interval WHEN 'daily' THEN ?2 ELSE ?3 END)
                ELSE coalesce(credits_period_start, 0) END
         WHERE id = ?1 AND credits_remaining IS NOT NULL AND rotated_to IS NULL
           AND (CASE WHEN {REFILL_DUE} THEN credits_refill_amount ELSE credits_remaining END) >= ?4
         RETURNING credits_remaining, credits_period_start"
    )
}

/// A balance as stored, and the key it moved to (if rotated).
type StoredBalance = (Option<Balance>, Option<String>);

fn stored_balance(c: &rusqlite::Connection, id: &str) -> DbResult<Option<StoredBalance>> {
    Ok(c.query_row(
        "SELECT credits_remaining, credits_refill_amount, credits_refill_interval,
                credits_period_start, rotated_to FROM api_keys WHERE id = ?1",
        params![id],
        |r| {
            let remaining: Option<i64> = r.get(0)?;
            let amount: Option<i64> = r.get(1)?;
            let interval: Option<String> = r.get(2)?;
            let refill = match (amount, interval.as_deref().and_then(Interval::parse)) {
                (Some(amount), Some(interval)) => Some(Refill { amount, interval }),
                _ => None,
            };
            let balance = remaining.map(|remaining| Balance {
                remaining,
                refill,
                period_start: r.get::<_, Option<i64>>(3).ok().flatten().unwrap_or(0),
            });
            Ok((balance, r.get(4)?))
        },
    )
    .optional()?)
}

#[async_trait]
impl SpendRepo for SqliteStore {
    async fn spend_credits(&self, key: KeyId, cost: i64, now: i64) -> StoreResult<CreditSpend> {
        let key_id = key.to_string();
        self.call(move |c| {
            let (day, month) = period_starts(now);
            let mut id = key_id;
            // A few hops along a rotation line, and a retry when an edit
            // raised the balance between the two statements.
            for _ in 0..4 {
                if cost > 0 {
                    let spent = c
                        .prepare_cached(&spend_sql())?
                        .query_row(params![id, day, month, cost], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                        .optional()?;
                    if let Some((remaining, period_start)) = spent {
                        return Ok(CreditSpend::Spent {
                            remaining,
                            period_start,
                        });
                    }
                }
                match stored_balance(c, &id)? {
                    None => return Ok(CreditSpend::Insufficient { remaining: 0 }),
                    Some((_, Some(successor))) => id = successor,
                    Some((None, None)) => return Ok(CreditSpend::Unlimited),
                    Some((Some(balance), None)) => {
                        if let Some(settled) = settle(balance, cost, now) {
                            return Ok(settled);
                        }
                    }
                }
            }
            Ok(CreditSpend::Insufficient { remaining: 0 })
        })
        .await
    }

    async fn refund_credits(&self, key: KeyId, cost: i64, period_start: i64) -> StoreResult<()> {
        let key_id = key.to_string();
        self.call(move |c| {
            c.prepare_cached(
                "UPDATE api_keys SET credits_remaining = credits_remaining + ?2
                 WHERE id = ?1 AND credits_remaining IS NOT NULL
                   AND coalesce(credits_period_start, 0) = ?3",
            )?
            .execute(params![key_id, cost, period_start])?;
            Ok(())
        })
        .await
    }

    async fn spend_quota(
        &self,
        project: ProjectId,
        plan: String,
        limit: u64,
        now: i64,
    ) -> StoreResult<QuotaSpend> {
        let project_id = project.to_string();
        self.call(move |c| {
            let month = Interval::Monthly.period_start(now);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let increment = |c: &rusqlite::Connection| -> DbResult<bool> {
                Ok(c.prepare_cached(QUOTA_INCREMENT)?
                    .execute(params![project_id, month, limit, plan])?
                    == 1)
            };
            if increment(c)? {
                return Ok(QuotaSpend::Spent);
            }
            // The month's first spend starts from what was counted before.
            let created = c
                .prepare_cached(
                    "INSERT INTO quota_counters (project_id, period_start, used)
                     SELECT ?1, ?2, coalesce(sum(valid), 0) FROM usage_hourly
                     WHERE project_id = ?1 AND hour >= ?2
                     ON CONFLICT (project_id, period_start) DO NOTHING",
                )?
                .execute(params![project_id, month])?;
            if created == 1 && increment(c)? {
                return Ok(QuotaSpend::Spent);
            }
            let current: Option<String> = c
                .query_row(
                    "SELECT plan FROM projects WHERE id = ?1",
                    [&project_id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(if current.as_deref() == Some(plan.as_str()) {
                QuotaSpend::Exhausted
            } else {
                QuotaSpend::PlanChanged
            })
        })
        .await
    }
}
