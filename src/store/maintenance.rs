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
    /// Which backend this is (for messages, metrics and checks).
    fn backend(&self) -> super::open::Backend;
    /// The backend itself, for what only it can do (the SQLite backend's
    /// pragmas and simulated faults, used by reliability tests).
    fn as_any(&self) -> &dyn std::any::Any;
    /// The database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Removes expired codes, throttle records, past months' quota
    /// counters, tokens, dead sessions and old mail in one transaction;
    /// returns how many rows went.
    async fn cleanup(&self, retention: Retention) -> StoreResult<usize>;
    /// Counts one request against `bucket` (e.g. `leak:192.0.2.7`) across
    /// every process on the database, and judges it by the sliding estimate
    /// of [`throttle_verdict`] over the last `window_secs`. `Some(seconds)`
    /// when it is over `limit`: refused, retry after that long.
    async fn throttle_hit(
        &self,
        bucket: String,
        window_secs: i64,
        limit: i64,
        now: i64,
    ) -> StoreResult<Option<i64>>;
}

/// The statement both backends run for [`Maintenance::throttle_hit`]
/// (parameters: bucket, window start, window length): one conditional
/// upsert, so concurrent requests from any process are all counted. It
/// keeps the current window's count and the previous window's, for
/// [`throttle_verdict`]'s sliding estimate. (Every `SET` expression reads
/// the row as it was before the update, in SQLite and PostgreSQL alike.)
pub const THROTTLE_HIT: &str = "INSERT INTO throttles (bucket, window_start, hits, prev_hits) VALUES ($1, $2, 1, 0)
     ON CONFLICT (bucket) DO UPDATE SET
         prev_hits = CASE
             WHEN throttles.window_start = excluded.window_start THEN throttles.prev_hits
             WHEN throttles.window_start = excluded.window_start - $3 THEN throttles.hits
             ELSE 0 END,
         hits = CASE WHEN throttles.window_start = excluded.window_start THEN throttles.hits + 1 ELSE 1 END,
         window_start = excluded.window_start
     RETURNING hits, prev_hits";

/// The fixed window holding `now`.
pub fn throttle_window(now: i64, window_secs: i64) -> i64 {
    now - now.rem_euclid(window_secs.max(1))
}

/// What the counts of a bucket allow: `None` when the request just counted
/// is within `limit`, else `Some(seconds)` until one more would be.
///
/// The count is a sliding estimate over the last `window_secs`: this
/// window's `hits` plus the previous window's `prev_hits` weighted by how
/// much of it still lies within the last `window_secs`. So a client cannot
/// double its allowance by bunching requests around a window's boundary,
/// as it could with fixed windows.
pub fn throttle_verdict(
    (hits, prev_hits): (i64, i64),
    limit: i64,
    window_start: i64,
    window_secs: i64,
    now: i64,
) -> Option<i64> {
    let w = window_secs.max(1);
    // `extra` more requests at `at` (same or a later second) are within the limit.
    let fits = |at: i64, extra: i64| {
        let start = throttle_window(at, w);
        let (cur, prev) = if start == window_start {
            (hits, prev_hits)
        } else if start == window_start + w {
            (0, hits)
        } else {
            (0, 0)
        };
        let into = at - start;
        // prev * (w - into) / w + cur + extra <= limit, in integers.
        prev.saturating_mul(w - into) + (cur + extra).saturating_mul(w) <= limit.saturating_mul(w)
    };
    if fits(now, 0) {
        return None;
    }
    // Two windows on, nothing counted is left: the answer is within them.
    Some((1..=2 * w).find(|&t| fits(now + t, 1)).unwrap_or(2 * w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_months_quota_counter_outlives_the_longest_month() {
        // A counter is removed only once its month is over: 31 days after
        // the month began at the latest.
        let longest_month = 31 * 86_400;
        assert!(QUOTA_COUNTER_RETENTION_SECS > longest_month);
    }

    #[test]
    fn a_first_window_counts_like_a_fixed_one() {
        assert_eq!(throttle_window(125, 60), 120);
        assert_eq!(throttle_verdict((30, 0), 30, 120, 60, 125), None);
        // The 31st is refused. In the next window the 31 still weigh:
        // one more fits 4 s into it (31 * 56/60 + 1 <= 30), 59 s from now.
        assert_eq!(throttle_verdict((31, 0), 30, 120, 60, 125), Some(59));
    }

    #[test]
    fn the_previous_window_still_counts_as_it_slides_out() {
        // 10 in the previous minute; at 10 s into this one, 10 * 50/60 of
        // them still count: 8.3 + 1 hit is within 10, + 2 is over.
        assert_eq!(throttle_verdict((1, 10), 10, 120, 60, 130), None);
        assert_eq!(throttle_verdict((2, 10), 10, 120, 60, 130), Some(8));
        // A burst at the end of one window and the start of the next is
        // held to the limit, which fixed windows would have doubled.
        assert!(throttle_verdict((1, 10), 10, 120, 60, 120).is_some());
        // Nothing is left two windows on.
        assert_eq!(throttle_verdict((1, 0), 10, 240, 60, 240), None);
    }

    #[test]
    fn the_wait_may_reach_into_the_second_window_and_no_further() {
        // 100 at the start of this minute: one more fits once they weigh
        // 9, 55 s into the next minute, 115 s from now.
        assert_eq!(throttle_verdict((100, 0), 10, 120, 60, 120), Some(115));
        // A limit of 0 never fits: wait out both windows.
        assert_eq!(throttle_verdict((1, 0), 0, 120, 60, 125), Some(120));
    }

    #[test]
    fn retry_after_is_when_one_more_request_fits() {
        for (hits, prev, limit, now) in [(31, 0, 30, 125), (2, 10, 10, 130), (50, 40, 10, 179)] {
            let wait = throttle_verdict((hits, prev), limit, 120, 60, now).unwrap();
            assert!((1..=120).contains(&wait));
            let fits_at = |t: i64| {
                let start = throttle_window(t, 60);
                let (cur, p) = match start - 120 {
                    0 => (hits, prev),
                    60 => (0, hits),
                    _ => (0, 0),
                };
                p as f64 * (60 - (t - start)) as f64 / 60.0 + (cur + 1) as f64 <= limit as f64
            };
            assert!(fits_at(now + wait), "{hits} {prev} {limit} {now}: {wait}");
            assert!(
                !fits_at(now + wait - 1),
                "{hits} {prev} {limit} {now}: {wait}"
            );
        }
    }
}
