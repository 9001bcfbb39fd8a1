//! Following the key change feed: every change that can make a key refuse
//! is written to `key_changes` in the transaction that makes it (see
//! `db::keys`). A running server reads new entries every
//! [`POLL_INTERVAL`] and drops its cached copy of each key named, so a
//! revocation made by another process (`gatehouse keys revoke`) is refused
//! here within a second. The key's window and balance are kept.

use std::time::Duration;

use actix_web::web;

use crate::state::AppState;

/// How often the feed is read: a revocation by another process takes
/// effect within this, plus one read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Entries read per round; more wait for the next round.
const BATCH: i64 = 1000;
/// Entries older than this are pruned: every server has read them.
const KEEP_SECS: i64 = 86_400;
/// Idle live state (windows and balances nothing uses) is forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

pub async fn run(state: web::Data<AppState>) {
    let mut last = loop {
        match state.store.last_key_change().await {
            Ok(last) => break last,
            Err(e) => {
                tracing::warn!(error = %e, "key change feed: cannot read its position; retrying");
                tokio::time::sleep(POLL_INTERVAL * 4).await;
            }
        }
    };
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tick.tick().await;
        match state.store.key_changes_since(last, BATCH).await {
            Ok(changes) => {
                if failing {
                    tracing::info!("key change feed: reading again");
                    failing = false;
                }
                for (id, hash) in changes {
                    state.keys.invalidate(&hash.0);
                    last = id;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "key change feed: read failed; will retry");
                    failing = true;
                }
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            let live = state.keys.prune_idle();
            tracing::debug!(live, "idle key state pruned");
            let before = crate::types::now() - KEEP_SECS;
            if let Err(e) = state.store.prune_key_changes(before).await {
                tracing::debug!(error = %e, "key change feed: pruning failed");
            }
        }
    }
}
