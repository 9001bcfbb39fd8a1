//! Credits and monthly quotas, spent in the database itself so that any
//! number of nodes share one exact balance. Each spend is one conditional
//! update (`... WHERE remaining >= cost`): two nodes can never both take
//! the last credit, and nothing is held in a node's memory that a crash or
//! a second node could contradict. A refill (daily or monthly) is applied
//! by the same statement, by the rule of [`crate::store::credits::Balance`].

use async_trait::async_trait;

use super::{KeyId, ProjectId, StoreResult};
use crate::store::credits::{Balance, Interval};

/// What spending a key's credits did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditSpend {
    /// Spent (or, for a cost of 0, only read); the balance left and the
    /// refill period it belongs to (for [`SpendRepo::refund_credits`]).
    Spent { remaining: i64, period_start: i64 },
    /// The key has no credit limit (any more).
    Unlimited,
    /// Not enough left; nothing was spent.
    Insufficient { remaining: i64 },
}

/// What counting a verification against a project's monthly quota did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaSpend {
    /// Counted.
    Spent,
    /// The limit is reached; nothing was counted.
    Exhausted,
    /// The project is no longer on the plan the limit came from (changed
    /// through another node); nothing was counted. Read the plan again.
    PlanChanged,
}

/// What a spend the conditional update did not make comes to, judged from
/// the key's stored `balance` (both backends read it then): `None` when
/// the balance would cover `cost` after all (it changed in between: try
/// the update again).
pub fn settle(mut balance: Balance, cost: i64, now: i64) -> Option<CreditSpend> {
    balance.refill(now);
    if cost <= 0 {
        return Some(CreditSpend::Spent {
            remaining: balance.remaining,
            period_start: balance.period_start,
        });
    }
    (balance.remaining < cost).then_some(CreditSpend::Insufficient {
        remaining: balance.remaining,
    })
}

/// The refill periods a spend at `now` may start: (day, month).
pub fn period_starts(now: i64) -> (i64, i64) {
    (
        Interval::Daily.period_start(now),
        Interval::Monthly.period_start(now),
    )
}

#[async_trait]
pub trait SpendRepo: Send + Sync {
    /// Spends `cost` of the balance of key `key` (the key whose row holds
    /// the balance: a rotated key's successor), following `rotated_to` if
    /// the key was rotated meanwhile. Never below zero.
    async fn spend_credits(&self, key: KeyId, cost: i64, now: i64) -> StoreResult<CreditSpend>;
    /// Gives back what a spend took when a later check refused the request
    /// (unless the balance was refilled since: a refill sets it anew).
    async fn refund_credits(&self, key: KeyId, cost: i64, period_start: i64) -> StoreResult<()>;
    /// Counts one verification against the project's quota for the month
    /// containing `now`, unless `limit` (the limit of `plan`) is reached or
    /// the project is no longer on `plan`: the plan is checked in the same
    /// statement, so a node that has not seen a downgrade yet cannot count
    /// past the new limit. The month's counter starts from the project's
    /// stored usage.
    async fn spend_quota(
        &self,
        project: ProjectId,
        plan: String,
        limit: u64,
        now: i64,
    ) -> StoreResult<QuotaSpend>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::credits::Refill;

    const NOV_22_2026_NOON: i64 = 1_795_348_800; // 2026-11-22T12:00:00Z
    const NOV_22: i64 = 1_795_305_600; // 2026-11-22T00:00Z
    const NOV_1: i64 = 1_793_491_200; // 2026-11-01T00:00Z

    fn balance(remaining: i64) -> Balance {
        Balance {
            remaining,
            refill: None,
            period_start: NOV_22,
        }
    }

    #[test]
    fn a_balance_that_covers_the_cost_is_spent_after_all() {
        // The conditional update missed but the balance now covers the
        // cost (exactly, or with some left): try the update again.
        assert_eq!(settle(balance(3), 3, NOV_22_2026_NOON), None);
        assert_eq!(settle(balance(4), 3, NOV_22_2026_NOON), None);
    }

    #[test]
    fn a_balance_short_of_the_cost_is_insufficient() {
        assert_eq!(
            settle(balance(2), 3, NOV_22_2026_NOON),
            Some(CreditSpend::Insufficient { remaining: 2 })
        );
        assert_eq!(
            settle(balance(0), 1, NOV_22_2026_NOON),
            Some(CreditSpend::Insufficient { remaining: 0 })
        );
    }

    #[test]
    fn a_cost_of_zero_only_reads_the_balance() {
        assert_eq!(
            settle(balance(0), 0, NOV_22_2026_NOON),
            Some(CreditSpend::Spent {
                remaining: 0,
                period_start: NOV_22,
            })
        );
        assert_eq!(
            settle(balance(7), 0, NOV_22_2026_NOON),
            Some(CreditSpend::Spent {
                remaining: 7,
                period_start: NOV_22,
            })
        );
    }

    #[test]
    fn a_refill_due_is_applied_before_judging() {
        let empty_yesterday = Balance {
            remaining: 0,
            refill: Some(Refill {
                amount: 5,
                interval: Interval::Daily,
            }),
            period_start: NOV_22 - 86_400,
        };
        assert_eq!(settle(empty_yesterday, 5, NOV_22_2026_NOON), None);
        assert_eq!(
            settle(empty_yesterday, 6, NOV_22_2026_NOON),
            Some(CreditSpend::Insufficient { remaining: 5 })
        );
        assert_eq!(
            settle(empty_yesterday, 0, NOV_22_2026_NOON),
            Some(CreditSpend::Spent {
                remaining: 5,
                period_start: NOV_22,
            })
        );
    }

    #[test]
    fn a_spend_may_start_the_day_and_the_month() {
        assert_eq!(period_starts(NOV_22_2026_NOON), (NOV_22, NOV_1));
        assert_eq!(period_starts(NOV_1), (NOV_1, NOV_1));
    }
}
