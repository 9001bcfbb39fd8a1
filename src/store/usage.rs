//! Usage counts and the audit log behind the storage interface.

use async_trait::async_trait;

use super::{KeyId, ProjectId, StoreError, StoreResult};
use std::collections::HashMap;
use std::sync::Arc;

use crate::store::credits::Balance;

#[async_trait]
pub trait UsageRepo: Send + Sync {
    /// Writes a batch in one transaction (counts are added to what is
    /// stored). On failure the batch comes back, to be retried.
    async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)>;
    /// Zero-filled buckets of `bucket_secs` between `from` and `to`.
    async fn usage_series(
        &self,
        project: ProjectId,
        key: Option<KeyId>,
        from: i64,
        to: i64,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, UsageCounts)>>;
    /// Valid verifications of a project since `since`.
    async fn project_verifications_since(&self, project: ProjectId, since: i64)
        -> StoreResult<u64>;
}

/// One key's pending usage: counts per hour ([valid, invalid, rate_limited,
/// refused]) and the latest successful use.
#[derive(Clone, Debug)]
pub struct KeyUsage {
    pub project_id: Arc<str>,
    pub hours: Hours,
    pub last_used: Option<i64>,
}

impl KeyUsage {
    pub fn new(project_id: Arc<str>) -> Self {
        KeyUsage {
            project_id,
            hours: Hours::default(),
            last_used: None,
        }
    }

    /// The counters of `hour` (usually the last one).
    pub fn hour(&mut self, hour: i64) -> &mut [u64; 4] {
        self.hours.counts(hour)
    }
}

/// Counters by hour. A batch is written every few seconds, so a key's
/// counts nearly always fall in one hour: that one is kept inline, which
/// spares an allocation per key per batch.
#[derive(Clone, Debug, Default)]
pub struct Hours {
    first: Option<(i64, [u64; 4])>,
    rest: Vec<(i64, [u64; 4])>,
}

impl Hours {
    fn counts(&mut self, hour: i64) -> &mut [u64; 4] {
        if self.first.is_none_or(|(h, _)| h == hour) {
            return &mut self.first.get_or_insert((hour, [0; 4])).1;
        }
        let at = match self.rest.iter().rposition(|(h, _)| *h == hour) {
            Some(i) => i,
            None => {
                self.rest.push((hour, [0; 4]));
                self.rest.len() - 1
            }
        };
        &mut self.rest[at].1
    }

    pub fn iter(&self) -> <&Hours as IntoIterator>::IntoIter {
        self.into_iter()
    }
}

impl<'a> IntoIterator for &'a Hours {
    type Item = &'a (i64, [u64; 4]);
    type IntoIter = std::iter::Chain<
        std::option::Iter<'a, (i64, [u64; 4])>,
        std::slice::Iter<'a, (i64, [u64; 4])>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.first.iter().chain(self.rest.iter())
    }
}

impl IntoIterator for Hours {
    type Item = (i64, [u64; 4]);
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<(i64, [u64; 4])>,
        std::vec::IntoIter<(i64, [u64; 4])>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// Usage waiting to be written, per key, plus credit balances. Keyed by key
/// id so that recording a check is one lookup without allocation.
#[derive(Clone, Debug, Default)]
pub struct UsageBatch {
    pub keys: HashMap<Arc<str>, KeyUsage>,
    pub credits: HashMap<Arc<str>, Balance>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.credits.is_empty()
    }

    /// Every key the batch writes to (usage or balance), each once, in
    /// ascending id: the order both backends lock rows in.
    pub fn key_ids_in_order(&self) -> Vec<&Arc<str>> {
        let mut ids: Vec<&Arc<str>> = self.keys.keys().chain(self.credits.keys()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Adds `other` (an older batch that failed to write) into this one.
    pub fn merge_older(&mut self, other: UsageBatch) {
        for (k, old) in other.keys {
            let entry = self
                .keys
                .entry(k)
                .or_insert_with(|| KeyUsage::new(old.project_id.clone()));
            for (hour, counts) in old.hours {
                for (total, n) in entry.hour(hour).iter_mut().zip(counts) {
                    *total += n;
                }
            }
            entry.last_used = entry.last_used.max(old.last_used);
        }
        for (k, b) in other.credits {
            self.credits.entry(k).or_insert(b);
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub valid: u64,
    pub invalid: u64,
    pub rate_limited: u64,
    pub refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_stay_by_hour_and_merge() {
        let mut u = KeyUsage::new(Arc::from("prj_1"));
        u.hour(7200)[0] += 2;
        u.hour(3600)[1] += 1;
        u.hour(7200)[0] += 1;
        u.hour(10800)[3] += 4;
        let seen: Vec<_> = u.hours.iter().copied().collect();
        assert_eq!(
            seen,
            [
                (7200, [3, 0, 0, 0]),
                (3600, [0, 1, 0, 0]),
                (10800, [0, 0, 0, 4])
            ]
        );
        let mut newer = UsageBatch::default();
        newer
            .keys
            .entry(Arc::from("key_1"))
            .or_insert_with(|| KeyUsage::new(Arc::from("prj_1")))
            .hour(3600)[1] += 5;
        let mut older = UsageBatch::default();
        older.keys.insert(Arc::from("key_1"), u);
        newer.merge_older(older);
        let merged: Vec<_> = newer.keys["key_1"].hours.iter().copied().collect();
        assert_eq!(
            merged,
            [
                (3600, [0, 6, 0, 0]),
                (7200, [3, 0, 0, 0]),
                (10800, [0, 0, 0, 4])
            ]
        );
    }
}
