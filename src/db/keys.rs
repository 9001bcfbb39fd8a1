//! API keys, their usage counts, and the audit-log page.

use crate::store::audit::StoredEvent;
use crate::store::keys::{KeyFilter, Rotated};
use crate::store::usage::{UsageBatch, UsageCounts};
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::audit;
use super::{effects, Db, DbError, DbResult};
use crate::config::{Cidr, RateLimitConfig};
use crate::keys::credits::{Balance, Interval, Refill};
use crate::keys::events::check_rotation;
use crate::keys::record::KeyRecord;
use crate::keys::KeyType;
use crate::store::effects::Effects;

const KEY_COLUMNS: &str =
    "id, project_id, key_hash, prefix, name, type, environment, scopes, rate_limit, \
    rate_window_secs, owner_id, credits_remaining, credits_refill_amount, credits_refill_interval, \
    credits_period_start, allowed_ips, metadata, created_at, updated_at, last_used_at, expires_at, \
    revoked_at, created_by, rotated_to";

fn conversion(at: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        at,
        rusqlite::types::Type::Text,
        what.to_string().into(),
    )
}

fn key_from(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let id: String = r.get(0)?;
    let project_id: String = r.get(1)?;
    let hash_vec: Vec<u8> = r.get(2)?;
    let hash: [u8; 32] = hash_vec
        .try_into()
        .map_err(|_| conversion(2, "key hash length"))?;
    let kind: String = r.get(5)?;
    let scopes: String = r.get(7)?;
    let limit: Option<u32> = r.get(8)?;
    let window: Option<u32> = r.get(9)?;
    let remaining: Option<i64> = r.get(11)?;
    let refill_amount: Option<i64> = r.get(12)?;
    let refill_interval: Option<String> = r.get(13)?;
    let period_start: Option<i64> = r.get(14)?;
    let allowed_ips: Option<String> = r.get(15)?;
    let metadata: String = r.get(16)?;
    let refill = match (
        refill_amount,
        refill_interval.as_deref().and_then(Interval::parse),
    ) {
        (Some(amount), Some(interval)) => Some(Refill { amount, interval }),
        _ => None,
    };
    Ok(KeyRecord {
        id: Arc::from(id),
        project_id: Arc::from(project_id),
        hash,
        prefix: r.get(3)?,
        name: r.get(4)?,
        kind: KeyType::parse(&kind).ok_or_else(|| conversion(5, "key type"))?,
        environment: r.get(6)?,
        scopes: serde_json::from_str(&scopes).map_err(|_| conversion(7, "scopes"))?,
        rate_limit: match (limit, window) {
            (Some(limit), Some(window_secs)) => Some(RateLimitConfig { limit, window_secs }),
            _ => None,
        },
        owner_id: r.get(10)?,
        credits: remaining.map(|remaining| Balance {
            remaining,
            refill,
            period_start: period_start.unwrap_or(0),
        }),
        allowed_ips: match allowed_ips {
            Some(text) => {
                let raw: Vec<String> =
                    serde_json::from_str(&text).map_err(|_| conversion(15, "allowed_ips"))?;
                Some(
                    raw.iter()
                        .map(|s| s.parse::<Cidr>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| conversion(15, "allowed_ips"))?,
                )
            }
            None => None,
        },
        metadata: serde_json::from_str(&metadata).map_err(|_| conversion(16, "metadata"))?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
        last_used_at: r.get(19)?,
        expires_at: r.get(20)?,
        revoked_at: r.get(21)?,
        created_by: r.get(22)?,
        rotated_to: r.get::<_, Option<String>>(23)?.map(Arc::from),
    })
}

fn insert_key(
    conn: &Connection,
    k: &KeyRecord,
    imported: bool,
    rotated_from: Option<&str>,
) -> DbResult<()> {
    let allowed_ips = k.allowed_ips.as_ref().map(|ips| {
        serde_json::to_string(&ips.iter().map(|c| String::from(*c)).collect::<Vec<_>>())
            .expect("strings")
    });
    conn.execute(
        &format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}, imported, rotated_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
        ),
        params![
            &*k.id,
            &*k.project_id,
            &k.hash[..],
            k.prefix,
            k.name,
            k.kind.as_str(),
            k.environment,
            serde_json::to_string(&k.scopes).expect("strings"),
            k.rate_limit.map(|r| r.limit),
            k.rate_limit.map(|r| r.window_secs),
            k.owner_id,
            k.credits.map(|c| c.remaining),
            k.refill().map(|r| r.amount),
            k.refill().map(|r| r.interval.as_str()),
            k.credits.map(|c| c.period_start),
            allowed_ips,
            k.metadata.to_string(),
            k.created_at,
            k.updated_at,
            k.last_used_at,
            k.expires_at,
            k.revoked_at,
            k.created_by,
            k.rotated_to.as_deref(),
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

impl Db {
    pub async fn find_key_by_hash(&self, hash: [u8; 32]) -> DbResult<Option<KeyRecord>> {
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"),
                [&hash[..]],
                key_from,
            )
            .optional()?)
        })
        .await
    }

    /// The project a key belongs to (CLI revocation by key id).
    pub async fn key_project(&self, id: String) -> DbResult<Option<String>> {
        self.call(move |c| {
            Ok(
                c.query_row("SELECT project_id FROM api_keys WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    pub async fn key_by_id(&self, project_id: String, id: String) -> DbResult<Option<KeyRecord>> {
        self.call(move |c| key_by_id(c, &project_id, &id)).await
    }

    /// Creates a key with its effects (audit row, webhook event). `None`
    /// when the project already has `max_keys` active keys.
    pub async fn create_key(
        &self,
        key: KeyRecord,
        max_keys: Option<u64>,
        effects: Effects,
    ) -> DbResult<Option<KeyRecord>> {
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

    /// Number of active keys of a project (for plan limits).
    pub async fn count_active_keys(&self, project_id: String) -> DbResult<i64> {
        let clock = self.clock.clone();
        self.call(move |c| active_keys(c, &project_id, clock.now()))
            .await
    }

    pub async fn keys_page(
        &self,
        project_id: String,
        filter: KeyFilter,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<KeyRecord>, i64)> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
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

    /// Applies `change` to a key of the project (its `updated_at` already
    /// set) and stores the result with the effects `change` returns, in one
    /// transaction.
    pub async fn update_key<F>(
        &self,
        project_id: String,
        id: String,
        change: F,
    ) -> DbResult<Option<KeyRecord>>
    where
        F: FnOnce(&mut KeyRecord) -> Effects + Send + 'static,
    {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut key) = key_by_id(&tx, &project_id, &id)? else {
                return Ok(None);
            };
            key.updated_at = now;
            let effects = change(&mut key);
            let allowed_ips = key.allowed_ips.as_ref().map(|ips| {
                serde_json::to_string(&ips.iter().map(|c| String::from(*c)).collect::<Vec<_>>()).expect("strings")
            });
            tx.execute(
                "UPDATE api_keys SET name = ?3, scopes = ?4, rate_limit = ?5, rate_window_secs = ?6, owner_id = ?7,
                    credits_remaining = ?8, credits_refill_amount = ?9, credits_refill_interval = ?10,
                    credits_period_start = ?11, allowed_ips = ?12, metadata = ?13, expires_at = ?14,
                    revoked_at = ?15, updated_at = ?16
                 WHERE project_id = ?1 AND id = ?2",
                params![
                    project_id,
                    id,
                    key.name,
                    serde_json::to_string(&key.scopes).expect("strings"),
                    key.rate_limit.map(|r| r.limit),
                    key.rate_limit.map(|r| r.window_secs),
                    key.owner_id,
                    key.credits.map(|c| c.remaining),
                    key.refill().map(|r| r.amount),
                    key.refill().map(|r| r.interval.as_str()),
                    key.credits.map(|c| c.period_start),
                    allowed_ips,
                    key.metadata.to_string(),
                    key.expires_at,
                    key.revoked_at,
                    now,
                ],
            )?;
            effects::write(&tx, &effects, now)?;
            publish_change(&tx, &key.hash, now)?;
            tx.commit()?;
            Ok(Some(key))
        })
        .await
    }

    /// Inserts `new` as the successor of `old_id`, and revokes the old key
    /// (grace 0) or moves its expiry to `old_expires_at`, in one transaction,
    /// under the rotation rules of [`check_rotation`]. `effects` gets the old
    /// key, the new one and the predecessor whose grace ended.
    pub async fn rotate_key<F>(
        &self,
        project_id: String,
        old_id: String,
        mut new: KeyRecord,
        old_expires_at: Option<i64>,
        max_keys: Option<u64>,
        effects: F,
    ) -> DbResult<Rotated>
    where
        F: FnOnce(&KeyRecord, &KeyRecord, Option<&KeyRecord>) -> Effects + Send + 'static,
    {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut old) = key_by_id(&tx, &project_id, &old_id)? else {
                return Ok(Rotated::NotFound);
            };
            // The predecessor still in its grace period, if any.
            let predecessor = tx
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = ?1 AND rotated_to = ?2"),
                    params![project_id, &*old.id],
                    key_from,
                )
                .optional()?
                .filter(|p| p.is_active(now));
            let active = active_keys(&tx, &project_id, now)?;
            if let Err(refusal) = check_rotation(
                &old,
                predecessor.is_some(),
                active,
                max_keys,
                old_expires_at.is_some(),
                now,
            ) {
                return Ok(Rotated::Refused(refusal));
            }
            let ended_grace = match predecessor {
                Some(mut p) => {
                    p.revoked_at = Some(now);
                    p.updated_at = now;
                    tx.execute(
                        "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2 WHERE id = ?1",
                        params![&*p.id, now],
                    )?;
                    publish_change(&tx, &p.hash, now)?;
                    Some(p)
                }
                None => None,
            };
            match old_expires_at {
                None => old.revoked_at = Some(now),
                Some(at) => old.expires_at = Some(old.expires_at.map_or(at, |e| e.min(at))),
            }
            old.updated_at = now;
            old.rotated_to = Some(new.id.clone());
            new.rotated_to = None;
            // The balance moves with the line, read under this transaction's lock
            // (spends are made in the row itself; see store::spend).
            new.credits = old.credits;
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

    /// A key by id, whatever its project (the successor whose credits a
    /// rotated key draws on).
    pub async fn find_key_by_id(&self, id: Arc<str>) -> DbResult<Option<KeyRecord>> {
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                [&*id],
                key_from,
            )
            .optional()?)
        })
        .await
    }

    /// The change feed's horizon for a reader starting now: one past the
    /// newest entry. SQLite lets one writer in at a time, so entries become
    /// visible in id order and nothing can later appear below it.
    pub async fn key_feed_horizon(&self) -> DbResult<i64> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM key_changes",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Forgets key changes older than `before` (epoch seconds).
    pub async fn prune_key_changes(&self, before: i64) -> DbResult<usize> {
        self.call(
            move |c| Ok(c.execute("DELETE FROM key_changes WHERE changed_at < ?1", [before])?),
        )
        .await
    }

    /// Every change-feed entry with an id at or after `from`, oldest
    /// first, and the horizon after them (see [`Db::key_feed_horizon`]).
    pub async fn read_key_changes(&self, from: i64) -> DbResult<(Vec<(i64, [u8; 32])>, i64)> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key_hash FROM key_changes WHERE id >= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![from], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut out = Vec::new();
            let mut next = from;
            for row in rows {
                let (id, hash) = row?;
                next = next.max(id + 1);
                if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                    out.push((id, hash));
                }
            }
            Ok((out, next))
        })
        .await
    }

    /// Revokes an active key found by hash (leaked-key reports). Returns the
    /// key as it was before, or `None` when unknown.
    pub async fn revoke_leaked<F>(
        &self,
        hash: [u8; 32],
        effects: F,
    ) -> DbResult<Option<(KeyRecord, bool)>>
    where
        F: FnOnce(&KeyRecord) -> Effects + Send + 'static,
    {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut key) = tx
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"),
                    [&hash[..]],
                    key_from,
                )
                .optional()?
            else {
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

    /// Hashes of keys imported from other services (they may not have our
    /// format). Blocking: read once at start-up.
    pub fn imported_key_hashes(&self) -> DbResult<Vec<[u8; 32]>> {
        self.blocking(|c| {
            let mut stmt = c.prepare("SELECT key_hash FROM api_keys WHERE imported = 1")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            Ok(rows
                .filter_map(|r| r.ok().and_then(|h| <[u8; 32]>::try_from(h).ok()))
                .collect())
        })
    }

    /// Imports keys in one transaction; fails whole on a duplicate hash.
    pub async fn import_keys<F>(
        &self,
        keys: Vec<KeyRecord>,
        effects: F,
    ) -> DbResult<Result<usize, String>>
    where
        F: Fn(&KeyRecord) -> Effects + Send + 'static,
    {
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

    /// Writes a usage batch in one transaction.
    pub async fn write_usage(&self, batch: UsageBatch) -> Result<(), (DbError, UsageBatch)> {
        let copy = batch.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO usage_hourly (key_id, project_id, hour, valid, invalid, rate_limited, refused)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (key_id, hour) DO UPDATE SET valid = valid + excluded.valid,
                        invalid = invalid + excluded.invalid, rate_limited = rate_limited + excluded.rate_limited,
                        refused = refused + excluded.refused",
                )?;
                let mut used = tx.prepare_cached(
                    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                )?;
                for (key_id, u) in &batch.keys {
                    for (hour, c) in &u.hours {
                        upsert.execute(params![&**key_id, &*u.project_id, hour, c[0] as i64, c[1] as i64, c[2] as i64, c[3] as i64])?;
                    }
                    if let Some(at) = u.last_used {
                        used.execute(params![&**key_id, at])?;
                    }
                }
                let mut credits = tx.prepare_cached(
                    "UPDATE api_keys SET credits_remaining = ?2, credits_period_start = ?3 WHERE id = ?1 AND credits_remaining IS NOT NULL",
                )?;
                for (key_id, b) in &batch.credits {
                    credits.execute(params![&**key_id, b.remaining, b.period_start])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| (e, copy))
    }

    /// Usage of a project's keys (or one key) between `from` and `to`, in
    /// buckets of `bucket_secs` (3600 or 86400), zero-filled.
    pub async fn usage_series(
        &self,
        project_id: String,
        key_id: Option<String>,
        from: i64,
        to: i64,
        bucket_secs: i64,
    ) -> DbResult<Vec<(i64, UsageCounts)>> {
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT (hour / ?4) * ?4 AS bucket, sum(valid), sum(invalid), sum(rate_limited), sum(refused)
                 FROM usage_hourly
                 WHERE project_id = ?1 AND hour >= ?2 AND hour < ?3 AND (?5 IS NULL OR key_id = ?5)
                 GROUP BY bucket ORDER BY bucket",
            )?;
            let first = from - from.rem_euclid(3600);
            let rows = stmt.query_map(params![project_id, first, to, bucket_secs, key_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    UsageCounts {
                        valid: r.get::<_, i64>(1)? as u64,
                        invalid: r.get::<_, i64>(2)? as u64,
                        rate_limited: r.get::<_, i64>(3)? as u64,
                        refused: r.get::<_, i64>(4)? as u64,
                    },
                ))
            })?;
            let found: HashMap<i64, UsageCounts> = rows.collect::<Result<_, _>>()?;
            let mut series = Vec::new();
            let mut t = from - from.rem_euclid(bucket_secs);
            while t < to {
                series.push((t, found.get(&t).copied().unwrap_or_default()));
                t += bucket_secs;
            }
            Ok(series)
        })
        .await
    }

    /// Valid verifications of a project since `since` (the plan quota).
    pub async fn project_verifications_since(
        &self,
        project_id: String,
        since: i64,
    ) -> DbResult<u64> {
        self.call(move |c| {
            let n: i64 = c.query_row(
                "SELECT coalesce(sum(valid), 0) FROM usage_hourly WHERE project_id = ?1 AND hour >= ?2",
                params![project_id, since],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    /// One page of a project's audit log, newest first: the project's own
    /// events and the sign-ins of its current members.
    pub async fn audit_page(
        &self,
        project_id: String,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<StoredEvent>, i64)> {
        self.call(move |c| {
            let cond = "project_id = ?1 OR (project_id IS NULL
                 AND action IN ('login.succeeded', 'login.failed', 'logout', 'session.token_reused')
                 AND actor_id IN (SELECT user_id FROM memberships WHERE project_id = ?1))";
            let total: i64 = c.query_row(&format!("SELECT count(*) FROM audit_events WHERE {cond}"), [&project_id], |r| r.get(0))?;
            let mut stmt = c.prepare(&format!(
                "SELECT id, project_id, action, actor_type, actor_id, target, ip, request_id, details, created_at
                 FROM audit_events WHERE {cond} ORDER BY id DESC LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = stmt.query_map(params![project_id, limit, offset], audit::event_from)?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }
}
