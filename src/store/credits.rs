//! Credits: a balance spent by verifications, optionally refilled to a fixed
//! amount at the start of every UTC day or month.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Time};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Daily,
    Monthly,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Daily => "daily",
            Interval::Monthly => "monthly",
        }
    }
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "daily" => Some(Interval::Daily),
            "monthly" => Some(Interval::Monthly),
            _ => None,
        }
    }

    /// The start (epoch seconds, UTC) of the interval containing `now`.
    pub fn period_start(self, now: i64) -> i64 {
        match self {
            Interval::Daily => now - now.rem_euclid(86_400),
            Interval::Monthly => {
                let dt =
                    OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let first =
                    Date::from_calendar_date(dt.year(), dt.month(), 1).expect("day 1 exists");
                first
                    .with_time(Time::MIDNIGHT)
                    .assume_utc()
                    .unix_timestamp()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refill {
    pub amount: i64,
    pub interval: Interval,
}

/// The live balance of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub remaining: i64,
    pub refill: Option<Refill>,
    /// The refill interval last applied.
    pub period_start: i64,
}

impl Balance {
    /// Applies a refill when a new interval has begun since the last one.
    pub fn refill(&mut self, now: i64) -> bool {
        if let Some(r) = self.refill {
            let start = r.interval.period_start(now);
            if start > self.period_start {
                self.remaining = r.amount;
                self.period_start = start;
                return true;
            }
        }
        false
    }

    /// Spends `cost` if the balance allows it; never goes negative.
    pub fn spend(&mut self, cost: i64, now: i64) -> bool {
        self.refill(now);
        if cost <= 0 {
            return true;
        }
        if self.remaining >= cost {
            self.remaining -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_22_2026_NOON: i64 = 1_795_348_800; // 2026-11-22T12:00:00Z

    #[test]
    fn period_starts() {
        assert_eq!(
            Interval::Daily.period_start(NOV_22_2026_NOON),
            1_795_305_600
        ); // 2026-11-22T00:00Z
        assert_eq!(
            Interval::Monthly.period_start(NOV_22_2026_NOON),
            1_793_491_200
        ); // 2026-11-01T00:00Z
    }

    #[test]
    fn spends_down_to_zero_and_refills_at_the_boundary() {
        let day = Interval::Daily.period_start(NOV_22_2026_NOON);
        let mut b = Balance {
            remaining: 2,
            refill: Some(Refill {
                amount: 5,
                interval: Interval::Daily,
            }),
            period_start: day,
        };
        assert!(b.spend(1, NOV_22_2026_NOON));
        assert!(b.spend(1, NOV_22_2026_NOON));
        assert!(!b.spend(1, NOV_22_2026_NOON));
        assert_eq!(b.remaining, 0);
        assert!(!b.spend(1, day + 86_399));
        assert!(b.spend(1, day + 86_400), "a new day refills");
        assert_eq!(b.remaining, 4);
        assert!(b.spend(0, day + 86_400));
        let mut none = Balance {
            remaining: 1,
            refill: None,
            period_start: 0,
        };
        assert!(!none.spend(2, NOV_22_2026_NOON), "cost above the balance");
        assert_eq!(none.remaining, 1);
    }

    #[test]
    fn interval_names_round_trip() {
        for (interval, name) in [(Interval::Daily, "daily"), (Interval::Monthly, "monthly")] {
            assert_eq!(interval.as_str(), name);
            assert_eq!(Interval::parse(name), Some(interval));
        }
        assert_eq!(Interval::parse("weekly"), None);
        assert_eq!(Interval::parse("Daily"), None);
    }
}
