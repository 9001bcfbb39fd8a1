//! The login and session rules of SPEC section 6 as plain functions: what a
//! presented code meets, whether `send-code` is throttled, what a presented
//! refresh token leads to and whether a session is alive. Both storage
//! backends read the rows inside their transaction and call these, so the
//! rules are the same everywhere and tested without a database.

use subtle::ConstantTimeEq;

/// What a presented login code meets. Only [`CodeVerdict::Accepted`] logs
/// in; the others are all the same 401 `invalid_code` to the client and
/// differ only in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeVerdict {
    Accepted,
    NoCode,
    Expired,
    Burned,
    Wrong,
}

impl CodeVerdict {
    /// The `reason` a failed attempt's audit row gives.
    pub fn reason(self) -> &'static str {
        match self {
            CodeVerdict::Accepted => "unknown_user",
            CodeVerdict::NoCode => "no_code",
            CodeVerdict::Expired => "expired",
            CodeVerdict::Burned => "burned",
            CodeVerdict::Wrong => "wrong_code",
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Code comparisons made on this thread (the login tests count them).
    pub(crate) static CODE_COMPARISONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Judges a presented code hash against the stored code (hash, attempts
/// made, expiry). The same work whatever is stored: one constant-time
/// comparison, against a stand-in when there is no code.
pub fn judge_code(
    stored: Option<(&[u8], i64, i64)>,
    presented: &[u8; 32],
    now: i64,
    max_attempts: i64,
) -> CodeVerdict {
    const NO_CODE: [u8; 32] = [0; 32];
    let (hash, attempts, expires_at) = stored.unwrap_or((&NO_CODE, 0, i64::MIN));
    let matches: bool = hash.ct_eq(&presented[..]).into();
    #[cfg(test)]
    CODE_COMPARISONS.with(|n| n.set(n.get() + 1));
    match stored {
        None => CodeVerdict::NoCode,
        Some(_) if now >= expires_at => CodeVerdict::Expired,
        Some(_) if attempts >= max_attempts => CodeVerdict::Burned,
        Some(_) if !matches => CodeVerdict::Wrong,
        Some(_) => CodeVerdict::Accepted,
    }
}

/// Whether a failed attempt used up the code's last try (audit detail).
pub fn burns_code(verdict: CodeVerdict, attempts_before: Option<i64>, max_attempts: i64) -> bool {
    verdict == CodeVerdict::Wrong && attempts_before.is_some_and(|a| a + 1 >= max_attempts)
}

/// The `send-code` throttles (SPEC section 6).
#[derive(Clone, Copy, Debug)]
pub struct CodeLimits {
    pub interval_secs: i64,
    pub per_hour: i64,
    pub per_ip_per_hour: i64,
}

/// What the stored code requests say about an address and a client address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRequestHistory {
    /// When the address last asked for a code.
    pub last_for_email: Option<i64>,
    /// Requests for the address in the past hour, and the oldest of them.
    pub email_last_hour: (i64, Option<i64>),
    /// Requests from the client address in the past hour, and the oldest.
    pub ip_last_hour: (i64, Option<i64>),
}

/// Seconds to wait before the next code may be sent, or `None` when one
/// may be sent now: at most one per `interval_secs` and `per_hour` per
/// address, `per_ip_per_hour` per client address.
pub fn send_code_throttle(h: &CodeRequestHistory, l: &CodeLimits, now: i64) -> Option<i64> {
    let mut retry_after: i64 = 0;
    let mut throttled = false;
    if let Some(last) = h.last_for_email.filter(|&t| t > now - l.interval_secs) {
        throttled = true;
        retry_after = retry_after.max(last + l.interval_secs - now);
    }
    let (per_email, oldest) = h.email_last_hour;
    if per_email >= l.per_hour {
        throttled = true;
        retry_after = retry_after.max(oldest.unwrap_or(now) + 3600 - now);
    }
    let (per_ip, oldest) = h.ip_last_hour;
    if per_ip >= l.per_ip_per_hour {
        throttled = true;
        retry_after = retry_after.max(oldest.unwrap_or(now) + 3600 - now);
    }
    throttled.then_some(retry_after.max(1))
}

/// Session lifetimes (SPEC section 6).
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub idle_secs: i64,
    pub max_secs: i64,
    pub reuse_grace_secs: i64,
}

impl SessionLimits {
    /// The session lifetimes the `[auth]` settings give.
    pub fn of(auth: &crate::config::AuthConfig) -> SessionLimits {
        SessionLimits {
            idle_secs: auth.session_idle_secs as i64,
            max_secs: auth.session_max_secs as i64,
            reuse_grace_secs: auth.refresh_reuse_grace_secs as i64,
        }
    }
}

/// Whether a session may still be used: not revoked, not past its absolute
/// lifetime, not idle longer than allowed.
pub fn session_alive(
    now: i64,
    last_used_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    limits: &SessionLimits,
) -> bool {
    revoked_at.is_none() && now < expires_at && now - last_used_at <= limits.idle_secs
}

/// Whether an authenticated request should record the session's use
/// (at most once a minute, more often for very short idle limits).
pub fn should_touch_session(now: i64, last_used_at: i64, limits: &SessionLimits) -> bool {
    now - last_used_at >= (limits.idle_secs / 4).min(60)
}

/// What a presented refresh token of a live session leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Unspent: spend it and issue a new pair.
    Rotate,
    /// Spent moments ago and its successor is unspent (a client that lost
    /// the answer, or two tabs racing): issue another pair, spend nothing.
    Grace,
    /// Spent otherwise: reuse, which revokes the whole session.
    Reuse,
}

/// `used_at`: when the presented token was spent (`None`: unspent);
/// `spent_children`: how many of the tokens it was exchanged for are spent.
pub fn refresh_decision(
    used_at: Option<i64>,
    spent_children: i64,
    now: i64,
    limits: &SessionLimits,
) -> RefreshDecision {
    match used_at {
        None => RefreshDecision::Rotate,
        Some(used_at)
            if limits.reuse_grace_secs > 0
                && now - used_at <= limits.reuse_grace_secs
                && spent_children == 0 =>
        {
            RefreshDecision::Grace
        }
        Some(_) => RefreshDecision::Reuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const LIMITS: CodeLimits = CodeLimits {
        interval_secs: 60,
        per_hour: 5,
        per_ip_per_hour: 20,
    };
    const SESSIONS: SessionLimits = SessionLimits {
        idle_secs: 3600,
        max_secs: 86_400,
        reuse_grace_secs: 10,
    };

    #[test]
    fn a_first_code_is_sent() {
        assert_eq!(
            send_code_throttle(&CodeRequestHistory::default(), &LIMITS, NOW),
            None
        );
    }

    #[test]
    fn codes_are_spaced_by_the_interval() {
        let h = CodeRequestHistory {
            last_for_email: Some(NOW - 20),
            email_last_hour: (1, Some(NOW - 20)),
            ..Default::default()
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), Some(40));
        let h = CodeRequestHistory {
            last_for_email: Some(NOW - 60),
            email_last_hour: (1, Some(NOW - 60)),
            ..Default::default()
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), None);
    }

    #[test]
    fn the_hourly_limits_wait_for_the_oldest_request_to_age_out() {
        let h = CodeRequestHistory {
            last_for_email: Some(NOW - 300),
            email_last_hour: (5, Some(NOW - 3000)),
            ..Default::default()
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), Some(600));
        let h = CodeRequestHistory {
            ip_last_hour: (20, Some(NOW - 3599)),
            ..Default::default()
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), Some(1));
        let h = CodeRequestHistory {
            ip_last_hour: (20, Some(NOW - 3000)),
            ..Default::default()
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), Some(600));
        // The longest wait wins.
        let h = CodeRequestHistory {
            last_for_email: Some(NOW - 1),
            email_last_hour: (5, Some(NOW - 100)),
            ip_last_hour: (20, Some(NOW - 3000)),
        };
        assert_eq!(send_code_throttle(&h, &LIMITS, NOW), Some(3500));
    }

    #[test]
    fn refresh_tokens_rotate_once_with_a_short_grace() {
        assert_eq!(
            refresh_decision(None, 0, NOW, &SESSIONS),
            RefreshDecision::Rotate
        );
        assert_eq!(
            refresh_decision(Some(NOW - 10), 0, NOW, &SESSIONS),
            RefreshDecision::Grace
        );
        assert_eq!(
            refresh_decision(Some(NOW - 11), 0, NOW, &SESSIONS),
            RefreshDecision::Reuse
        );
        // Once the successor was spent too, the parent is plain reuse.
        assert_eq!(
            refresh_decision(Some(NOW - 1), 1, NOW, &SESSIONS),
            RefreshDecision::Reuse
        );
        let no_grace = SessionLimits {
            reuse_grace_secs: 0,
            ..SESSIONS
        };
        assert_eq!(
            refresh_decision(Some(NOW), 0, NOW, &no_grace),
            RefreshDecision::Reuse
        );
    }

    #[test]
    fn sessions_die_when_revoked_expired_or_idle() {
        assert!(session_alive(NOW, NOW - 3600, NOW + 1, None, &SESSIONS));
        assert!(!session_alive(NOW, NOW - 3601, NOW + 1, None, &SESSIONS));
        assert!(!session_alive(NOW, NOW, NOW, None, &SESSIONS));
        assert!(!session_alive(NOW, NOW, NOW + 1, Some(NOW), &SESSIONS));
        assert!(should_touch_session(NOW, NOW - 60, &SESSIONS));
        assert!(!should_touch_session(NOW, NOW - 59, &SESSIONS));
    }

    #[test]
    fn a_short_idle_limit_records_use_more_often() {
        // A 40 s idle limit: use is recorded every 10 s, not every minute,
        // or a session in use would die idle.
        let short = SessionLimits {
            idle_secs: 40,
            ..SESSIONS
        };
        assert!(should_touch_session(NOW, NOW - 10, &short));
        assert!(!should_touch_session(NOW, NOW - 9, &short));
    }

    #[test]
    fn a_wrong_code_burns_on_the_last_attempt() {
        assert!(burns_code(CodeVerdict::Wrong, Some(4), 5));
        assert!(!burns_code(CodeVerdict::Wrong, Some(3), 5));
        assert!(!burns_code(CodeVerdict::Expired, Some(4), 5));
        assert!(!burns_code(CodeVerdict::Wrong, None, 5));
    }
}
