//! The verification hot path. Keys are found by hash in a bounded in-memory
//! cache; a hit touches no database at all. A miss reads storage once, and
//! unknown keys are remembered briefly in a cache of their own, so a flood of
//! invented keys can neither hammer storage nor push real keys out.
//!
//! A key's rate-limit window and credit balance are state, not cache: they
//! live in a table of their own ([`Live`], by key id) that cache eviction
//! never touches, so no amount of traffic with other keys resets them. An
//! entry there is dropped only when no cached key uses it, its window has
//! run empty and its balance is in storage. During a rotation's grace period
//! the previous key shares its successor's entry: one window, one balance.
//!
//! Consistency: every change to a key (revoke, rotate, edit, leak) goes
//! through [`KeyStore::updated`] before its response is sent, and a cache
//! fill that raced with a change is discarded (an epoch counter, checked
//! under the same lock the change takes). So once a revocation returns, the
//! key never verifies again in this process. Changes made by another
//! process (the CLI) arrive through the key change feed within a second
//! ([`KeyStore::invalidate`]); entries are also re-read from storage after
//! `keys.cache_ttl_secs`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use quick_cache::sync::Cache;

use crate::billing::quota::Quotas;
use crate::config::{Config, RateLimitConfig};
use crate::crypto::sha256;
use crate::db::{Db, DbError};
use crate::error::ErrorCode;
use crate::keys::credits::Balance;
use crate::keys::limiter::{RateStatus, SlidingWindow};
use crate::keys::record::{is_safe_method, KeyRecord};
use crate::keys::usage::{Usage, UsageKind};
use crate::keys::{ApiKey, KeyType};

/// The live state of a key (or of a rotation line during its grace period).
pub struct Live {
    /// The key whose stored balance this is (the successor, once rotated).
    id: Arc<str>,
    window: SlidingWindow,
    credits: Option<Balance>,
}

type LiveCell = Arc<Mutex<Live>>;

pub struct KeyHandle {
    state: Mutex<KeyState>,
}

struct KeyState {
    record: Arc<KeyRecord>,
    loaded: Instant,
    /// What answers show of `record`, built on first use.
    rendered: Option<Arc<Rendered>>,
    live: LiveCell,
}

impl KeyState {
    fn set_record(&mut self, record: KeyRecord) {
        self.record = Arc::new(record);
        self.rendered = None;
    }

    fn rendered(&mut self, default_rate: RateLimitConfig) -> Arc<Rendered> {
        self.rendered
            .get_or_insert_with(|| Arc::new(Rendered::new(&self.record, default_rate)))
            .clone()
    }
}

/// The parts of verify and forward-auth answers that depend only on a
/// key's settings, rendered once per settings version instead of per request.
pub struct Rendered {
    /// The JSON members `"key_id": ..., ..., "owner_id": ...` of a valid
    /// verify answer (no braces).
    pub verify_members: String,
    pub key_id: HeaderValue,
    pub project_id: HeaderValue,
    pub scopes: HeaderValue,
    pub policy: HeaderValue,
}

impl Rendered {
    fn new(k: &KeyRecord, default_rate: RateLimitConfig) -> Self {
        let fields = serde_json::json!({
            "key_id": &*k.id,
            "project_id": &*k.project_id,
            "name": k.name,
            "type": k.kind.as_str(),
            "environment": k.environment,
            "scopes": k.scopes,
            "metadata": k.metadata,
            "expires_at": k.expires_at.map(crate::types::rfc3339),
            "owner_id": k.owner_id,
        })
        .to_string();
        let rl = k.effective_rate_limit(default_rate);
        let header =
            |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
        Rendered {
            verify_members: fields[1..fields.len() - 1].to_string(),
            key_id: header(&k.id),
            project_id: header(&k.project_id),
            scopes: header(&k.scopes.join(",")),
            policy: header(&format!("\"default\";q={};w={}", rl.limit, rl.window_secs)),
        }
    }
}

/// Why a key was refused, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    Malformed,
    Invalid,
    ForbiddenIp,
    InsufficientScope,
    RateLimited,
    UsageExceeded,
    QuotaExceeded,
}

impl Denial {
    pub fn code(self) -> ErrorCode {
        match self {
            Denial::Malformed => ErrorCode::MalformedKey,
            Denial::Invalid => ErrorCode::InvalidKey,
            Denial::ForbiddenIp => ErrorCode::ForbiddenIp,
            Denial::InsufficientScope => ErrorCode::InsufficientScope,
            Denial::RateLimited => ErrorCode::RateLimited,
            Denial::UsageExceeded => ErrorCode::UsageExceeded,
            Denial::QuotaExceeded => ErrorCode::QuotaExceeded,
        }
    }

    fn usage_kind(self) -> UsageKind {
        match self {
            Denial::Malformed | Denial::Invalid => UsageKind::Invalid,
            Denial::RateLimited => UsageKind::RateLimited,
            _ => UsageKind::Refused,
        }
    }
}

/// What the check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `keys/verify` and forward-auth: counted in usage, spends credits.
    Verify,
    /// A call to Gatehouse's own API with the key: counts against the
    /// window, spends nothing, updates `last_used_at`.
    OwnApi,
}

pub struct CheckInput<'a> {
    pub method: &'a str,
    /// Every one is required.
    pub scopes: &'a [String],
    /// The end client's address, for `allowed_ips`.
    pub ip: Option<IpAddr>,
    pub cost: i64,
    pub purpose: Purpose,
}

/// The outcome of a check, with what is known about the key for headers and bodies.
pub struct Checked {
    pub key: Option<Arc<KeyRecord>>,
    pub rendered: Option<Arc<Rendered>>,
    pub rate: Option<RateStatus>,
    pub credits: Option<i64>,
    pub outcome: Result<(), Denial>,
}

impl Checked {
    fn denied(d: Denial) -> Self {
        Checked {
            key: None,
            rendered: None,
            rate: None,
            credits: None,
            outcome: Err(d),
        }
    }
}

pub struct KeyStore {
    cache: Cache<[u8; 32], Arc<KeyHandle>>,
    /// Hashes storage does not know, until the instant given.
    unknown: Cache<[u8; 32], Instant>,
    /// Windows and balances by state id ([`KeyRecord::state_id`]).
    live: Mutex<HashMap<Arc<str>, LiveCell>>,
    epoch: AtomicU64,
    fill_lock: Mutex<()>,
    imported: RwLock<HashSet<[u8; 32]>>,
    negative_ttl: Duration,
    refresh_after: Duration,
    prefix: String,
    default_rate: RateLimitConfig,
    pub usage: Usage,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl KeyStore {
    pub fn new(config: &Config) -> Self {
        let capacity = config.keys.cache_capacity.max(1);
        KeyStore {
            cache: Cache::new(capacity),
            unknown: Cache::new(capacity),
            live: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            fill_lock: Mutex::new(()),
            imported: RwLock::new(HashSet::new()),
            negative_ttl: Duration::from_secs(config.keys.negative_cache_ttl_secs),
            refresh_after: Duration::from_secs(config.keys.cache_ttl_secs),
            prefix: config.keys.prefix.clone(),
            default_rate: config.keys.default_rate_limit,
            usage: Usage::default(),
        }
    }

    /// Hashes of imported keys, which may not have Gatehouse's format.
    pub fn set_imported(&self, hashes: impl IntoIterator<Item = [u8; 32]>) {
        self.imported.write().expect("imported lock").extend(hashes);
    }

    /// The stored hash for a presented key, or `None` when it is malformed
    /// (decided without storage).
    pub fn hash_of(&self, raw: &str) -> Option<[u8; 32]> {
        match ApiKey::check(raw, &self.prefix) {
            Ok(_) => Some(sha256(raw.as_bytes())),
            Err(_) => {
                let imported = self.imported.read().expect("imported lock");
                if imported.is_empty() || raw.is_empty() || raw.len() > 512 {
                    return None;
                }
                let hash = sha256(raw.as_bytes());
                imported.contains(&hash).then_some(hash)
            }
        }
    }

    /// The live state for `id`, created with `credits` when there is none.
    fn live_for(&self, id: &Arc<str>, credits: impl FnOnce() -> Option<Balance>) -> LiveCell {
        self.live
            .lock()
            .expect("live lock")
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Live {
                    id: id.clone(),
                    window: SlidingWindow::default(),
                    credits: self.usage.unwritten_credits(id).or_else(credits),
                }))
            })
            .clone()
    }

    /// Points a cached key at the live state its record says it draws on.
    /// A key that was just rotated carries its window and balance over to
    /// its successor, unless the successor already has state of its own.
    fn relink(&self, st: &mut KeyState) {
        let want = st.record.state_id().clone();
        let current = st.live.lock().expect("live lock").id.clone();
        if current == want {
            return;
        }
        let mut map = self.live.lock().expect("live lock");
        match map.get(&want) {
            Some(existing) => st.live = existing.clone(),
            None => {
                if map.get(&current).is_some_and(|l| Arc::ptr_eq(l, &st.live)) {
                    map.remove(&current);
                }
                st.live.lock().expect("live lock").id = want.clone();
                map.insert(want, st.live.clone());
            }
        }
    }

    async fn handle(&self, db: &Db, hash: [u8; 32]) -> Result<Option<Arc<KeyHandle>>, DbError> {
        if let Some(handle) = self.cache.get(&hash) {
            let stale =
                handle.state.lock().expect("key lock").loaded.elapsed() > self.refresh_after;
            if stale {
                self.refresh(db, hash, &handle).await?;
            }
            return Ok(Some(handle));
        }
        if self
            .unknown
            .get(&hash)
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(None);
        }
        for _ in 0..8 {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let record = db.find_key_by_hash(hash).await?;
            // A rotated key draws on its successor's balance (read always:
            // the successor's live state may be pruned before we fill).
            let successor_credits = match record.as_ref().and_then(|r| r.rotated_to.clone()) {
                Some(successor) => db.find_key_by_id(successor).await?.map(|s| s.credits),
                None => None,
            };
            let _fill = self.fill_lock.lock().expect("fill lock");
            if self.epoch.load(Ordering::SeqCst) != epoch {
                continue; // a key changed meanwhile: read again
            }
            if let Some(existing) = self.cache.get(&hash) {
                return Ok(Some(existing));
            }
            return Ok(match record {
                Some(record) => {
                    let own = record.credits;
                    let live =
                        self.live_for(record.state_id(), || successor_credits.unwrap_or(own));
                    let handle = Arc::new(KeyHandle {
                        state: Mutex::new(KeyState {
                            record: Arc::new(record),
                            loaded: Instant::now(),
                            rendered: None,
                            live,
                        }),
                    });
                    self.cache.insert(hash, handle.clone());
                    self.unknown.remove(&hash);
                    Some(handle)
                }
                None => {
                    self.unknown
                        .insert(hash, Instant::now() + self.negative_ttl);
                    None
                }
            });
        }
        Err(DbError::Busy)
    }

    async fn refresh(&self, db: &Db, hash: [u8; 32], handle: &KeyHandle) -> Result<(), DbError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let record = db.find_key_by_hash(hash).await?;
        let _fill = self.fill_lock.lock().expect("fill lock");
        let mut st = handle.state.lock().expect("key lock");
        st.loaded = Instant::now();
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if let Some(record) = record {
                // Settings from storage; the live window and balance stay.
                st.set_record(record);
                self.relink(&mut st);
            }
        }
        Ok(())
    }

    /// Publishes a change to a key before its response is sent. With
    /// `reset_credits`, the stored balance replaces the live one.
    pub fn updated(&self, record: &KeyRecord, reset_credits: bool) {
        let _fill = self.fill_lock.lock().expect("fill lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.unknown.remove(&record.hash);
        let live = match self.cache.get(&record.hash) {
            Some(handle) => {
                let mut st = handle.state.lock().expect("key lock");
                st.set_record(record.clone());
                st.loaded = Instant::now();
                self.relink(&mut st);
                Some(st.live.clone())
            }
            None => {
                // Not cached: still carry a rotated key's state to its successor.
                let mut map = self.live.lock().expect("live lock");
                if let Some(successor) = &record.rotated_to {
                    if !map.contains_key(successor) {
                        if let Some(live) = map.remove(&record.id) {
                            live.lock().expect("live lock").id = successor.clone();
                            map.insert(successor.clone(), live);
                        }
                    }
                }
                map.get(record.state_id()).cloned()
            }
        };
        if reset_credits {
            if let Some(live) = live {
                live.lock().expect("live lock").credits = record.credits;
            }
        }
    }

    /// Drops the cached copy of a key changed by another process (read from
    /// the key change feed); its window and balance stay.
    pub fn invalidate(&self, hash: &[u8; 32]) {
        let _fill = self.fill_lock.lock().expect("fill lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.remove(hash);
        self.unknown.remove(hash);
    }

    /// The live balance of a key, when this process holds one.
    pub fn live_credits(&self, record: &KeyRecord) -> Option<Balance> {
        let live = self
            .live
            .lock()
            .expect("live lock")
            .get(record.state_id())
            .cloned()?;
        let credits = live.lock().expect("live lock").credits;
        credits
    }

    /// Forgets live state nothing needs: no cached key uses it, its window
    /// has run empty and its balance is in storage. Returns how many remain.
    pub fn prune_idle(&self) -> usize {
        let now = now_ms();
        let mut map = self.live.lock().expect("live lock");
        map.retain(|id, live| {
            if Arc::strong_count(live) > 1 {
                return true;
            }
            let l = live.lock().expect("live lock");
            !l.window.is_idle(now)
                || (l.credits.is_some() && self.usage.unwritten_credits(id).is_some())
        });
        map.len()
    }

    /// Runs the checks of SPEC section 8 in order; the first failure wins.
    /// A refusal before the rate-limit step does not count against the
    /// window; a refused request spends neither credits nor quota. Refusals
    /// as `invalid_key` say nothing about the key (no rate-limit state).
    pub async fn check(
        &self,
        db: &Db,
        raw: &str,
        input: &CheckInput<'_>,
        quota: Option<&Quotas>,
    ) -> Result<Checked, DbError> {
        let Some(hash) = self.hash_of(raw) else {
            return Ok(Checked::denied(Denial::Malformed));
        };
        let Some(handle) = self.handle(db, hash).await? else {
            return Ok(Checked::denied(Denial::Invalid));
        };
        if let Some(quota) = quota.filter(|_| input.purpose == Purpose::Verify) {
            let project_id = handle
                .state
                .lock()
                .expect("key lock")
                .record
                .project_id
                .clone();
            quota.ensure_loaded(db, &self.usage, &project_id).await?;
        }
        let now_ms = now_ms();
        let now = now_ms / 1000;
        let checked = {
            let mut st = handle.state.lock().expect("key lock");
            let record = st.record.clone();
            if !record.is_active(now) {
                Checked {
                    key: Some(record),
                    ..Checked::denied(Denial::Invalid)
                }
            } else {
                let rl = record.effective_rate_limit(self.default_rate);
                let before_rate = if !record.ip_allowed(input.ip) {
                    Some(Denial::ForbiddenIp)
                } else if (record.kind == KeyType::Publishable && !is_safe_method(input.method))
                    || !input.scopes.iter().all(|s| record.has_scope(s))
                {
                    Some(Denial::InsufficientScope)
                } else {
                    None
                };
                let rendered = st.rendered(self.default_rate);
                let mut live = st.live.lock().expect("live lock");
                let live = &mut *live;
                let outcome;
                let rate;
                if let Some(denial) = before_rate {
                    rate = live.window.check(rl.limit, rl.window_secs, now_ms, false);
                    outcome = Err(denial);
                } else {
                    rate = live.window.check(rl.limit, rl.window_secs, now_ms, true);
                    outcome = if !rate.allowed {
                        Err(Denial::RateLimited)
                    } else if input.purpose == Purpose::Verify {
                        let mut spent = true;
                        if let Some(balance) = live.credits.as_mut() {
                            let before = *balance;
                            spent = balance.spend(input.cost, now);
                            if *balance != before {
                                self.usage.set_credits(&live.id, *balance);
                            }
                        }
                        if !spent {
                            Err(Denial::UsageExceeded)
                        } else if quota.is_some_and(|q| !q.try_spend(&record.project_id, now)) {
                            // Give back what this refused request took.
                            if let Some(balance) = live.credits.as_mut() {
                                if input.cost > 0 {
                                    balance.remaining =
                                        balance.remaining.saturating_add(input.cost);
                                    self.usage.set_credits(&live.id, *balance);
                                }
                            }
                            Err(Denial::QuotaExceeded)
                        } else {
                            Ok(())
                        }
                    } else {
                        Ok(())
                    };
                }
                Checked {
                    credits: live.credits.map(|c| c.remaining),
                    rendered: Some(rendered),
                    key: Some(record),
                    rate: Some(rate),
                    outcome,
                }
            }
        };
        let key = checked.key.as_ref().expect("set above");
        match (input.purpose, checked.outcome) {
            (Purpose::Verify, Ok(())) => {
                self.usage
                    .record(&key.id, &key.project_id, UsageKind::Valid, now, true)
            }
            (Purpose::Verify, Err(d)) => {
                self.usage
                    .record(&key.id, &key.project_id, d.usage_kind(), now, false)
            }
            (Purpose::OwnApi, Ok(())) => self.usage.touch(&key.id, &key.project_id, now),
            (Purpose::OwnApi, Err(_)) => {}
        }
        Ok(checked)
    }
}
