//! Following the key change feed: every change that can make a key refuse
//! is written to `key_changes` in the transaction that makes it (see
//! `store::sqlite::keys`, `store::postgres::keys`). This task reads new entries and
//! drops this node's cached copy of each key named (its window and balance
//! are kept), so a change made by another node or by `gatehouse keys
//! revoke` is refused here too.
//!
//! On PostgreSQL the node also listens (`LISTEN` on a connection of its
//! own, `application_name = gatehouse-listen`) for the notification each
//! entry sends when its transaction commits, and reads at once: a change
//! reaches every node in milliseconds. Without notifications (SQLite, or
//! while the subscription is down) it reads every [`POLL_INTERVAL`]. After
//! the subscription is lost it subscribes again and catches up from where
//! it stood; meanwhile [`FeedHealth`] stops vouching for cached keys older
//! than `cluster.max_staleness_ms`.
//!
//! Entries are followed in commit order, not id order ([`FeedHorizon`]):
//! each read takes every entry at or after the horizon of the previous
//! one, and a [`FeedCursor`] remembers which of those it already applied.
//! A change whose transaction took its id first and committed last is read
//! when it commits, on startup, in normal running and after a reconnect.
//!
//! [`FeedHealth`]: super::feed_health::FeedHealth

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::store::KeyStore;
use crate::store::keys::{FeedHorizon, FeedRead};
use crate::store::{KeyHash, Store, StoreError};

/// How often the feed is read when nothing is announced.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Entries older than this are pruned: every node has read them.
const KEEP_SECS: i64 = 86_400;
/// Idle live state (windows and balances nothing uses) is forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Waits between attempts to subscribe again, doubling up to the last.
const RESUBSCRIBE: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// Follows the key change feed of `store` into the cache `keys`, until the
/// server stops.
pub async fn run(store: Arc<dyn Store>, keys: Arc<KeyStore>) {
    let feed = keys.feed();
    let mut cursor = loop {
        let started = Instant::now();
        match store.key_feed_horizon().await {
            Ok(horizon) => {
                // Nothing before this point can be in the (empty) cache.
                feed.current_as_of(started);
                break FeedCursor::new(horizon);
            }
            Err(e) => {
                tracing::warn!(error = %e, "key change feed: cannot read its position; retrying");
                tokio::time::sleep(POLL_INTERVAL * 4).await;
            }
        }
    };
    let mut last_prune = Instant::now();
    let mut failures = 0usize;
    loop {
        // Subscribe first, then catch up: what commits after the
        // subscription is announced, what committed before is in the rows.
        let mut subscription = match store.subscribe_key_changes().await {
            Ok(s) => s,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "key change feed: cannot subscribe; cached keys are re-read after cluster.max_staleness_ms until it can");
                }
                feed.set_following(false);
                tokio::time::sleep(RESUBSCRIBE[failures.min(RESUBSCRIBE.len() - 1)]).await;
                failures += 1;
                continue;
            }
        };
        if subscription.is_some() && failures > 0 {
            tracing::info!("key change feed: subscribed again; catching up");
        }
        let mut reading_failed = false;
        loop {
            match read_to_end(&*store, &keys, &mut cursor).await {
                Ok(()) => {
                    if reading_failed {
                        tracing::info!("key change feed: reading again");
                        reading_failed = false;
                    }
                    if subscription.is_some() {
                        feed.set_following(true);
                    }
                }
                Err(e) => {
                    if !reading_failed {
                        tracing::warn!(error = %e, "key change feed: read failed; will retry");
                        reading_failed = true;
                    }
                }
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                prune(&*store, &keys).await;
            }
            match subscription.as_mut() {
                None => tokio::time::sleep(POLL_INTERVAL).await,
                Some(sub) => {
                    if let Err(e) = sub.wait(POLL_INTERVAL).await {
                        tracing::warn!(error = %e, "key change feed: subscription lost; subscribing again");
                        feed.set_following(false);
                        failures = 1;
                        break;
                    }
                }
            }
        }
    }
}

/// Reads every entry the cursor has not applied, dropping the cached keys
/// named; marks the feed current as of when the read started.
async fn read_to_end(
    store: &dyn Store,
    keys: &KeyStore,
    cursor: &mut FeedCursor,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let read = store.read_key_changes(cursor.horizon()).await?;
    for hash in cursor.take_new(read) {
        keys.invalidate(&hash.0);
    }
    keys.feed().current_as_of(started);
    Ok(())
}

/// Where a reader stands in the change feed: the horizon to read from and
/// the entries at or after it that were already applied (each read returns
/// them again until the horizon passes them). Kept across reconnects, so a
/// node catches up from exactly where it stood.
#[derive(Debug)]
pub struct FeedCursor {
    horizon: FeedHorizon,
    /// Entry id -> its place in the commit order.
    applied: HashMap<i64, i64>,
}

impl FeedCursor {
    pub fn new(horizon: FeedHorizon) -> Self {
        FeedCursor {
            horizon,
            applied: HashMap::new(),
        }
    }

    pub fn horizon(&self) -> FeedHorizon {
        self.horizon
    }

    /// The keys named by entries of `read` not applied before, in the
    /// order read; moves the cursor to the read's horizon.
    pub fn take_new(&mut self, read: FeedRead) -> Vec<KeyHash> {
        let mut new = Vec::new();
        for entry in read.entries {
            if self.applied.insert(entry.id, entry.order).is_none() {
                new.push(entry.key_hash);
            }
        }
        self.horizon = read.next;
        let horizon = self.horizon.0;
        self.applied.retain(|_, order| *order >= horizon);
        new
    }
}

async fn prune(store: &dyn Store, keys: &KeyStore) {
    let live = keys.prune_idle();
    tracing::debug!(live, "idle key state pruned");
    let before = store.clock().now() - KEEP_SECS;
    if let Err(e) = store.prune_key_changes(before).await {
        tracing::debug!(error = %e, "key change feed: pruning failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::FeedEntry;

    fn entry(id: i64, order: i64) -> FeedEntry {
        FeedEntry {
            id,
            order,
            key_hash: KeyHash([id as u8; 32]),
        }
    }

    fn read(entries: Vec<FeedEntry>, next: i64) -> FeedRead {
        FeedRead {
            entries,
            next: FeedHorizon(next),
        }
    }

    fn ids(hashes: Vec<KeyHash>) -> Vec<u8> {
        hashes.into_iter().map(|h| h.0[0]).collect()
    }

    #[test]
    fn an_entry_that_committed_after_a_later_one_is_still_applied() {
        // Transaction 100 writes entry 41 and stays open; transaction 101
        // writes entry 42 and commits. The first read sees only 42 and
        // keeps its horizon at 100, the oldest running transaction.
        let mut cursor = FeedCursor::new(FeedHorizon(100));
        assert_eq!(ids(cursor.take_new(read(vec![entry(42, 101)], 100))), [42]);
        assert_eq!(cursor.horizon(), FeedHorizon(100));
        // 100 commits: the next read returns both; only 41 is new.
        let both = vec![entry(41, 100), entry(42, 101)];
        assert_eq!(ids(cursor.take_new(read(both, 102))), [41]);
        assert_eq!(cursor.horizon(), FeedHorizon(102));
        assert!(
            cursor.applied.is_empty(),
            "entries behind the horizon are forgotten"
        );
    }

    #[test]
    fn applied_entries_are_remembered_only_while_reads_can_return_them() {
        let mut cursor = FeedCursor::new(FeedHorizon(10));
        let first = vec![entry(1, 10), entry(2, 12), entry(3, 15)];
        assert_eq!(ids(cursor.take_new(read(first, 12))), [1, 2, 3]);
        assert_eq!(cursor.applied.len(), 2, "entry 1 is behind the horizon");
        let again = vec![entry(2, 12), entry(3, 15), entry(4, 13)];
        assert_eq!(ids(cursor.take_new(read(again, 14))), [4]);
        let mut left: Vec<_> = cursor.applied.keys().copied().collect();
        left.sort();
        assert_eq!(left, [3]);
    }

    #[test]
    fn in_id_order_backends_each_entry_is_applied_once() {
        // SQLite: the order is the id and the horizon one past the newest.
        let mut cursor = FeedCursor::new(FeedHorizon(5));
        assert_eq!(
            ids(cursor.take_new(read(vec![entry(5, 5), entry(6, 6)], 7))),
            [5, 6]
        );
        assert_eq!(ids(cursor.take_new(read(vec![], 7))), Vec::<u8>::new());
        assert_eq!(ids(cursor.take_new(read(vec![entry(7, 7)], 8))), [7]);
        assert!(cursor.applied.is_empty());
    }
}
