//! Wall-clock time, read in one place and passed to whatever needs it, so a
//! test moves time instead of sleeping through it.
//!
//! Times are stored as whole seconds since the Unix epoch (UTC); the clock
//! also answers in milliseconds for what is finer (rate-limit windows,
//! retry schedules). A lifetime starts at the next whole second
//! ([`Clock::expires_after`]) and ends when the second-truncated time
//! reaches it, so a thing said to live N seconds lives at least N and
//! less than N + 1, never less than promised. A [`Clock::system`] clock reads the system time; a
//! [`Clock::manual`] one reads the system time plus an offset the test
//! moves forward with [`Clock::advance`], so a code that lives 2 seconds
//! is expired by advancing 3, whatever the machine's speed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; `None` for the system clock.
    offset_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's clock (what the server runs on).
    pub fn system() -> Clock {
        Clock { offset_ms: None }
    }

    /// A clock that a test moves forward with [`Clock::advance`]; clones
    /// share it.
    pub fn manual() -> Clock {
        Clock {
            offset_ms: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        match &self.offset_ms {
            None => system,
            Some(offset) => system + offset.load(Ordering::Acquire),
        }
    }

    /// Whole seconds since the Unix epoch: how times are stored.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// When something that lives `secs` from now expires: `secs` after the
    /// next whole second (a time already on a whole second counts as the
    /// next). Compared with [`Clock::now`] (`now >= expires_at` = expired),
    /// it lives at least `secs` seconds and less than `secs + 1`; counted
    /// from the truncated `now()` instead it would live between `secs - 1`
    /// and `secs`.
    pub fn expires_after(&self, secs: i64) -> i64 {
        self.now_ms().div_euclid(1000) + 1 + secs
    }

    /// Moves a manual clock forward.
    ///
    /// # Panics
    /// On the system clock: only tests move time.
    pub fn advance(&self, by: Duration) {
        let offset = self
            .offset_ms
            .as_ref()
            .expect("only a manual clock can be moved");
        offset.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_and_its_clones_with_it() {
        let clock = Clock::manual();
        let other = clock.clone();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(3600));
        let after = other.now_ms();
        assert!(after - before >= 3_600_000, "{before} -> {after}");
        assert!(after - before < 3_700_000, "{before} -> {after}");
        assert_eq!(other.now(), after.div_euclid(1000));
    }

    #[test]
    fn a_lifetime_never_falls_short() {
        let clock = Clock::manual();
        for _ in 0..50 {
            let start_ms = clock.now_ms();
            let expires_at = clock.expires_after(2);
            // Expired once the truncated time reaches expires_at: the first
            // millisecond of that second.
            let lived_ms = expires_at * 1000 - start_ms;
            assert!((2_000..3_000).contains(&lived_ms), "{lived_ms}");
            clock.advance(Duration::from_millis(37));
        }
    }

    #[test]
    fn the_system_clock_follows_the_system() {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let now = Clock::system().now();
        assert!((now - system).abs() <= 1, "{now} vs {system}");
    }

    #[test]
    #[should_panic(expected = "only a manual clock")]
    fn the_system_clock_cannot_be_moved() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
