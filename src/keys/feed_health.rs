//! How current this node's key cache is with the key change feed, and the
//! rule that follows from it (SPEC section 14): while the node is not
//! following the feed, a cached key older than `cluster.max_staleness_ms`
//! is read from the database again before it is trusted.
//!
//! The feed task marks the moment it last read the feed to its end
//! ([`FeedHealth::current_as_of`], the time the read *started*: anything
//! committed after that is still to come). A cached key is vouched for
//! when it was loaded, or the feed was known current, within the staleness
//! bound. On a healthy node the feed is read at least every 250 ms, so
//! this costs one atomic load per check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct FeedHealth {
    base: Instant,
    /// Milliseconds after `base` when the feed was last read to its end.
    current_ms: AtomicU64,
    following: AtomicBool,
    max_staleness: Duration,
    /// Whether staleness is enforced: on backends several nodes share.
    /// A single SQLite process applies its own changes at once and reads
    /// the host's (CLI) changes on a timer; it keeps answering from its
    /// cache through storage faults, as it always has.
    enforced: bool,
}

impl FeedHealth {
    pub fn new(max_staleness: Duration, enforced: bool) -> Self {
        FeedHealth {
            base: Instant::now(),
            current_ms: AtomicU64::new(0),
            following: AtomicBool::new(!enforced),
            max_staleness,
            enforced,
        }
    }

    fn ms_since_base(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// The feed was read to its end by a read that started at `started`.
    pub fn current_as_of(&self, started: Instant) {
        self.current_ms
            .fetch_max(self.ms_since_base(started), Ordering::Release);
    }

    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// Whether the node holds a live subscription to the feed.
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// How long since the feed was last known current.
    pub fn lag(&self) -> Duration {
        let now = self.ms_since_base(Instant::now());
        Duration::from_millis(now.saturating_sub(self.current_ms.load(Ordering::Acquire)))
    }

    /// Whether a cached entry read from storage `age` ago may answer a
    /// check without being read again.
    pub fn vouches_for(&self, age: Duration) -> bool {
        !self.enforced || age <= self.max_staleness || self.lag() <= self.max_staleness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_feed_vouches_for_old_entries_and_a_stalled_one_does_not() {
        let h = FeedHealth::new(Duration::from_millis(50), true);
        let old = Instant::now();
        h.current_as_of(Instant::now());
        assert!(h.vouches_for(old.elapsed()));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !h.vouches_for(old.elapsed()),
            "feed stalled longer than the bound"
        );
        assert!(h.vouches_for(Duration::ZERO), "a fresh read is trusted");
        h.current_as_of(Instant::now());
        assert!(h.vouches_for(old.elapsed()));
        // An older read never moves the mark back.
        h.current_as_of(old);
        assert!(h.lag() < Duration::from_millis(50));
    }

    #[test]
    fn a_single_sqlite_process_is_not_held_to_it() {
        let h = FeedHealth::new(Duration::from_millis(1), false);
        let old = Instant::now() - Duration::from_secs(60);
        assert!(h.vouches_for(old.elapsed()));
        assert!(h.following());
    }
}
