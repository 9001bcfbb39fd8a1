//! Write-behind usage: verification counts, `last_used_at` and credit
//! balances are aggregated in memory and written in one transaction every
//! `usage.flush_interval_secs` and on graceful shutdown. A failed write is
//! merged back and retried, so no count is lost while the process lives.

use std::sync::{Arc, Mutex};

use crate::db::keys::{KeyUsage, UsageBatch};
use crate::keys::credits::Balance;
use crate::store::usage::UsageRepo;
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
    /// The batch being written, for credit balances read during the write.
    inflight: Mutex<Option<UsageBatch>>,
    /// One flush at a time; also held by credit edits (see `exclusive`).
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

    pub fn set_credits(&self, key_id: &Arc<str>, balance: Balance) {
        self.pending
            .lock()
            .expect("usage lock")
            .credits
            .insert(key_id.clone(), balance);
    }

    /// The newest balance not yet in storage, if any.
    pub fn unwritten_credits(&self, key_id: &str) -> Option<Balance> {
        if let Some(b) = self.pending.lock().expect("usage lock").credits.get(key_id) {
            return Some(*b);
        }
        self.inflight
            .lock()
            .expect("usage lock")
            .as_ref()
            .and_then(|b| b.credits.get(key_id).copied())
    }

    /// Forgets unwritten balances of a key whose credits were just set by an
    /// edit; hold the guard of [`Usage::exclusive`] around the edit.
    pub fn forget_credits(&self, key_id: &str) {
        self.pending
            .lock()
            .expect("usage lock")
            .credits
            .remove(key_id);
    }

    /// Excludes flushes while held (for edits that set balances directly).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flush_lock.lock().await
    }

    /// Writes everything pending. On failure the batch is kept for the next try.
    pub async fn flush(&self, repo: &dyn UsageRepo) -> Result<(), StoreError> {
        let _guard = self.flush_lock.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().expect("usage lock"));
        if batch.is_empty() {
            return Ok(());
        }
        *self.inflight.lock().expect("usage lock") = Some(batch.clone());
        let result = repo.write_usage(batch).await;
        let out = match result {
            Ok(()) => Ok(()),
            Err((e, batch)) => {
                let mut p = self.pending.lock().expect("usage lock");
                let newer = std::mem::take(&mut *p);
                *p = batch;
                // Newer balances win over the failed batch's.
                let mut merged = newer;
                merged.merge_older(std::mem::take(&mut *p));
                *p = merged;
                Err(e)
            }
        };
        *self.inflight.lock().expect("usage lock") = None;
        out
    }
}
