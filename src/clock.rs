//! Wall-clock time, read in one place and passed to whatever needs it, so a
//! test moves time instead of sleeping through it.
//!
//! Times are stored as whole seconds since the Unix epoch (UTC); the clock
//! also answers in milliseconds for what is finer (rate-limit windows,
//! retry schedules). A [`Clock::system`] clock reads the system time; a
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
