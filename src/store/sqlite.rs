//! The SQLite backend behind the storage interface (today's `db::Db`).

use async_trait::async_trait;

use super::effects::Effects;
use super::keys::{ImportEffects, KeyChange, KeyRepo, LeakEffects, RotationEffects};
use super::{KeyHash, KeyId, ProjectId, StoreResult};
use crate::db::keys::{KeyFilter, Rotated};
use crate::db::Db;
use crate::keys::record::KeyRecord;

#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    pub fn new(db: Db) -> Self {
        SqliteStore { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[async_trait]
impl KeyRepo for SqliteStore {
    async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.find_key_by_hash(hash.0).await?)
    }

    async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.find_key_by_id(id.as_arc().clone()).await?)
    }

    async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self
            .db
            .key_by_id(project.to_string(), id.to_string())
            .await?)
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<KeyRecord>, i64)> {
        Ok(self
            .db
            .keys_page(project.to_string(), filter, offset, limit)
            .await?)
    }

    async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> StoreResult<Option<KeyRecord>> {
        Ok(self.db.create_key(key, max_keys, effects).await?)
    }

    async fn update_key(
        &self,
        project: ProjectId,
        id: KeyId,
        change: KeyChange,
    ) -> StoreResult<Option<KeyRecord>> {
        Ok(self
            .db
            .update_key(project.to_string(), id.to_string(), change)
            .await?)
    }

    async fn rotate_key(
        &self,
        project: ProjectId,
        old: KeyId,
        new: KeyRecord,
        old_expires_at: Option<i64>,
        max_keys: Option<u64>,
        effects: RotationEffects,
    ) -> StoreResult<Rotated> {
        Ok(self
            .db
            .rotate_key(
                project.to_string(),
                old.to_string(),
                new,
                old_expires_at,
                max_keys,
                effects,
            )
            .await?)
    }

    async fn revoke_leaked(
        &self,
        hash: KeyHash,
        effects: LeakEffects,
    ) -> StoreResult<Option<(KeyRecord, bool)>> {
        Ok(self.db.revoke_leaked(hash.0, effects).await?)
    }

    async fn import_keys(
        &self,
        keys: Vec<KeyRecord>,
        effects: ImportEffects,
    ) -> StoreResult<Result<usize, String>> {
        Ok(self.db.import_keys(keys, effects).await?)
    }

    async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>> {
        let db = self.db.clone();
        let hashes = tokio::task::spawn_blocking(move || db.imported_key_hashes())
            .await
            .map_err(|_| crate::db::DbError::TaskFailed)??;
        Ok(hashes.into_iter().map(KeyHash).collect())
    }

    async fn last_key_change(&self) -> StoreResult<i64> {
        Ok(self.db.last_key_change().await?)
    }

    async fn key_changes_since(&self, after: i64, limit: i64) -> StoreResult<Vec<(i64, KeyHash)>> {
        Ok(self
            .db
            .key_changes_since(after, limit)
            .await?
            .into_iter()
            .map(|(id, h)| (id, KeyHash(h)))
            .collect())
    }
}
