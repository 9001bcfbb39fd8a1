//! The key repository: what the product does with stored API keys, behind
//! one interface both backends implement. Every mutating method is one
//! transaction that also writes the change's effects and its change-feed
//! entry.

use async_trait::async_trait;

use super::effects::Effects;
use super::{KeyHash, KeyId, ProjectId, StoreResult};
use crate::keys::events::RotationRefusal;
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

/// A position in the key change feed's commit order: every entry that
/// becomes visible after a read returned this horizon is ordered at or
/// after it.
///
/// The order is the backend's, not the entry ids': on PostgreSQL an entry
/// takes its id when it is inserted but becomes visible when its
/// transaction commits, so a reader that follows ids alone skips an entry
/// that took its id first and committed last. There the order is the
/// writing transaction's id and the horizon the oldest transaction still
/// running when the read's snapshot was taken (what a transactional outbox
/// follows). SQLite has one writer at a time, so ids are the commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedHorizon(pub i64);

/// One change-feed entry: the key it names, its id (unique, for telling
/// entries apart) and its place in the commit order ([`FeedHorizon`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub id: i64,
    pub order: i64,
    pub key_hash: KeyHash,
}

/// What one read of the change feed found: every committed entry ordered
/// at or after the horizon it was asked from (so entries near the horizon
/// come again in later reads: the reader remembers what it applied), and
/// the horizon to read from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRead {
    pub entries: Vec<FeedEntry>,
    pub next: FeedHorizon,
}

/// A live subscription to the key change feed (PostgreSQL's LISTEN).
#[async_trait]
pub trait KeyChangeSubscription: Send {
    /// Returns when changes may have been published, or after `timeout`
    /// once the subscription was found alive. `Err`: the subscription is
    /// lost (subscribe again, then catch up from the rows).
    async fn wait(&mut self, timeout: std::time::Duration) -> StoreResult<()>;
}

#[async_trait]
pub trait KeyRepo: super::Clocked + Send + Sync {
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
    /// Where a reader with an empty cache starts: no entry committed from
    /// now on can be ordered before this horizon.
    async fn key_feed_horizon(&self) -> StoreResult<FeedHorizon>;
    /// Every committed change-feed entry at or after `from`, and the next
    /// horizon (see [`FeedRead`]). Reads one consistent snapshot.
    async fn read_key_changes(&self, from: FeedHorizon) -> StoreResult<FeedRead>;
    /// Forgets change-feed entries older than `before` (epoch seconds).
    async fn prune_key_changes(&self, before: i64) -> StoreResult<usize>;
}

/// What a rotation did.
#[derive(Debug)]
pub enum Rotated {
    /// `old` as it is now (revoked, or expiring after the grace), `new`, and
    /// the predecessor of `old` whose grace this rotation ended, if any.
    Done {
        old: Box<KeyRecord>,
        new: Box<KeyRecord>,
        ended_grace: Option<Box<KeyRecord>>,
    },
    NotFound,
    Refused(RotationRefusal),
}

/// Filters of the key list.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    pub include_inactive: bool,
    pub owner_id: Option<String>,
}
