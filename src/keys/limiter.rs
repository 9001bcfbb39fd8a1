//! The per-key rate limiter: a sliding-window counter. Each key keeps the
//! count of the current fixed window and of the previous one; the previous
//! count is weighted by how much of it still overlaps the sliding window.
//! Constant memory per key (three integers), no per-request allocation.
//! It approximates a sliding log closely (exact when traffic is uniform),
//! and never lets more than `limit` requests through in any aligned window.

#[derive(Clone, Debug, Default)]
pub struct SlidingWindow {
    window_start_ms: i64,
    prev: u64,
    cur: u64,
    /// The window length last used, in milliseconds.
    window_ms: i64,
}

/// What the limiter says about a key right now (IETF RateLimit fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateStatus {
    pub allowed: bool,
    pub limit: u32,
    pub window_secs: u32,
    /// Requests left in the window (`r`).
    pub remaining: u64,
    /// Seconds until one more request frees up (`t`); for a refusal, when to retry.
    pub reset_secs: u64,
}

impl SlidingWindow {
    /// Nothing counted is left: forgetting this window changes no answer.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        (self.prev == 0 && self.cur == 0)
            || now_ms
                >= self
                    .window_start_ms
                    .saturating_add(self.window_ms.saturating_mul(2))
    }

    fn roll(&mut self, now_ms: i64, w: i64) {
        self.window_ms = w;
        let start = now_ms - now_ms.rem_euclid(w);
        if start != self.window_start_ms {
            self.prev = if start - self.window_start_ms == w {
                self.cur
            } else {
                0
            };
            self.cur = 0;
            self.window_start_ms = start;
        }
    }

    fn estimate(&self, now_ms: i64, w: i64) -> f64 {
        let elapsed = (now_ms - self.window_start_ms) as f64;
        self.prev as f64 * ((w as f64 - elapsed) / w as f64) + self.cur as f64
    }

    /// Milliseconds until the estimate is at most `target`.
    fn ms_until_at_most(&self, target: f64, now_ms: i64, w: i64) -> i64 {
        let left_in_window = (self.window_start_ms + w - now_ms) as f64;
        let wf = w as f64;
        let cur = self.cur as f64;
        let prev = self.prev as f64;
        if self.estimate(now_ms, w) <= target {
            return 0;
        }
        // Within the current window the estimate falls to `cur` at its end.
        if target >= cur && prev > 0.0 {
            let s = left_in_window - (target - cur) * wf / prev;
            return s.max(0.0).ceil() as i64;
        }
        if target < 0.0 {
            return (left_in_window + wf) as i64;
        }
        // After the rollover, `cur` becomes the weighted previous window.
        let after = if cur > 0.0 {
            (wf - target * wf / cur).max(0.0)
        } else {
            0.0
        };
        (left_in_window + after).ceil() as i64
    }

    /// Takes in what a shared window (Redis) reported: `status.limit -
    /// status.remaining` requests counted there over all nodes. The node's
    /// own window never estimates fewer, so when the shared window becomes
    /// unreachable, the node falls back to a window that already holds what
    /// the cluster counted, not to an empty one: a fallback lets each node
    /// through at most what was left, instead of a full limit on top of the
    /// shared count (SPEC section 14).
    pub fn absorb(&mut self, status: &RateStatus, now_ms: i64) {
        let w = i64::from(status.window_secs.max(1)) * 1000;
        self.roll(now_ms, w);
        let shared = u64::from(status.limit).saturating_sub(status.remaining);
        let own = self.estimate(now_ms, w);
        let missing = (shared as f64 - own).ceil();
        if missing > 0.0 {
            self.cur += missing as u64;
        }
    }

    /// Counts one request if it fits (`take`), or only reports (`!take`).
    pub fn check(&mut self, limit: u32, window_secs: u32, now_ms: i64, take: bool) -> RateStatus {
        let w = i64::from(window_secs.max(1)) * 1000;
        self.roll(now_ms, w);
        let estimate = self.estimate(now_ms, w);
        let limit_f = f64::from(limit);
        let allowed = estimate + 1.0 <= limit_f;
        if take && allowed {
            self.cur += 1;
        }
        let after = self.estimate(now_ms, w);
        let remaining = (limit_f - after).floor().max(0.0) as u64;
        let wait_ms = if take && !allowed {
            self.ms_until_at_most(limit_f - 1.0, now_ms, w)
        } else if after >= 1.0 {
            self.ms_until_at_most(after.ceil() - 1.0, now_ms, w)
        } else {
            0
        };
        let reset_secs = (wait_ms as u64).div_ceil(1000);
        RateStatus {
            allowed: !take || allowed,
            limit,
            window_secs,
            remaining,
            reset_secs: if take && !allowed {
                reset_secs.max(1)
            } else {
                reset_secs
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_then_refuses_with_a_retry_time() {
        let mut w = SlidingWindow::default();
        let t0 = 1_000_000_020_000; // aligned to a 60 s window
        for i in 0..5 {
            let s = w.check(5, 60, t0 + i, true);
            assert!(s.allowed);
            assert_eq!(s.remaining, 4 - i as u64);
        }
        let s = w.check(5, 60, t0 + 10, true);
        assert!(!s.allowed);
        assert_eq!(s.remaining, 0);
        // All five were spent in this window: one frees up only after the
        // rollover, once the previous window's weight drops below 4/5.
        assert!(s.reset_secs >= 60 && s.reset_secs <= 72, "{}", s.reset_secs);
        // Retrying at the announced time succeeds.
        let retry_at = t0 + 10 + s.reset_secs as i64 * 1000;
        assert!(w.check(5, 60, retry_at, true).allowed);
    }

    #[test]
    fn the_previous_window_fades_out() {
        let mut w = SlidingWindow::default();
        let t0 = 1_000_000_020_000;
        for _ in 0..10 {
            assert!(w.check(10, 60, t0, true).allowed);
        }
        assert!(!w.check(10, 60, t0 + 1000, true).allowed);
        // Halfway through the next window, half of the old ones still count.
        let next = t0 - t0.rem_euclid(60_000) + 60_000;
        let s = w.check(10, 60, next + 30_000, false);
        assert_eq!(s.remaining, 5);
        // Much later everything is free again.
        assert_eq!(w.check(10, 60, next + 200_000, false).remaining, 10);
    }

    #[test]
    fn idle_once_two_windows_have_passed() {
        let mut w = SlidingWindow::default();
        assert!(w.is_idle(0));
        let t0 = 1_000_000_020_000;
        w.check(5, 60, t0, true);
        assert!(!w.is_idle(t0));
        assert!(!w.is_idle(t0 + 60_000), "the previous window still counts");
        assert!(w.is_idle(t0 + 120_000));
        // The same once a look has rolled the window over: a request of
        // the previous window still counts, and nothing is left after two.
        w.check(5, 60, t0 + 60_000, false);
        assert!(!w.is_idle(t0 + 60_000));
        w.check(5, 60, t0 + 120_000, false);
        assert!(w.is_idle(t0 + 120_000));
    }

    #[test]
    fn peeking_does_not_count() {
        let mut w = SlidingWindow::default();
        for _ in 0..10 {
            assert!(w.check(1, 1, 5_000, false).allowed);
        }
        assert!(w.check(1, 1, 5_000, true).allowed);
        assert!(!w.check(1, 1, 5_001, true).allowed);
    }

    #[test]
    fn a_window_that_absorbed_the_shared_count_allows_only_what_is_left() {
        let t0 = 1_000_000_020_000;
        let mut w = SlidingWindow::default();
        // Redis counted 8 of 10 over all nodes; this node saw one of them.
        assert!(w.check(10, 60, t0, true).allowed);
        let shared = RateStatus {
            allowed: true,
            limit: 10,
            window_secs: 60,
            remaining: 2,
            reset_secs: 6,
        };
        w.absorb(&shared, t0 + 5);
        // Redis is lost: the node's own window lets two more through.
        assert!(w.check(10, 60, t0 + 10, true).allowed);
        assert!(w.check(10, 60, t0 + 11, true).allowed);
        assert!(!w.check(10, 60, t0 + 12, true).allowed);
        // A count the node's window already holds is not added twice.
        let mut own = SlidingWindow::default();
        for i in 0..5 {
            own.check(10, 60, t0 + i, true);
        }
        own.absorb(
            &RateStatus {
                remaining: 7,
                ..shared
            },
            t0 + 6,
        );
        assert_eq!(own.check(10, 60, t0 + 7, false).remaining, 5);
    }

    /// `reset_secs` to the second, worked out by hand from the estimate
    /// `prev * (w - elapsed) / w + cur`, for each way it can fall.
    #[test]
    fn reset_is_when_the_estimate_falls_far_enough() {
        let t0 = 1_000_000_020_000; // aligned to a 60 s window
        let next = t0 + 60_000;
        // Only this window counts: 5 of 5 taken at t0, refused 10 ms
        // later. 4 fit once the rolled-over 5 weigh 4: 12 s into the
        // next window, 59.99 + 12 s from now.
        let mut w = SlidingWindow::default();
        for i in 0..5 {
            w.check(5, 60, t0 + i, true);
        }
        let s = w.check(5, 60, t0 + 10, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 72));
        // One request taken: the next frees up when it has faded out
        // completely, at the end of the next window.
        let s = SlidingWindow::default().check(5, 60, t0, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (true, 4, 120));

        // The previous window fades within this one: 10 from the last
        // window weigh 5 halfway through; they weigh 4 six seconds on.
        let mut w = SlidingWindow::default();
        for _ in 0..10 {
            w.check(10, 60, t0, true);
        }
        let s = w.check(10, 60, next + 30_000, false);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (true, 5, 6));
        let s = w.check(5, 60, next + 30_000, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 6));
        // 5 more now: 10 + 5 in all weigh 10; 9 six seconds on.
        for _ in 0..5 {
            w.check(10, 60, next + 30_000, true);
        }
        let s = w.check(10, 60, next + 30_000, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 6));
        // A limit of 8 with 8 taken in this window: 7 fit only once the 8
        // have rolled over and weigh 7, 7.5 s into the window after.
        let mut w = SlidingWindow::default();
        for _ in 0..10 {
            w.check(10, 60, t0, true);
        }
        for _ in 0..8 {
            w.check(20, 60, next + 30_000, true);
        }
        let s = w.check(8, 60, next + 30_000, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 38));
        // A limit of 0 never lets one through; retry after two windows.
        let s = SlidingWindow::default().check(0, 60, t0 + 10, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 120));
    }

    #[test]
    fn a_refusal_always_asks_for_at_least_a_second() {
        // 25 requests in the last 1 s window weigh 25 * 0.56 = 14 at
        // 440 ms into the next, which floating point makes a hair more
        // than 14: the 15th of a limit of 15 is refused, with nothing
        // left to wait for. Retry-After 0 would invite a busy loop.
        let t0 = 1_000_000_020_000;
        let mut w = SlidingWindow::default();
        for _ in 0..25 {
            assert!(w.check(25, 1, t0, true).allowed);
        }
        let s = w.check(15, 1, t0 + 1_440, true);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (false, 0, 1));
    }

    #[test]
    fn a_look_at_an_empty_window_has_nothing_to_wait_for() {
        let s = SlidingWindow::default().check(5, 60, 1_000_000_020_000, false);
        assert_eq!((s.allowed, s.remaining, s.reset_secs), (true, 5, 0));
    }

    #[test]
    fn never_more_than_the_limit_in_an_aligned_window() {
        let mut w = SlidingWindow::default();
        let mut allowed = 0;
        for ms in 0..60_000 {
            if w.check(100, 60, 6_000_000 + ms, true).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 100);
    }
}
