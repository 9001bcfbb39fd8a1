//! Keeping the PostgreSQL database in order: readiness, cleanup and the
//! shared throttle counters.

use super::{PgError, PgStore};
use crate::store::maintenance::{Maintenance, Retention};
use crate::store::StoreResult;
use async_trait::async_trait;

#[async_trait]
impl Maintenance for PgStore {
    fn backend(&self) -> crate::store::open::Backend {
        crate::store::open::Backend::Postgres
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    async fn cleanup(&self, retention: Retention) -> StoreResult<usize> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let mut n = 0;
            n += tx
                .execute("DELETE FROM login_codes WHERE expires_at <= $1", &[&now])
                .await?;
            n += tx
                .execute(
                    "DELETE FROM code_requests WHERE created_at < $1",
                    &[&(now - 86_400)],
                )
                .await?;
            n += tx
                .execute(
                    "DELETE FROM throttles WHERE window_start < $1",
                    &[&(now - 86_400)],
                )
                .await?;
            n += tx
                .execute(
                    "DELETE FROM quota_counters WHERE period_start < $1",
                    &[&(now - crate::store::maintenance::QUOTA_COUNTER_RETENTION_SECS)],
                )
                .await?;
            n += tx
                .execute("DELETE FROM access_tokens WHERE expires_at <= $1", &[&now])
                .await?;
            n += tx
                .execute(
                    "DELETE FROM sessions WHERE expires_at <= $1 OR last_used_at < $2 OR revoked_at < $3",
                    &[&now, &(now - retention.session_idle_secs), &(now - 86_400)],
                )
                .await?;
            n += tx
                .execute(
                    "DELETE FROM mail_outbox WHERE (transport = 'mailbox' AND created_at < $1)
                        OR (sent_at IS NOT NULL AND sent_at < $2) OR (failed_at IS NOT NULL AND failed_at < $2)",
                    &[&(now - 86_400), &(now - 7 * 86_400)],
                )
                .await?;
            tx.commit().await?;
            Ok::<u64, tokio_postgres::Error>(n)
        };
        let n = run.await.map_err(PgError::from)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn throttle_hit(
        &self,
        bucket: String,
        window_secs: i64,
        limit: i64,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        use crate::store::maintenance::{throttle_verdict, throttle_window, THROTTLE_HIT};
        let start = throttle_window(now, window_secs);
        let client = self.client().await?;
        let row = client
            .query_one(THROTTLE_HIT, &[&bucket, &start, &window_secs])
            .await
            .map_err(PgError::from)?;
        let hits: i64 = row.try_get(0).map_err(PgError::from)?;
        let prev_hits: i64 = row.try_get(1).map_err(PgError::from)?;
        Ok(throttle_verdict(
            (hits, prev_hits),
            limit,
            start,
            window_secs,
            now,
        ))
    }
}
