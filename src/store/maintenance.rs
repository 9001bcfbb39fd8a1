//! Keeping the database in order, behind the storage interface.

use async_trait::async_trait;

use super::StoreResult;

/// How long what `cleanup` removes is kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// A session unused this long is dead (`auth.session_idle_secs`).
    pub session_idle_secs: i64,
}

/// How long a month's quota counter is kept after its month began: the
/// current month started at most 31 days ago, so anything older than this
/// counts a month that is over (nothing reads it again).
pub const QUOTA_COUNTER_RETENTION_SECS: i64 = 40 * 86_400;

#[async_trait]
pub trait Maintenance: Send + Sync {
    /// The database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Removes expired codes, throttle records, past months' quota
    /// counters, tokens, dead sessions and old mail in one transaction;
    /// returns how many rows went.
    async fn cleanup(&self, retention: Retention) -> StoreResult<usize>;
    /// Counts one request against `bucket` (e.g. `leak:192.0.2.7`) in the
    /// fixed window of `window_secs` that holds `now`, across every process
    /// on the database. `Some(seconds)` when it is over `limit`: refused,
    /// retry after that long.
    async fn throttle_hit(
        &self,
        bucket: String,
        window_secs: i64,
        limit: i64,
        now: i64,
    ) -> StoreResult<Option<i64>>;
}

/// The statement both backends run for [`Maintenance::throttle_hit`]
/// (parameters: bucket, window start): one conditional upsert, so
/// concurrent requests from any process are all counted.
pub const THROTTLE_HIT: &str = "INSERT INTO throttles (bucket, window_start, hits) VALUES ($1, $2, 1)
     ON CONFLICT (bucket) DO UPDATE SET
         hits = CASE WHEN throttles.window_start = excluded.window_start THEN throttles.hits + 1 ELSE 1 END,
         window_start = excluded.window_start
     RETURNING hits";

/// The window holding `now`, and whether `hits` in it are over `limit`
/// (then: seconds until the window ends).
pub fn throttle_window(now: i64, window_secs: i64) -> i64 {
    now - now.rem_euclid(window_secs.max(1))
}

pub fn throttle_verdict(
    hits: i64,
    limit: i64,
    window_start: i64,
    window_secs: i64,
    now: i64,
) -> Option<i64> {
    (hits > limit).then(|| (window_start + window_secs - now).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_windows_are_fixed_and_refusals_say_when_to_retry() {
        assert_eq!(throttle_window(125, 60), 120);
        assert_eq!(throttle_verdict(30, 30, 120, 60, 125), None);
        assert_eq!(throttle_verdict(31, 30, 120, 60, 125), Some(55));
        assert_eq!(throttle_verdict(31, 30, 120, 60, 179), Some(1));
    }
}
