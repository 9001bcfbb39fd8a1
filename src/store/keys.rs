//! The key repository: what the product does with stored API keys, behind
//! one interface both backends implement. Every mutating method is one
//! transaction that also writes the change's effects and its change-feed
//! entry.

use async_trait::async_trait;

use super::effects::Effects;
use super::{KeyHash, KeyId, ProjectId, StoreResult};
use crate::db::keys::{KeyFilter, Rotated};
use crate::keys::record::KeyRecord;

/// Applies an edit to a key (its `updated_at` already set) and returns the
/// effects to write with it.
pub type KeyChange = Box<dyn FnOnce(&mut KeyRecord) -> Effects + Send>;
/// The effects of a rotation, given the old key, the new one and the
/// predecessor whose grace it ended.
pub type RotationEffects =
    Box<dyn FnOnce(&KeyRecord, &KeyRecord, Option<&KeyRecord>) -> Effects + Send>;
/// The effects of revoking a reported key.
pub type LeakEffects = Box<dyn FnOnce(&KeyRecord) -> Effects + Send>;
/// The effects of importing one key.
pub type ImportEffects = Box<dyn Fn(&KeyRecord) -> Effects + Send>;

/// A live subscription to the key change feed (PostgreSQL's LISTEN).
#[async_trait]
pub trait KeyChangeSubscription: Send {
    /// Returns when changes may have been published, or after `timeout`
    /// once the subscription was found alive. `Err`: the subscription is
    /// lost (subscribe again, then catch up from the rows).
    async fn wait(&mut self, timeout: std::time::Duration) -> StoreResult<()>;
}

#[async_trait]
pub trait KeyRepo: Send + Sync {
    async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>>;
    /// A key by id, whatever its project.
    async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    /// A key of a project.
    async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    async fn keys_page(
        &self,
        project: ProjectId,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<KeyRecord>, i64)>;
    /// `None` when the project already has `max_keys` active keys.
    async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> StoreResult<Option<KeyRecord>>;
    async fn update_key(
        &self,
        project: ProjectId,
        id: KeyId,
        change: KeyChange,
    ) -> StoreResult<Option<KeyRecord>>;
    async fn rotate_key(
        &self,
        project: ProjectId,
        old: KeyId,
        new: KeyRecord,
        old_expires_at: Option<i64>,
        max_keys: Option<u64>,
        effects: RotationEffects,
    ) -> StoreResult<Rotated>;
    /// `None` when unknown; else the key and whether this call revoked it.
    async fn revoke_leaked(
        &self,
        hash: KeyHash,
        effects: LeakEffects,
    ) -> StoreResult<Option<(KeyRecord, bool)>>;
    /// All or nothing; `Err` names the first duplicate.
    async fn import_keys(
        &self,
        keys: Vec<KeyRecord>,
        effects: ImportEffects,
    ) -> StoreResult<Result<usize, String>>;
    async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>>;
    /// Keys of the project that are neither revoked nor expired (what
    /// `max_keys` counts).
    async fn count_active_keys(&self, project: ProjectId) -> StoreResult<i64>;
    /// Subscribes to change-feed announcements; `None` when the backend has
    /// none (SQLite: the feed is read on a timer).
    async fn subscribe_key_changes(&self) -> StoreResult<Option<Box<dyn KeyChangeSubscription>>>;
    /// The newest change-feed entry (0 when empty).
    async fn last_key_change(&self) -> StoreResult<i64>;
    async fn key_changes_since(&self, after: i64, limit: i64) -> StoreResult<Vec<(i64, KeyHash)>>;
    /// Forgets change-feed entries older than `before` (epoch seconds).
    async fn prune_key_changes(&self, before: i64) -> StoreResult<usize>;
}
