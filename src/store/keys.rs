//! The key repository: what the product does with stored API keys, behind
//! one interface both backends implement. Every mutating method is one
//! transaction that also writes the change's effects and its change-feed
//! entry.

use async_trait::async_trait;

use super::effects::Effects;
use super::{KeyHash, KeyId, ProjectId, StoreResult};
use crate::store::key_record::KeyRecord;

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

/// Why a key may not be rotated now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationRefusal {
    /// Revoked or expired: only an active key can be rotated.
    Inactive,
    /// It already has a successor; rotate that one.
    AlreadyRotated(std::sync::Arc<str>),
    /// Keeping the old key through a grace period would exceed `max_keys`.
    PlanLimit,
}

/// The rotation rules (a line of rotations never has more than two live
/// keys, and never multiplies what a key may do), decided on what the
/// backend read inside its transaction: `active` counts the project's
/// active keys, the old one and its live predecessor included.
pub fn check_rotation(
    old: &KeyRecord,
    predecessor_live: bool,
    active: i64,
    max_keys: Option<u64>,
    keeps_old: bool,
    now: i64,
) -> Result<(), RotationRefusal> {
    if let Some(successor) = &old.rotated_to {
        return Err(RotationRefusal::AlreadyRotated(successor.clone()));
    }
    if !old.is_active(now) {
        return Err(RotationRefusal::Inactive);
    }
    if let (Some(max), true) = (max_keys, keeps_old) {
        // The new key is added; an ended grace frees a slot.
        let after = active + 1 - i64::from(predecessor_live);
        if after > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(RotationRefusal::PlanLimit);
        }
    }
    Ok(())
}

/// What a rotation writes: `old` as it is afterwards (revoked, or expiring
/// after the grace, and pointing at its successor), `new` (carrying the
/// balance of the line), and the predecessor of `old` whose grace this
/// rotation ends (revoked now), if any.
#[derive(Clone, Debug)]
pub struct RotationPlan {
    pub old: KeyRecord,
    pub new: KeyRecord,
    pub ended_grace: Option<KeyRecord>,
}

/// The rotation of `old` into `new`, decided on what a backend read in its
/// transaction: the live predecessor of `old` (a key still in the grace of
/// its rotation into `old`), and the project's active keys. Refused under
/// the rules of [`crate::store::keys::check_rotation`]. `old_expires_at`:
/// `None` revokes `old` now; a time ends its grace then (never later than
/// it would have expired anyway).
pub fn plan_rotation(
    mut old: KeyRecord,
    predecessor: Option<KeyRecord>,
    active: i64,
    max_keys: Option<u64>,
    mut new: KeyRecord,
    old_expires_at: Option<i64>,
    now: i64,
) -> Result<RotationPlan, RotationRefusal> {
    let predecessor = predecessor.filter(|p| p.is_active(now));
    check_rotation(
        &old,
        predecessor.is_some(),
        active,
        max_keys,
        old_expires_at.is_some(),
        now,
    )?;
    let ended_grace = predecessor.map(|mut p| {
        p.revoked_at = Some(now);
        p.updated_at = now;
        p
    });
    match old_expires_at {
        None => old.revoked_at = Some(now),
        Some(at) => old.expires_at = Some(old.expires_at.map_or(at, |e| e.min(at))),
    }
    old.updated_at = now;
    old.rotated_to = Some(new.id.clone());
    new.rotated_to = None;
    // The balance moves with the line, read under the backend's lock
    // (spends are made in the row itself; see store::spend).
    new.credits = old.credits;
    Ok(RotationPlan {
        old,
        new,
        ended_grace,
    })
}

/// Filters of the key list.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    pub include_inactive: bool,
    pub owner_id: Option<String>,
}

/// The columns of `api_keys` a [`KeyRow`] holds, in its order (both
/// schemas have them, with the same names).
pub const KEY_COLUMNS: &str =
    "id, project_id, key_hash, prefix, name, type, environment, scopes, rate_limit, \
    rate_window_secs, owner_id, credits_remaining, credits_refill_amount, credits_refill_interval, \
    credits_period_start, allowed_ips, metadata, created_at, updated_at, last_used_at, expires_at, \
    revoked_at, created_by, rotated_to";

/// A key as its row stores it: the values of [`KEY_COLUMNS`], in order, as
/// plain values each backend reads and binds. How a [`KeyRecord`] becomes
/// columns and back is written here once; a backend only moves values.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub project_id: String,
    pub key_hash: Vec<u8>,
    pub prefix: String,
    pub name: String,
    pub kind: String,
    pub environment: String,
    /// JSON array of strings.
    pub scopes: String,
    pub rate_limit: Option<i64>,
    pub rate_window_secs: Option<i64>,
    pub owner_id: Option<String>,
    pub credits_remaining: Option<i64>,
    pub credits_refill_amount: Option<i64>,
    pub credits_refill_interval: Option<String>,
    pub credits_period_start: Option<i64>,
    /// JSON array of CIDR strings; `None` = anywhere.
    pub allowed_ips: Option<String>,
    /// JSON object.
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_by: Option<String>,
    pub rotated_to: Option<String>,
}

/// A stored value Gatehouse never writes: the column it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreadableColumn(pub &'static str);

impl KeyRow {
    /// The row that stores `k`.
    pub fn of(k: &KeyRecord) -> KeyRow {
        let refill = k.refill();
        KeyRow {
            id: k.id.to_string(),
            project_id: k.project_id.to_string(),
            key_hash: k.hash.to_vec(),
            prefix: k.prefix.clone(),
            name: k.name.clone(),
            kind: k.kind.as_str().to_string(),
            environment: k.environment.clone(),
            scopes: serde_json::to_string(&k.scopes).expect("strings serialize"),
            rate_limit: k.rate_limit.map(|r| i64::from(r.limit)),
            rate_window_secs: k.rate_limit.map(|r| i64::from(r.window_secs)),
            owner_id: k.owner_id.clone(),
            credits_remaining: k.credits.map(|c| c.remaining),
            credits_refill_amount: refill.map(|r| r.amount),
            credits_refill_interval: refill.map(|r| r.interval.as_str().to_string()),
            credits_period_start: k.credits.map(|c| c.period_start),
            allowed_ips: k.allowed_ips.as_ref().map(|ips| {
                serde_json::to_string(&ips.iter().map(|c| String::from(*c)).collect::<Vec<_>>())
                    .expect("strings serialize")
            }),
            metadata: k.metadata.to_string(),
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            created_by: k.created_by.clone(),
            rotated_to: k.rotated_to.as_deref().map(str::to_string),
        }
    }

    /// The key this row stores; `Err` names a column holding a value
    /// Gatehouse never writes.
    pub fn into_record(self) -> Result<KeyRecord, UnreadableColumn> {
        use crate::config::{Cidr, RateLimitConfig};
        use crate::store::credits::{Balance, Interval, Refill};
        let bad = UnreadableColumn;
        let refill = match (
            self.credits_refill_amount,
            self.credits_refill_interval
                .as_deref()
                .and_then(Interval::parse),
        ) {
            (Some(amount), Some(interval)) => Some(Refill { amount, interval }),
            _ => None,
        };
        let rate_limit = match (self.rate_limit, self.rate_window_secs) {
            (Some(limit), Some(window)) => Some(RateLimitConfig {
                limit: u32::try_from(limit).map_err(|_| bad("rate_limit"))?,
                window_secs: u32::try_from(window).map_err(|_| bad("rate_window_secs"))?,
            }),
            _ => None,
        };
        let allowed_ips = match self.allowed_ips {
            None => None,
            Some(text) => {
                let raw: Vec<String> =
                    serde_json::from_str(&text).map_err(|_| bad("allowed_ips"))?;
                Some(
                    raw.iter()
                        .map(|s| s.parse::<Cidr>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| bad("allowed_ips"))?,
                )
            }
        };
        Ok(KeyRecord {
            id: self.id.into(),
            project_id: self.project_id.into(),
            hash: self.key_hash.try_into().map_err(|_| bad("key_hash"))?,
            prefix: self.prefix,
            name: self.name,
            kind: crate::store::key_record::KeyType::parse(&self.kind).ok_or(bad("type"))?,
            environment: self.environment,
            scopes: serde_json::from_str(&self.scopes).map_err(|_| bad("scopes"))?,
            rate_limit,
            owner_id: self.owner_id,
            credits: self.credits_remaining.map(|remaining| Balance {
                remaining,
                refill,
                period_start: self.credits_period_start.unwrap_or(0),
            }),
            allowed_ips,
            metadata: serde_json::from_str(&self.metadata).map_err(|_| bad("metadata"))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            created_by: self.created_by,
            rotated_to: self.rotated_to.map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        use crate::store::credits::{Balance, Interval, Refill};
        KeyRecord {
            id: "key_1".into(),
            project_id: "prj_1".into(),
            hash: [7; 32],
            prefix: "gh_live_sk_ab".into(),
            name: "ci".into(),
            kind: crate::store::key_record::KeyType::parse("secret").unwrap(),
            environment: "live".into(),
            scopes: vec!["read".into(), "write".into()],
            rate_limit: Some(crate::config::RateLimitConfig {
                limit: 10,
                window_secs: 60,
            }),
            owner_id: Some("cus_1".into()),
            credits: Some(Balance {
                remaining: 5,
                refill: Some(Refill {
                    amount: 100,
                    interval: Interval::parse("daily").unwrap(),
                }),
                period_start: 86_400,
            }),
            allowed_ips: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            metadata: serde_json::json!({"team": "a"}),
            created_at: 1,
            updated_at: 2,
            last_used_at: Some(3),
            expires_at: Some(4),
            revoked_at: None,
            created_by: Some("usr_1".into()),
            rotated_to: Some("key_2".into()),
        }
    }

    fn line() -> (KeyRecord, KeyRecord, KeyRecord) {
        let old = KeyRecord {
            id: "key_old".into(),
            rotated_to: None,
            expires_at: None,
            ..record()
        };
        let new = KeyRecord {
            id: "key_new".into(),
            credits: None,
            rotated_to: Some("stale".into()),
            ..record()
        };
        let predecessor = KeyRecord {
            id: "key_pre".into(),
            rotated_to: Some("key_old".into()),
            expires_at: Some(500),
            ..record()
        };
        (old, new, predecessor)
    }

    #[test]
    fn a_rotation_moves_the_line_and_ends_the_old_grace() {
        let (old, new, predecessor) = line();
        let plan = plan_rotation(old, Some(predecessor), 3, None, new, Some(400), 100).unwrap();
        assert_eq!(plan.old.expires_at, Some(400));
        assert_eq!(plan.old.revoked_at, None);
        assert_eq!(plan.old.updated_at, 100);
        assert_eq!(plan.old.rotated_to.as_deref(), Some("key_new"));
        assert_eq!(plan.new.rotated_to, None);
        assert_eq!(plan.new.credits, plan.old.credits);
        let ended = plan.ended_grace.unwrap();
        assert_eq!(
            (ended.id.as_ref(), ended.revoked_at),
            ("key_pre", Some(100))
        );
    }

    #[test]
    fn a_rotation_without_grace_revokes_and_never_extends() {
        let (old, new, predecessor) = line();
        // The predecessor's grace already ran out: nothing to end.
        let plan = plan_rotation(
            old.clone(),
            Some(predecessor),
            3,
            None,
            new.clone(),
            None,
            600,
        )
        .unwrap();
        assert_eq!(plan.old.revoked_at, Some(600));
        assert!(plan.ended_grace.is_none());
        // A grace longer than the key had left keeps the earlier expiry.
        let expiring = KeyRecord {
            expires_at: Some(150),
            ..old
        };
        let plan = plan_rotation(expiring, None, 1, None, new, Some(900), 100).unwrap();
        assert_eq!(plan.old.expires_at, Some(150));
    }

    #[test]
    fn a_refused_rotation_says_why() {
        let (old, new, _) = line();
        let rotated = KeyRecord {
            rotated_to: Some("key_x".into()),
            ..old.clone()
        };
        assert!(matches!(
            plan_rotation(rotated, None, 1, None, new.clone(), None, 100),
            Err(RotationRefusal::AlreadyRotated(_))
        ));
        // Keeping the old key adds one: over a plan of 3 with 3 active.
        assert!(matches!(
            plan_rotation(old, None, 3, Some(3), new, Some(200), 100),
            Err(RotationRefusal::PlanLimit)
        ));
    }

    #[test]
    fn a_key_survives_its_row() {
        let k = record();
        let back = KeyRow::of(&k).into_record().unwrap();
        assert_eq!(format!("{back:?}"), format!("{k:?}"));
        let bare = KeyRecord {
            rate_limit: None,
            credits: None,
            allowed_ips: None,
            owner_id: None,
            rotated_to: None,
            ..record()
        };
        let back = KeyRow::of(&bare).into_record().unwrap();
        assert_eq!(format!("{back:?}"), format!("{bare:?}"));
    }

    #[test]
    fn a_row_gatehouse_never_writes_names_its_column() {
        let row = KeyRow::of(&record());
        let cases: [(KeyRow, &str); 6] = [
            (
                KeyRow {
                    key_hash: vec![1; 31],
                    ..row.clone()
                },
                "key_hash",
            ),
            (
                KeyRow {
                    kind: "admin".into(),
                    ..row.clone()
                },
                "type",
            ),
            (
                KeyRow {
                    scopes: "read".into(),
                    ..row.clone()
                },
                "scopes",
            ),
            (
                KeyRow {
                    rate_limit: Some(-1),
                    ..row.clone()
                },
                "rate_limit",
            ),
            (
                KeyRow {
                    allowed_ips: Some("[\"nope\"]".into()),
                    ..row.clone()
                },
                "allowed_ips",
            ),
            (
                KeyRow {
                    metadata: "{".into(),
                    ..row.clone()
                },
                "metadata",
            ),
        ];
        for (bad, column) in cases {
            assert_eq!(bad.into_record().unwrap_err(), UnreadableColumn(column));
        }
    }
}
