//! The verification hot path. Keys are found by hash in a bounded in-memory
//! cache; a hit touches no database at all. A miss reads SQLite once, and
//! unknown keys are remembered briefly too, so a flood of invented keys
//! cannot hammer storage. Each cached key carries its rate-limit window and
//! live credit balance, decided under the key's own lock.
//!
//! Consistency: every change to a key (revoke, rotate, edit, leak) goes
//! through [`KeyStore::updated`] before its response is sent, and a cache
//! fill that raced with a change is discarded (an epoch counter, checked
//! under the same lock the change takes). So once a revocation returns, the
//! key never verifies again in this process. Entries are also re-read from
//! storage after `keys.cache_ttl_secs`, so edits made by another process
//! (the CLI) take effect within that time.

use std::collections::HashSet;
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

#[derive(Clone)]
enum Slot {
    Known(Arc<KeyHandle>),
    Unknown(Instant),
}

pub struct KeyHandle {
    state: Mutex<KeyState>,
}

struct KeyState {
    record: Arc<KeyRecord>,
    loaded: Instant,
    window: SlidingWindow,
    credits: Option<Balance>,
    /// What answers show of `record`, built on first use.
    rendered: Option<Arc<Rendered>>,
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

impl KeyHandle {
    fn new(record: KeyRecord, unwritten: Option<Balance>) -> Self {
        let credits = record.credits.map(|c| unwritten.unwrap_or(c));
        KeyHandle {
            state: Mutex::new(KeyState {
                record: Arc::new(record),
                loaded: Instant::now(),
                window: SlidingWindow::default(),
                credits,
                rendered: None,
            }),
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
    cache: Cache<[u8; 32], Slot>,
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
        KeyStore {
            cache: Cache::new(config.keys.cache_capacity.max(1)),
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

    async fn handle(&self, db: &Db, hash: [u8; 32]) -> Result<Option<Arc<KeyHandle>>, DbError> {
        match self.cache.get(&hash) {
            Some(Slot::Known(handle)) => {
                let stale =
                    handle.state.lock().expect("key lock").loaded.elapsed() > self.refresh_after;
                if stale {
                    self.refresh(db, hash, &handle).await?;
                }
                return Ok(Some(handle));
            }
            Some(Slot::Unknown(until)) if Instant::now() < until => return Ok(None),
            _ => {}
        }
        for _ in 0..8 {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let record = db.find_key_by_hash(hash).await?;
            let _fill = self.fill_lock.lock().expect("fill lock");
            if self.epoch.load(Ordering::SeqCst) != epoch {
                continue; // a key changed meanwhile: read again
            }
            if let Some(Slot::Known(existing)) = self.cache.get(&hash) {
                return Ok(Some(existing));
            }
            return Ok(match record {
                Some(record) => {
                    let unwritten = self.usage.unwritten_credits(&record.id);
                    let handle = Arc::new(KeyHandle::new(record, unwritten));
                    self.cache.insert(hash, Slot::Known(handle.clone()));
                    Some(handle)
                }
                None => {
                    self.cache
                        .insert(hash, Slot::Unknown(Instant::now() + self.negative_ttl));
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
            }
        }
        Ok(())
    }

    /// Publishes a change to a key before its response is sent. With
    /// `reset_credits`, the stored balance replaces the live one.
    pub fn updated(&self, record: &KeyRecord, reset_credits: bool) {
        let _fill = self.fill_lock.lock().expect("fill lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match self.cache.get(&record.hash) {
            Some(Slot::Known(handle)) => {
                let mut st = handle.state.lock().expect("key lock");
                st.set_record(record.clone());
                st.loaded = Instant::now();
                if reset_credits {
                    st.credits = record.credits;
                }
            }
            Some(Slot::Unknown(_)) => {
                self.cache.remove(&record.hash);
            }
            None => {}
        }
    }

    /// The live balance of a cached key.
    pub fn live_credits(&self, hash: &[u8; 32]) -> Option<Balance> {
        match self.cache.peek(hash) {
            Some(Slot::Known(handle)) => handle.state.lock().expect("key lock").credits,
            _ => None,
        }
    }

    /// Runs the checks of SPEC section 8 in order; the first failure wins.
    /// A refusal before the rate-limit step does not count against the
    /// window; a refused request spends neither credits nor quota.
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
            let rl = record.effective_rate_limit(self.default_rate);
            let before_rate = if !record.is_active(now) {
                Some(Denial::Invalid)
            } else if !record.ip_allowed(input.ip) {
                Some(Denial::ForbiddenIp)
            } else if (record.kind == KeyType::Publishable && !is_safe_method(input.method))
                || !input.scopes.iter().all(|s| record.has_scope(s))
            {
                Some(Denial::InsufficientScope)
            } else {
                None
            };
            let outcome;
            let rate;
            if let Some(denial) = before_rate {
                rate = st.window.check(rl.limit, rl.window_secs, now_ms, false);
                outcome = Err(denial);
            } else {
                rate = st.window.check(rl.limit, rl.window_secs, now_ms, true);
                outcome = if !rate.allowed {
                    Err(Denial::RateLimited)
                } else if input.purpose == Purpose::Verify {
                    let mut spent = true;
                    if let Some(balance) = st.credits.as_mut() {
                        let before = *balance;
                        spent = balance.spend(input.cost, now);
                        if *balance != before {
                            self.usage.set_credits(&record.id, *balance);
                        }
                    }
                    if !spent {
                        Err(Denial::UsageExceeded)
                    } else if quota.is_some_and(|q| !q.try_spend(&record.project_id, now)) {
                        // Give back what this refused request took.
                        if let Some(balance) = st.credits.as_mut() {
                            if input.cost > 0 {
                                balance.remaining += input.cost;
                                self.usage.set_credits(&record.id, *balance);
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
                credits: st.credits.map(|c| c.remaining),
                rendered: Some(st.rendered(self.default_rate)),
                key: Some(record),
                rate: Some(rate),
                outcome,
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
