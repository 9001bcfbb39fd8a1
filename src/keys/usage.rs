//! Write-behind usage: verification counts and `last_used_at` are
//! aggregated in memory and written in one transaction every
//! `usage.flush_interval_secs` and on graceful shutdown, as increments (so
//! the counts of several processes add up). A failed write is merged back
//! and retried, so no count is lost while the process lives. Credit
//! balances are not written here: they are spent in storage directly
//! ([`crate::store::spend`]).

use std::sync::{Arc, Mutex};

use crate::store::usage::UsageRepo;
use crate::store::usage::{KeyUsage, UsageBatch};
use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKind {
    Valid = 0,
    Invalid = 1,
    RateLimited = 2,
    Refused = 3,
}

#[derive(Default)]
pub struct Usage {
    pending: Mutex<UsageBatch>,
    /// One flush at a time.
    flush_lock: tokio::sync::Mutex<()>,
}

impl Usage {
    pub fn record(
        &self,
        key_id: &Arc<str>,
        project_id: &Arc<str>,
        kind: UsageKind,
        now: i64,
        used: bool,
    ) {
        let hour = now - now.rem_euclid(3600);
        let mut p = self.pending.lock().expect("usage lock");
        let entry = match p.keys.get_mut(&**key_id) {
            Some(entry) => entry,
            None => p
                .keys
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(project_id.clone())),
        };
        entry.hour(hour)[kind as usize] += 1;
        if used {
            entry.last_used = Some(now);
        }
    }

    /// A successful use that is not a verification (Gatehouse's own API).
    pub fn touch(&self, key_id: &Arc<str>, project_id: &Arc<str>, now: i64) {
        let mut p = self.pending.lock().expect("usage lock");
        p.keys
            .entry(key_id.clone())
            .or_insert_with(|| KeyUsage::new(project_id.clone()))
            .last_used = Some(now);
    }

    /// Writes everything pending. On failure the batch is kept for the next try.
    pub async fn flush(&self, repo: &dyn UsageRepo) -> Result<(), StoreError> {
        let _guard = self.flush_lock.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().expect("usage lock"));
        if batch.is_empty() {
            return Ok(());
        }
        let result = repo.write_usage(batch).await;
        let out = match result {
            Ok(()) => Ok(()),
            Err((e, batch)) => {
                let mut p = self.pending.lock().expect("usage lock");
                let newer = std::mem::take(&mut *p);
                *p = batch;
                let mut merged = newer;
                merged.merge_older(std::mem::take(&mut *p));
                *p = merged;
                Err(e)
            }
        };
        out
    }
}
