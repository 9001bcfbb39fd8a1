//! API keys in SQLite: the key repository and the key change feed.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{effects, DbError, DbResult, SqliteStore};
use crate::store::effects::Effects;
use crate::store::key_record::KeyRecord;
use crate::store::keys::{
    plan_rotation, FeedEntry, FeedHorizon, FeedRead, ImportEffects, KeyChange,
    KeyChangeSubscription, KeyFilter, KeyRepo, KeyRow, LeakEffects, Rotated, RotationEffects,
    RotationPlan, UnreadableColumn, KEY_COLUMNS,
};
use crate::store::{KeyHash, KeyId, ProjectId, StoreResult};

/// A stored key from a row of [`KEY_COLUMNS`].
fn key_from(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    KeyRow {
        id: r.get(0)?,
        project_id: r.get(1)?,
        key_hash: r.get(2)?,
        prefix: r.get(3)?,
        name: r.get(4)?,
        kind: r.get(5)?,
        environment: r.get(6)?,
        scopes: r.get(7)?,
        rate_limit: r.get(8)?,
        rate_window_secs: r.get(9)?,
        owner_id: r.get(10)?,
        credits_remaining: r.get(11)?,
        credits_refill_amount: r.get(12)?,
        credits_refill_interval: r.get(13)?,
        credits_period_start: r.get(14)?,
        allowed_ips: r.get(15)?,
        metadata: r.get(16)?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
        last_used_at: r.get(19)?,
        expires_at: r.get(20)?,
        revoked_at: r.get(21)?,
        created_by: r.get(22)?,
        rotated_to: r.get(23)?,
    }
    .into_record()
    .map_err(|UnreadableColumn(column)| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("api_keys.{column}").into(),
        )
    })
}

fn insert_key(
    conn: &Connection,
    k: &KeyRecord,
    imported: bool,
    rotated_from: Option<&str>,
) -> DbResult<()> {
    let row = KeyRow::of(k);
    conn.execute(
        &format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}, imported, rotated_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
        ),
        params![
            row.id,
            row.project_id,
            row.key_hash,
            row.prefix,
            row.name,
            row.kind,
            row.environment,
            row.scopes,
            row.rate_limit,
            row.rate_window_secs,
            row.owner_id,
            row.credits_remaining,
            row.credits_refill_amount,
            row.credits_refill_interval,
            row.credits_period_start,
            row.allowed_ips,
            row.metadata,
            row.created_at,
            row.updated_at,
            row.last_used_at,
            row.expires_at,
            row.revoked_at,
            row.created_by,
            row.rotated_to,
            imported,
            rotated_from,
        ],
    )?;
    Ok(())
}

fn key_by_id(conn: &Connection, project_id: &str, id: &str) -> DbResult<Option<KeyRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = ?1 AND id = ?2"),
            params![project_id, id],
            key_from,
        )
        .optional()?)
}

/// Keys of the project that are neither revoked nor expired at `now`.
fn active_keys(conn: &Connection, project_id: &str, now: i64) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM api_keys WHERE project_id = ?1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > ?2)",
        params![project_id, now],
        |r| r.get(0),
    )?)
}

/// Records that a key changed in a way that can make it refuse, in the
/// transaction of the change; running servers drop their cached copy when
/// they read it (see [`Db::key_changes_since`]).
fn publish_change(conn: &Connection, hash: &[u8; 32], now: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO key_changes (key_hash, changed_at) VALUES (?1, ?2)",
        params![&hash[..], now],
    )?;
    Ok(())
}

#[async_trait]
impl KeyRepo for SqliteStore {
    async fn find_key_by_hash(&self, hash: KeyHash) -> StoreResult<Option<KeyRecord>> {
        self.call(move |c| key_where(c, "key_hash = ?1", &hash.0[..]))
            .await
    }

    async fn find_key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        self.call(move |c| key_where(c, "id = ?1", id.as_str()))
            .await
    }

    async fn key(&self, project: ProjectId, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        self.call(move |c| key_by_id(c, project.as_str(), id.as_str()))
            .await
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<KeyRecord>, i64)> {
        let now = self.clock.now();
        self.call(move |c| {
            let project_id = project.as_str();
            let cond = "project_id = ?1
                 AND (?2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)))
                 AND (?4 IS NULL OR owner_id = ?4)";
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM api_keys WHERE {cond}"),
                params![project_id, filter.include_inactive, now, filter.owner_id],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT ?5 OFFSET ?6"
            ))?;
            let rows = stmt.query_map(
                params![project_id, filter.include_inactive, now, filter.owner_id, limit, offset],
                key_from,
            )?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }

    async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> StoreResult<Option<KeyRecord>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(max) = max_keys {
                let active = active_keys(&tx, &key.project_id, key.created_at)?;
                if active as u64 >= max {
                    return Ok(None);
                }
            }
            insert_key(&tx, &key, false, None)?;
            effects::write(&tx, &effects, key.created_at)?;
            tx.commit()?;
            Ok(Some(key))
        })
        .await
    }

    async fn update_key(
        &self,
        project: ProjectId,
        id: KeyId,
        change: KeyChange,
    ) -> StoreResult<Option<KeyRecord>> {
        let now = self.clock.now();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut key) = key_by_id(&tx, project.as_str(), id.as_str())? else {
                return Ok(None);
            };
            key.updated_at = now;
            let effects = change(&mut key);
            let row = KeyRow::of(&key);
            tx.execute(
                "UPDATE api_keys SET name = ?3, scopes = ?4, rate_limit = ?5, rate_window_secs = ?6, owner_id = ?7,
                    credits_remaining = ?8, credits_refill_amount = ?9, credits_refill_interval = ?10,
                    credits_period_start = ?11, allowed_ips = ?12, metadata = ?13, expires_at = ?14,
                    revoked_at = ?15, updated_at = ?16
                 WHERE project_id = ?1 AND id = ?2",
                params![
                    row.project_id,
                    row.id,
                    row.name,
                    row.scopes,
                    row.rate_limit,
                    row.rate_window_secs,
                    row.owner_id,
                    row.credits_remaining,
                    row.credits_refill_amount,
                    row.credits_refill_interval,
                    row.credits_period_start,
                    row.allowed_ips,
                    row.metadata,
                    row.expires_at,
                    row.revoked_at,
                    row.updated_at,
                ],
            )?;
            effects::write(&tx, &effects, now)?;
            publish_change(&tx, &key.hash, now)?;
            tx.commit()?;
            Ok(Some(key))
        })
        .await
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
        let now = self.clock.now();
        self.call(move |c| {
            let project_id = project.as_str();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(old) = key_by_id(&tx, project_id, old.as_str())? else {
                return Ok(Rotated::NotFound);
            };
            let predecessor = tx
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = ?1 AND rotated_to = ?2"),
                    params![project_id, &*old.id],
                    key_from,
                )
                .optional()?;
            let active = active_keys(&tx, project_id, now)?;
            let RotationPlan {
                old,
                new,
                ended_grace,
            } = match plan_rotation(old, predecessor, active, max_keys, new, old_expires_at, now) {
                Ok(plan) => plan,
                Err(refusal) => return Ok(Rotated::Refused(refusal)),
            };
            if let Some(p) = &ended_grace {
                tx.execute(
                    "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2 WHERE id = ?1",
                    params![&*p.id, now],
                )?;
                publish_change(&tx, &p.hash, now)?;
            }
            insert_key(&tx, &new, false, Some(&old.id))?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2, expires_at = ?3, updated_at = ?4, rotated_to = ?5 WHERE id = ?1",
                params![&*old.id, old.revoked_at, old.expires_at, now, &*new.id],
            )?;
            publish_change(&tx, &old.hash, now)?;
            effects::write(&tx, &effects(&old, &new, ended_grace.as_ref()), now)?;
            tx.commit()?;
            Ok(Rotated::Done {
                old: Box::new(old),
                new: Box::new(new),
                ended_grace: ended_grace.map(Box::new),
            })
        })
        .await
    }

    async fn revoke_leaked(
        &self,
        hash: KeyHash,
        effects: LeakEffects,
    ) -> StoreResult<Option<(KeyRecord, bool)>> {
        let now = self.clock.now();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut key) = key_where(&tx, "key_hash = ?1", &hash.0[..])? else {
                return Ok(None);
            };
            if !key.is_active(now) {
                return Ok(Some((key, false)));
            }
            key.revoked_at = Some(now);
            key.updated_at = now;
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![&*key.id, now],
            )?;
            effects::write(&tx, &effects(&key), now)?;
            publish_change(&tx, &key.hash, now)?;
            tx.commit()?;
            Ok(Some((key, true)))
        })
        .await
    }

    async fn import_keys(
        &self,
        keys: Vec<KeyRecord>,
        effects: ImportEffects,
    ) -> StoreResult<Result<usize, String>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (i, key) in keys.iter().enumerate() {
                match insert_key(&tx, key, true, None) {
                    Ok(()) => {}
                    Err(DbError::Sqlite(e))
                        if e.sqlite_error_code()
                            == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                    {
                        return Ok(Err(format!(
                            "key {} (line {}): this hash is already stored",
                            key.prefix,
                            i + 1
                        )));
                    }
                    Err(e) => return Err(e),
                }
                effects::write(&tx, &effects(key), key.created_at)?;
            }
            tx.commit()?;
            Ok(Ok(keys.len()))
        })
        .await
    }

    async fn imported_key_hashes(&self) -> StoreResult<Vec<KeyHash>> {
        self.call(|c| imported_key_hashes(c)).await
    }

    async fn count_active_keys(&self, project: ProjectId) -> StoreResult<i64> {
        let now = self.clock.now();
        self.call(move |c| active_keys(c, project.as_str(), now))
            .await
    }

    /// None: SQLite has no announcements; the feed is read on a timer.
    async fn subscribe_key_changes(&self) -> StoreResult<Option<Box<dyn KeyChangeSubscription>>> {
        Ok(None)
    }

    /// One past the newest entry. SQLite lets one writer in at a time, so
    /// entries become visible in id order and nothing can later appear
    /// below it.
    async fn key_feed_horizon(&self) -> StoreResult<FeedHorizon> {
        self.call(|c| {
            Ok(FeedHorizon(c.query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM key_changes",
                [],
                |r| r.get(0),
            )?))
        })
        .await
    }

    /// Entries in id order (the commit order here: see
    /// [`Self::key_feed_horizon`]).
    async fn read_key_changes(&self, from: FeedHorizon) -> StoreResult<FeedRead> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key_hash FROM key_changes WHERE id >= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![from.0], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut entries = Vec::new();
            let mut next = from.0;
            for row in rows {
                let (id, hash) = row?;
                next = next.max(id + 1);
                if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                    entries.push(FeedEntry {
                        id,
                        order: id,
                        key_hash: KeyHash(hash),
                    });
                }
            }
            Ok(FeedRead {
                entries,
                next: FeedHorizon(next),
            })
        })
        .await
    }

    async fn prune_key_changes(&self, before: i64) -> StoreResult<usize> {
        self.call(
            move |c| Ok(c.execute("DELETE FROM key_changes WHERE changed_at < ?1", [before])?),
        )
        .await
    }
}

/// The one key whose `column = ?1` (a unique column).
fn key_where(
    conn: &Connection,
    condition: &str,
    value: impl rusqlite::ToSql,
) -> DbResult<Option<KeyRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {condition}"),
            [value],
            key_from,
        )
        .optional()?)
}

/// Hashes of keys imported from other services (they may not have our
/// format).
pub(super) fn imported_key_hashes(c: &Connection) -> DbResult<Vec<KeyHash>> {
    let mut stmt = c.prepare("SELECT key_hash FROM api_keys WHERE imported = 1")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    Ok(rows
        .filter_map(|r| r.ok().and_then(|h| <[u8; 32]>::try_from(h).ok()))
        .map(KeyHash)
        .collect())
}
