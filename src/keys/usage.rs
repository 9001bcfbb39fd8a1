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

/// Keys in a pending batch past which the flush task starts writing at once
/// rather than at the next interval (checks of many distinct keys).
pub const BATCH_KEYS: usize = 8192;

/// Keys written per transaction. A flush takes its keys out of the pending
/// batch a chunk at a time, so the memory it holds beyond the batch itself
/// is one chunk (and its copy for a retry, about 2 MiB), not a second copy
/// of a batch of 100,000 keys: under checks of many distinct keys a batch
/// takes about 15 MiB, and taking it whole (with its copy) while the next
/// one filled up held three of them at once, over the memory bound of SPEC
/// section 13. Smaller chunks mean more commits (each one synced to disk
/// with `synchronous=FULL`), which slows a large flush down.
pub const FLUSH_CHUNK_KEYS: usize = 8192;

#[derive(Default)]
pub struct Usage {
    pending: Mutex<UsageBatch>,
    /// One flush at a time.
    flush_lock: tokio::sync::Mutex<()>,
    /// Woken when the pending batch reaches [`BATCH_KEYS`] keys.
    full: tokio::sync::Notify,
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
            None => {
                if p.keys.len() + 1 == BATCH_KEYS {
                    self.full.notify_one();
                }
                p.keys
                    .entry(key_id.clone())
                    .or_insert_with(|| KeyUsage::new(project_id.clone()))
            }
        };
        entry.hour(hour)[kind as usize] += 1;
        if used {
            entry.last_used = Some(now);
        }
    }

    /// Waits until the pending batch has [`BATCH_KEYS`] keys (the flush
    /// task then writes it before its interval is over).
    pub async fn filled(&self) {
        self.full.notified().await
    }

    /// A successful use that is not a verification (Gatehouse's own API).
    pub fn touch(&self, key_id: &Arc<str>, project_id: &Arc<str>, now: i64) {
        let mut p = self.pending.lock().expect("usage lock");
        if p.keys.len() + 1 == BATCH_KEYS && !p.keys.contains_key(&**key_id) {
            self.full.notify_one();
        }
        p.keys
            .entry(key_id.clone())
            .or_insert_with(|| KeyUsage::new(project_id.clone()))
            .last_used = Some(now);
    }

    /// Writes everything pending when it starts, a chunk of keys per
    /// transaction (counts are increments, so each chunk stands alone). On
    /// failure the chunk goes back into the batch for the next try, and
    /// the chunks already written stay written.
    pub async fn flush(&self, repo: &dyn UsageRepo) -> Result<(), StoreError> {
        let _guard = self.flush_lock.lock().await;
        // What arrives meanwhile waits for the next flush: a flush ends.
        let mut budget = self.pending.lock().expect("usage lock").keys.len().max(1);
        while budget > 0 {
            let chunk = {
                let mut p = self.pending.lock().expect("usage lock");
                if p.is_empty() {
                    break;
                }
                let n = budget.min(FLUSH_CHUNK_KEYS);
                budget -= n;
                take_chunk(&mut p, n)
            };
            if let Err((e, chunk)) = write_chunk(repo, chunk).await {
                self.pending.lock().expect("usage lock").merge_older(chunk);
                return Err(e);
            }
        }
        // A burst of distinct keys grew the table; give the room back once
        // the traffic no longer needs it.
        let mut p = self.pending.lock().expect("usage lock");
        let keep = p.keys.len().max(BATCH_KEYS);
        if p.keys.capacity() > 4 * keep {
            p.keys.shrink_to(keep);
        }
        Ok(())
    }
}

/// Writes a chunk, trying again (twice at most, after a few milliseconds)
/// when the database refused it for the moment: a deadlock with another
/// node's flush, or a lock held past the busy timeout. The transaction was
/// undone then, so writing the chunk again counts nothing twice.
async fn write_chunk(
    repo: &dyn UsageRepo,
    mut chunk: UsageBatch,
) -> Result<(), (StoreError, UsageBatch)> {
    let mut tries = 0;
    loop {
        match repo.write_usage(chunk).await {
            Ok(()) => return Ok(()),
            Err((e, back)) if tries < 2 && busy(&e) => {
                tries += 1;
                chunk = back;
                let pause = 10 + fastrand::u64(..40);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(failed) => return Err(failed),
        }
    }
}

/// Whether the database refused the work only for the moment.
fn busy(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Contended
            | StoreError::Unavailable {
                kind: crate::store::Unavailable::Busy,
                ..
            }
    )
}

/// Moves up to `n` keys' usage (and every pending credit balance) out of
/// `batch` into a batch of their own.
fn take_chunk(batch: &mut UsageBatch, n: usize) -> UsageBatch {
    let mut chunk = UsageBatch {
        credits: std::mem::take(&mut batch.credits),
        ..UsageBatch::default()
    };
    if batch.keys.len() <= n {
        chunk.keys = std::mem::take(&mut batch.keys);
        return chunk;
    }
    let ids: Vec<Arc<str>> = batch.keys.keys().take(n).cloned().collect();
    chunk.keys.reserve(ids.len());
    for id in ids {
        if let Some(usage) = batch.keys.remove(&id) {
            chunk.keys.insert(id, usage);
        }
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::UsageCounts;
    use crate::store::{KeyId, ProjectId, StoreResult, Unavailable};

    /// A usage repository that keeps what it is given and fails the
    /// writes numbered in `fail`.
    struct Recorder {
        chunks: Mutex<Vec<UsageBatch>>,
        calls: Mutex<usize>,
        fail: Vec<usize>,
        refusal: Unavailable,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Recorder {
                chunks: Mutex::default(),
                calls: Mutex::default(),
                fail: vec![],
                refusal: Unavailable::Busy,
            }
        }
    }

    #[async_trait::async_trait]
    impl UsageRepo for Recorder {
        async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)> {
            let call = {
                let mut calls = self.calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            if self.fail.contains(&call) {
                let e = StoreError::Unavailable {
                    kind: self.refusal,
                    cause: "test".into(),
                };
                return Err((e, batch));
            }
            self.chunks.lock().unwrap().push(batch);
            Ok(())
        }
        async fn usage_series(
            &self,
            _: ProjectId,
            _: Option<KeyId>,
            _: i64,
            _: i64,
            _: i64,
        ) -> StoreResult<Vec<(i64, UsageCounts)>> {
            Ok(vec![])
        }
        async fn project_verifications_since(&self, _: ProjectId, _: i64) -> StoreResult<u64> {
            Ok(0)
        }
    }

    fn valid_counts(chunks: &[UsageBatch]) -> u64 {
        chunks
            .iter()
            .flat_map(|c| c.keys.values())
            .flat_map(|u| u.hours.iter())
            .map(|(_, c)| c[0])
            .sum()
    }

    #[tokio::test]
    async fn a_chunk_refused_for_the_moment_is_written_again() {
        let usage = Usage::default();
        let project: Arc<str> = Arc::from("prj_1");
        usage.record(&Arc::from("key_1"), &project, UsageKind::Valid, 7200, true);
        // The first write is refused as busy (a deadlock), the second lands.
        let repo = Recorder {
            fail: vec![1],
            ..Recorder::default()
        };
        usage.flush(&repo).await.unwrap();
        let chunks = repo.chunks.lock().unwrap().clone();
        assert_eq!(chunks.len(), 1);
        assert_eq!(valid_counts(&chunks), 1);
        // Refused three times in a row: kept for the next flush.
        let usage = Usage::default();
        usage.record(&Arc::from("key_2"), &project, UsageKind::Valid, 7200, true);
        let repo = Recorder {
            fail: vec![1, 2, 3],
            ..Recorder::default()
        };
        assert!(usage.flush(&repo).await.is_err());
        usage.flush(&repo).await.unwrap();
        assert_eq!(valid_counts(&repo.chunks.lock().unwrap()), 1);
    }

    #[tokio::test]
    async fn a_flush_writes_in_chunks_and_keeps_a_failed_chunk() {
        let usage = Usage::default();
        let project: Arc<str> = Arc::from("prj_1");
        let n = 2 * FLUSH_CHUNK_KEYS + 5;
        let ids: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("key_{i}"))).collect();
        for id in &ids {
            usage.record(id, &project, UsageKind::Valid, 7200, true);
        }
        // The second chunk fails: the first stays written, the rest waits.
        let repo = Recorder {
            fail: vec![2],
            refusal: Unavailable::CannotWrite,
            ..Recorder::default()
        };
        assert!(usage.flush(&repo).await.is_err());
        let written = repo.chunks.lock().unwrap().clone();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].keys.len(), FLUSH_CHUNK_KEYS);
        // Counted again meanwhile: added to what waits, never lost.
        usage.record(&ids[n - 1], &project, UsageKind::Valid, 7200, true);
        usage.flush(&repo).await.unwrap();
        let chunks = repo.chunks.lock().unwrap().clone();
        assert!(chunks.iter().all(|c| c.keys.len() <= FLUSH_CHUNK_KEYS));
        let keys: std::collections::HashSet<&str> = chunks
            .iter()
            .flat_map(|c| c.keys.keys().map(|k| &**k))
            .collect();
        assert_eq!(keys.len(), n, "every key written once");
        assert_eq!(valid_counts(&chunks), n as u64 + 1);
        usage.flush(&repo).await.unwrap();
        assert_eq!(
            repo.chunks.lock().unwrap().len(),
            chunks.len(),
            "nothing left"
        );
    }
}
