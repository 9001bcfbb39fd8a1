//! API keys in PostgreSQL: the row codec and the statements the key
//! repository is built from. Rows hold the same columns as SQLite's.

use super::{effects, PgError, PgStore};
use crate::store::effects::Effects;
use crate::store::key_record::KeyRecord;
use crate::store::keys::{
    plan_rotation, FeedEntry, FeedHorizon, FeedRead, ImportEffects, KeyChange, KeyFilter, KeyRepo,
    KeyRow, LeakEffects, Rotated, RotationEffects, RotationPlan, UnreadableColumn, KEY_COLUMNS,
};
use crate::store::{KeyHash, KeyId, ProjectId, StoreResult};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

fn unreadable(column: UnreadableColumn) -> PgError {
    PgError::Corrupt(format!("api_keys.{}", column.0))
}

/// A stored key from a row of [`KEY_COLUMNS`].
pub fn key_from(r: &Row) -> Result<KeyRecord, PgError> {
    KeyRow {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        key_hash: r.try_get(2)?,
        prefix: r.try_get(3)?,
        name: r.try_get(4)?,
        kind: r.try_get(5)?,
        environment: r.try_get(6)?,
        scopes: r.try_get(7)?,
        rate_limit: r.try_get(8)?,
        rate_window_secs: r.try_get(9)?,
        owner_id: r.try_get(10)?,
        credits_remaining: r.try_get(11)?,
        credits_refill_amount: r.try_get(12)?,
        credits_refill_interval: r.try_get(13)?,
        credits_period_start: r.try_get(14)?,
        allowed_ips: r.try_get(15)?,
        metadata: r.try_get(16)?,
        created_at: r.try_get(17)?,
        updated_at: r.try_get(18)?,
        last_used_at: r.try_get(19)?,
        expires_at: r.try_get(20)?,
        revoked_at: r.try_get(21)?,
        created_by: r.try_get(22)?,
        rotated_to: r.try_get(23)?,
    }
    .into_record()
    .map_err(unreadable)
}

/// Inserts a key row.
pub async fn insert_key(
    client: &impl GenericClient,
    k: &KeyRecord,
    imported: bool,
    rotated_from: Option<&str>,
) -> Result<(), PgError> {
    let row = KeyRow::of(k);
    client
        .execute(
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}, imported, rotated_from)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)"
            ),
            &[
                &row.id,
                &row.project_id,
                &row.key_hash,
                &row.prefix,
                &row.name,
                &row.kind,
                &row.environment,
                &row.scopes,
                &row.rate_limit,
                &row.rate_window_secs,
                &row.owner_id,
                &row.credits_remaining,
                &row.credits_refill_amount,
                &row.credits_refill_interval,
                &row.credits_period_start,
                &row.allowed_ips,
                &row.metadata,
                &row.created_at,
                &row.updated_at,
                &row.last_used_at,
                &row.expires_at,
                &row.revoked_at,
                &row.created_by,
                &row.rotated_to,
                &imported,
                &rotated_from,
            ],
        )
        .await?;
    Ok(())
}

/// Writes a key's settings back (the fields an edit, revocation or rotation changes).
pub async fn store_key(client: &impl GenericClient, k: &KeyRecord) -> Result<(), PgError> {
    let row = KeyRow::of(k);
    client
        .execute(
            "UPDATE api_keys SET name = $3, scopes = $4, rate_limit = $5, rate_window_secs = $6,
                owner_id = $7, credits_remaining = $8, credits_refill_amount = $9,
                credits_refill_interval = $10, credits_period_start = $11, allowed_ips = $12,
                metadata = $13, expires_at = $14, revoked_at = $15, updated_at = $16,
                rotated_to = $17
             WHERE project_id = $1 AND id = $2",
            &[
                &row.project_id,
                &row.id,
                &row.name,
                &row.scopes,
                &row.rate_limit,
                &row.rate_window_secs,
                &row.owner_id,
                &row.credits_remaining,
                &row.credits_refill_amount,
                &row.credits_refill_interval,
                &row.credits_period_start,
                &row.allowed_ips,
                &row.metadata,
                &row.expires_at,
                &row.revoked_at,
                &row.updated_at,
                &row.rotated_to,
            ],
        )
        .await?;
    Ok(())
}

/// A key by hash. With `lock`, the row stays locked until the transaction ends.
pub async fn key_by_hash(
    client: &impl GenericClient,
    hash: &[u8; 32],
    lock: bool,
) -> Result<Option<KeyRecord>, PgError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    client
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1{lock}"),
            &[&&hash[..]],
        )
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
}

/// A key of a project by id. With `lock`, the row stays locked until the
/// transaction ends.
pub async fn key_by_id(
    client: &impl GenericClient,
    project_id: &str,
    id: &str,
    lock: bool,
) -> Result<Option<KeyRecord>, PgError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    client
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 AND id = $2{lock}"),
            &[&project_id, &id],
        )
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
}

/// Keys of the project that are neither revoked nor expired at `now`.
pub async fn active_keys(
    client: &impl GenericClient,
    project_id: &str,
    now: i64,
) -> Result<i64, PgError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2)",
            &[&project_id, &now],
        )
        .await?
        .try_get(0)?)
}

/// Locks a project's row for the rest of the transaction: the statements
/// that count its keys before adding one (`max_keys`) take turns on it.
pub async fn lock_project(client: &impl GenericClient, project_id: &str) -> Result<bool, PgError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM projects WHERE id = $1 FOR UPDATE",
            &[&project_id],
        )
        .await?
        .is_some())
}

/// Records that a key changed in a way that can make it refuse, for every
/// node's cache (written in the transaction of the change).
pub async fn publish_change(
    client: &impl GenericClient,
    hash: &[u8; 32],
    now: i64,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO key_changes (key_hash, changed_at) VALUES ($1, $2)",
            &[&&hash[..], &now],
        )
        .await?;
    Ok(())
}

/// Inserts `key` with its effects unless its project already has
/// `max_keys` active keys (then `None`). The project row is locked first,
/// so concurrent creates on any number of nodes take turns: the count and
/// the insert can never interleave (the `max_keys` race).
pub async fn create_key(
    client: &mut deadpool_postgres::Client,
    key: &KeyRecord,
    max_keys: Option<u64>,
    effects: &Effects,
) -> Result<Option<()>, PgError> {
    let tx = client.transaction().await?;
    if !lock_project(&tx, &key.project_id).await? {
        return Ok(None);
    }
    if let Some(max) = max_keys {
        let active = active_keys(&tx, &key.project_id, key.created_at).await?;
        if u64::try_from(active).unwrap_or(0) >= max {
            return Ok(None);
        }
    }
    insert_key(&tx, key, false, None).await?;
    effects::write(&tx, effects, key.created_at).await?;
    tx.commit().await?;
    Ok(Some(()))
}

/// Applies `change` to a key of the project under a row lock (its
/// `updated_at` already set), stores it with the effects `change` returns
/// and publishes the change, in one transaction.
pub async fn update_key<F>(
    client: &mut deadpool_postgres::Client,
    project_id: &str,
    id: &str,
    change: F,
    now: i64,
) -> Result<Option<KeyRecord>, PgError>
where
    F: FnOnce(&mut KeyRecord) -> Effects,
{
    let tx = client.transaction().await?;
    let Some(mut key) = key_by_id(&tx, project_id, id, true).await? else {
        return Ok(None);
    };
    key.updated_at = now;
    let effects = change(&mut key);
    store_key(&tx, &key).await?;
    effects::write(&tx, &effects, now).await?;
    publish_change(&tx, &key.hash, now).await?;
    tx.commit().await?;
    Ok(Some(key))
}

/// A rotation under the rules of [`check_rotation`]: the project row is
/// locked (rotations and creates of the project take turns, so `max_keys`
/// and "one successor" hold across nodes), then the old key's row.
#[allow(clippy::too_many_arguments)] // the trait method's arguments, plus the time
pub async fn rotate_key<F>(
    client: &mut deadpool_postgres::Client,
    project_id: &str,
    old_id: &str,
    new: KeyRecord,
    old_expires_at: Option<i64>,
    max_keys: Option<u64>,
    effects: F,
    now: i64,
) -> Result<Rotated, PgError>
where
    F: FnOnce(&KeyRecord, &KeyRecord, Option<&KeyRecord>) -> Effects,
{
    let tx = client.transaction().await?;
    if !lock_project(&tx, project_id).await? {
        return Ok(Rotated::NotFound);
    }
    let Some(old) = key_by_id(&tx, project_id, old_id, true).await? else {
        return Ok(Rotated::NotFound);
    };
    let predecessor = tx
        .query_opt(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 AND rotated_to = $2 FOR UPDATE"
            ),
            &[&project_id, &&*old.id],
        )
        .await?
        .as_ref()
        .map(key_from)
        .transpose()?;
    let active = active_keys(&tx, project_id, now).await?;
    let RotationPlan {
        old,
        new,
        ended_grace,
    } = match plan_rotation(old, predecessor, active, max_keys, new, old_expires_at, now) {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Rotated::Refused(refusal)),
    };
    if let Some(p) = &ended_grace {
        store_key(&tx, p).await?;
        publish_change(&tx, &p.hash, now).await?;
    }
    insert_key(&tx, &new, false, Some(&old.id)).await?;
    store_key(&tx, &old).await?;
    publish_change(&tx, &old.hash, now).await?;
    effects::write(&tx, &effects(&old, &new, ended_grace.as_ref()), now).await?;
    tx.commit().await?;
    Ok(Rotated::Done {
        old: Box::new(old),
        new: Box::new(new),
        ended_grace: ended_grace.map(Box::new),
    })
}

/// Revokes an active key found by hash (a leak report) under a row lock.
pub async fn revoke_leaked<F>(
    client: &mut deadpool_postgres::Client,
    hash: &[u8; 32],
    effects: F,
    now: i64,
) -> Result<Option<(KeyRecord, bool)>, PgError>
where
    F: FnOnce(&KeyRecord) -> Effects,
{
    let tx = client.transaction().await?;
    let Some(mut key) = key_by_hash(&tx, hash, true).await? else {
        return Ok(None);
    };
    if !key.is_active(now) {
        return Ok(Some((key, false)));
    }
    key.revoked_at = Some(now);
    key.updated_at = now;
    store_key(&tx, &key).await?;
    effects::write(&tx, &effects(&key), now).await?;
    publish_change(&tx, &key.hash, now).await?;
    tx.commit().await?;
    Ok(Some((key, true)))
}

/// Imports keys in one transaction; fails whole on a duplicate hash.
pub async fn import_keys<F>(
    client: &mut deadpool_postgres::Client,
    keys: &[KeyRecord],
    effects: F,
) -> Result<Result<usize, String>, PgError>
where
    F: Fn(&KeyRecord) -> Effects,
{
    let tx = client.transaction().await?;
    for (i, key) in keys.iter().enumerate() {
        match insert_key(&tx, key, true, None).await {
            Ok(()) => {}
            Err(PgError::Query(e))
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                return Ok(Err(format!(
                    "key {} (line {}): this hash is already stored",
                    key.prefix,
                    i + 1
                )));
            }
            Err(e) => return Err(e),
        }
        effects::write(&tx, &effects(key), key.created_at).await?;
    }
    tx.commit().await?;
    Ok(Ok(keys.len()))
}

/// One page of a project's keys, newest first, and the total.
pub async fn keys_page(
    client: &impl GenericClient,
    project_id: &str,
    filter: &KeyFilter,
    offset: i64,
    limit: i64,
    now: i64,
) -> Result<(Vec<KeyRecord>, i64), PgError> {
    let cond = "project_id = $1
         AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)))
         AND ($4::TEXT IS NULL OR owner_id = $4)";
    let total: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM api_keys WHERE {cond}"),
            &[
                &project_id,
                &filter.include_inactive,
                &now,
                &filter.owner_id,
            ],
        )
        .await?
        .try_get(0)?;
    let rows = client
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE {cond}
                 ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
            ),
            &[
                &project_id,
                &filter.include_inactive,
                &now,
                &filter.owner_id,
                &limit,
                &offset,
            ],
        )
        .await?;
    let keys = rows.iter().map(key_from).collect::<Result<Vec<_>, _>>()?;
    Ok((keys, total))
}

/// Hashes of keys imported from other services.
pub async fn imported_key_hashes(client: &impl GenericClient) -> Result<Vec<[u8; 32]>, PgError> {
    let rows = client
        .query("SELECT key_hash FROM api_keys WHERE imported", &[])
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<_, Vec<u8>>(0).ok())
        .filter_map(|h| <[u8; 32]>::try_from(h).ok())
        .collect())
}

/// The oldest transaction still running, as the change feed orders
/// entries (`key_changes.txid`): every entry committed from now on was
/// written by it or by a later one (see [`FeedHorizon`]).
///
/// [`FeedHorizon`]: crate::store::keys::FeedHorizon
const SNAPSHOT_HORIZON: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::BIGINT";

/// Where a reader with an empty cache starts.
pub async fn key_feed_horizon(client: &impl GenericClient) -> Result<i64, PgError> {
    Ok(client.query_one(SNAPSHOT_HORIZON, &[]).await?.try_get(0)?)
}

/// Entries read per page; a read takes every page of one snapshot.
const FEED_PAGE: i64 = 1000;

/// Every committed change-feed entry written by a transaction at or after
/// `from`, and the horizon of the snapshot they were read in, so an entry
/// whose transaction was still running then is read next time. One
/// repeatable-read transaction: the horizon and the rows come from the same
/// snapshot.
pub async fn read_key_changes(
    client: &mut deadpool_postgres::Object,
    from: i64,
) -> Result<FeedRead, PgError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let next: i64 = tx.query_one(SNAPSHOT_HORIZON, &[]).await?.try_get(0)?;
    let mut entries = Vec::new();
    let mut after_id = i64::MIN;
    loop {
        let rows = tx
            .query(
                "SELECT id, txid, key_hash FROM key_changes \
                 WHERE txid >= $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&from, &after_id, &FEED_PAGE],
            )
            .await?;
        let full = rows.len() as i64 >= FEED_PAGE;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            after_id = id;
            let hash: Vec<u8> = row.try_get(2)?;
            if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                entries.push(FeedEntry {
                    id,
                    order: row.try_get(1)?,
                    key_hash: KeyHash(hash),
                });
            }
        }
        if !full {
            break;
        }
    }
    tx.commit().await?;
    Ok(FeedRead {
        entries,
        next: FeedHorizon(next),
    })
}

#[async_trait]
impl KeyRepo for PgStore {
    async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>> {
        let client = self.client().await?;
        Ok(key_by_hash(&client, &hash.0, false).await?)
    }

    async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {} FROM api_keys WHERE id = $1", KEY_COLUMNS),
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.as_ref().map(key_from).transpose()?)
    }

    async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        let client = self.client().await?;
        Ok(key_by_id(&client, project.as_str(), id.as_str(), false).await?)
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<KeyRecord>, i64)> {
        let client = self.client().await?;
        Ok(keys_page(
            &client,
            project.as_str(),
            &filter,
            offset,
            limit,
            self.clock.now(),
        )
        .await?)
    }

    async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> StoreResult<Option<KeyRecord>> {
        let mut client = self.client().await?;
        Ok(create_key(&mut client, &key, max_keys, &effects)
            .await?
            .map(|()| key))
    }

    async fn update_key(
        &self,
        project: ProjectId,
        id: KeyId,
        change: KeyChange,
    ) -> StoreResult<Option<KeyRecord>> {
        let mut client = self.client().await?;
        Ok(update_key(
            &mut client,
            project.as_str(),
            id.as_str(),
            change,
            self.clock.now(),
        )
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
        let mut client = self.client().await?;
        Ok(rotate_key(
            &mut client,
            project.as_str(),
            old.as_str(),
            new,
            old_expires_at,
            max_keys,
            effects,
            self.clock.now(),
        )
        .await?)
    }

    async fn revoke_leaked(
        &self,
        hash: KeyHash,
        effects: LeakEffects,
    ) -> StoreResult<Option<(KeyRecord, bool)>> {
        let mut client = self.client().await?;
        Ok(revoke_leaked(&mut client, &hash.0, effects, self.clock.now()).await?)
    }

    async fn import_keys(
        &self,
        keys_to_import: Vec<KeyRecord>,
        effects: ImportEffects,
    ) -> StoreResult<Result<usize, String>> {
        let mut client = self.client().await?;
        Ok(import_keys(&mut client, &keys_to_import, effects).await?)
    }

    async fn subscribe_key_changes(
        &self,
    ) -> StoreResult<Option<Box<dyn crate::store::keys::KeyChangeSubscription>>> {
        let listener = super::listen::Listener::connect(&self.url).await?;
        Ok(Some(Box::new(listener)))
    }

    async fn count_active_keys(&self, project: ProjectId) -> StoreResult<i64> {
        let client = self.client().await?;
        Ok(active_keys(&client, project.as_str(), self.clock.now()).await?)
    }

    async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>> {
        let client = self.client().await?;
        Ok(imported_key_hashes(&client)
            .await?
            .into_iter()
            .map(KeyHash)
            .collect())
    }

    async fn key_feed_horizon(&self) -> StoreResult<FeedHorizon> {
        let client = self.client().await?;
        Ok(FeedHorizon(key_feed_horizon(&client).await?))
    }

    async fn prune_key_changes(&self, before: i64) -> StoreResult<usize> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM key_changes WHERE changed_at < $1", &[&before])
            .await
            .map_err(PgError::from)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn read_key_changes(&self, from: FeedHorizon) -> StoreResult<FeedRead> {
        let mut client = self.client().await?;
        Ok(read_key_changes(&mut client, from.0).await?)
    }
}
