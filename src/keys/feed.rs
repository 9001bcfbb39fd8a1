//! Following the key change feed: every change that can make a key refuse
//! is written to `key_changes` in the transaction that makes it (see
//! `db::keys`, `store::postgres::keys`). This task reads new entries and
//! drops this node's cached copy of each key named (its window and balance
//! are kept), so a change made by another node or by `gatehouse keys
//! revoke` is refused here too.
//!
//! On PostgreSQL the node also listens (`LISTEN` on a connection of its
//! own, `application_name = gatehouse-listen`) for the notification each
//! entry sends when its transaction commits, and reads at once: a change
//! reaches every node in milliseconds. Without notifications (SQLite, or
//! while the subscription is down) it reads every [`POLL_INTERVAL`]. After
//! the subscription is lost it subscribes again and catches up from the
//! last entry it read; meanwhile [`FeedHealth`] stops vouching for cached
//! keys older than `cluster.max_staleness_ms`.
//!
//! [`FeedHealth`]: super::feed_health::FeedHealth

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::store::KeyStore;
use crate::store::{Store, StoreError};

/// How often the feed is read when nothing is announced.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Entries read per round; more are read at once in the next round.
const BATCH: i64 = 1000;
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
    let mut last = loop {
        let started = Instant::now();
        match store.last_key_change().await {
            Ok(last) => {
                // Nothing before this point can be in the (empty) cache.
                feed.current_as_of(started);
                break last;
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
            match read_to_end(&*store, &keys, &mut last).await {
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

/// Reads every entry after `last`, dropping the cached keys named; marks
/// the feed current as of when the read started.
async fn read_to_end(store: &dyn Store, keys: &KeyStore, last: &mut i64) -> Result<(), StoreError> {
    loop {
        let started = Instant::now();
        let changes = store.key_changes_since(*last, BATCH).await?;
        let full = changes.len() as i64 >= BATCH;
        for (id, hash) in changes {
            keys.invalidate(&hash.0);
            *last = id;
        }
        if !full {
            keys.feed().current_as_of(started);
            return Ok(());
        }
    }
}

async fn prune(store: &dyn Store, keys: &KeyStore) {
    let live = keys.prune_idle();
    tracing::debug!(live, "idle key state pruned");
    let before = crate::types::now() - KEEP_SECS;
    if let Err(e) = store.prune_key_changes(before).await {
        tracing::debug!(error = %e, "key change feed: pruning failed");
    }
}
