//! Keeping the SQLite database in order: readiness, cleanup and the
//! shared throttle counters.

use async_trait::async_trait;
use rusqlite::{params, TransactionBehavior};

use super::SqliteStore;
use crate::store::maintenance::{
    throttle_verdict, throttle_window, Maintenance, Retention, THROTTLE_HIT,
};
use crate::store::open::Backend;
use crate::store::StoreResult;

#[async_trait]
impl Maintenance for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Deletes what can no longer be used: expired codes, old throttle
    /// records, past months' quota counters, expired access tokens, dead
    /// sessions and old mail.
    async fn cleanup(&self, retention: Retention) -> StoreResult<usize> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            n += tx.execute("DELETE FROM login_codes WHERE expires_at <= ?1", [now])?;
            n += tx.execute("DELETE FROM code_requests WHERE created_at < ?1", [now - 86_400])?;
            n += tx.execute("DELETE FROM throttles WHERE window_start < ?1", [now - 86_400])?;
            n += tx.execute(
                "DELETE FROM quota_counters WHERE period_start < ?1",
                [now - crate::store::maintenance::QUOTA_COUNTER_RETENTION_SECS],
            )?;
            n += tx.execute("DELETE FROM access_tokens WHERE expires_at <= ?1", [now])?;
            n += tx.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1 OR last_used_at < ?2 OR revoked_at < ?3",
                params![now, now - retention.session_idle_secs, now - 86_400],
            )?;
            n += tx.execute(
                "DELETE FROM mail_outbox WHERE (transport = 'mailbox' AND created_at < ?1)
                    OR (sent_at IS NOT NULL AND sent_at < ?2) OR (failed_at IS NOT NULL AND failed_at < ?2)",
                params![now - 86_400, now - 7 * 86_400],
            )?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn throttle_hit(
        &self,
        bucket: String,
        window_secs: i64,
        limit: i64,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let start = throttle_window(now, window_secs);
        let (hits, prev_hits): (i64, i64) = self
            .call(move |c| {
                Ok(c.query_row(
                    &THROTTLE_HIT.replace('$', "?"),
                    params![bucket, start, window_secs],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await?;
        Ok(throttle_verdict(
            (hits, prev_hits),
            limit,
            start,
            window_secs,
            now,
        ))
    }
}
