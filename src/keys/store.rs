//! The verification hot path. Keys are found by hash in a bounded in-memory
//! cache; a hit touches no database at all. A miss reads storage once, and
//! unknown keys are remembered briefly in a cache of their own, so a flood of
//! invented keys can neither hammer storage nor push real keys out.
//!
//! A key's rate-limit window is state, not cache: it lives in a table of
//! its own ([`Live`], by key id) that cache eviction never touches, so no
//! amount of traffic with other keys resets it. An entry there is dropped
//! only when no cached key uses it and its window has run empty. During a
//! rotation's grace period the previous key shares its successor's entry.
//! With `redis.url` the window lives in Redis instead, shared by every node
//! ([`SharedWindows`]); the local one decides while Redis cannot answer.
//!
//! A key's credit balance and its project's monthly quota are spent in
//! storage itself, one conditional update per spend ([`crate::store::spend`]),
//! so they are exact however many processes share the database. A key with
//! neither costs no storage access at all on a cache hit.
//!
//! Consistency: every change to a key (revoke, rotate, edit, leak) goes
//! through [`KeyStore::updated`] before its response is sent, and a cache
//! fill that raced with a change to that key is discarded (an epoch counter
//! per stripe of keys, checked under the same lock the change takes; striped
//! so that a burst of changes to other keys does not starve fills). So once a revocation returns, the
//! key never verifies again in this process. Changes made by another
//! process (the CLI) arrive through the key change feed within a second
//! ([`KeyStore::invalidate`]); entries are also re-read from storage after
//! `keys.cache_ttl_secs`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use std::io::Write as _;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use quick_cache::sync::Cache;

use crate::billing::quota::{QuotaLimit, Quotas};
use crate::cluster::redis::SharedWindows;
use crate::config::{Config, RateLimitConfig};
use crate::crypto::sha256;
use crate::error::ErrorCode;
use crate::keys::limiter::{RateStatus, SlidingWindow};
use crate::keys::record::{is_safe_method, KeyRecord};
use crate::keys::usage::{Usage, UsageKind};
use crate::keys::{ApiKey, KeyType};
use crate::store::spend::{CreditSpend, QuotaSpend};
use crate::store::{KeyHash, KeyId, ProjectId, Store, StoreError};

/// The live state of a key (or of a rotation line during its grace period).
pub struct Live {
    /// The key whose window this is (the successor, once rotated).
    id: Arc<str>,
    window: SlidingWindow,
}

type LiveCell = Arc<Mutex<Live>>;

pub struct KeyHandle {
    state: Mutex<KeyState>,
}

struct KeyState {
    key: CachedKey,
    /// When it was read from storage: milliseconds after the store's start
    /// ([`KeyStore::stamp`]; 8 bytes where an `Instant` takes 16).
    loaded: u64,
    live: LiveCell,
}

/// What the cache keeps of a key: only what checks and answers need, in as
/// few allocations as possible (a full cache holds 100,000 of these). Its
/// name, environment, metadata and owner live only inside the rendered
/// verify answer; calls to Gatehouse's own API, which need the whole record,
/// read it from storage.
struct CachedKey {
    id: Arc<str>,
    project_id: Arc<str>,
    /// The rarely set fields, boxed so that a plain key does not pay for them.
    extra: Option<Box<KeyExtra>>,
    kind: KeyType,
    rate_limit: RateLimitConfig,
    /// Whether verifications spend credits (the balance is in storage).
    has_credits: bool,
    /// See [`KeyRecord::active_until`].
    active_until: i64,
    rendered: Rendered,
}

/// What few keys have: a successor (during a rotation's grace period) or
/// an address allowlist.
#[derive(PartialEq)]
struct KeyExtra {
    rotated_to: Option<Arc<str>>,
    allowed_ips: Option<Box<[crate::config::Cidr]>>,
}

impl CachedKey {
    fn new(record: KeyRecord, default_rate: RateLimitConfig) -> Self {
        CachedKey {
            rendered: Rendered::new(&record, default_rate),
            rate_limit: record.effective_rate_limit(default_rate),
            kind: record.kind,
            has_credits: record.credits.is_some(),
            active_until: record.active_until(),
            extra: (record.rotated_to.is_some() || record.allowed_ips.is_some()).then(|| {
                Box::new(KeyExtra {
                    rotated_to: record.rotated_to,
                    allowed_ips: record.allowed_ips.map(Vec::into_boxed_slice),
                })
            }),
            project_id: record.project_id,
            id: record.id,
        }
    }

    fn is_active(&self, now: i64) -> bool {
        now < self.active_until
    }

    /// Whether `other` holds the same settings and answers: a refresh that
    /// finds nothing changed keeps the entry it has.
    fn same_as(&self, other: &CachedKey) -> bool {
        self.id == other.id
            && self.project_id == other.project_id
            && self.extra == other.extra
            && self.kind == other.kind
            && self.rate_limit == other.rate_limit
            && self.has_credits == other.has_credits
            && self.active_until == other.active_until
            && self.rendered.text == other.rendered.text
    }

    fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        let allowed = self.extra.as_ref().and_then(|e| e.allowed_ips.as_deref());
        crate::keys::record::ip_allowed(allowed, ip)
    }

    fn has_scope(&self, scope: &str) -> bool {
        crate::keys::record::has_scope(self.rendered.scope_names(), scope)
    }

    /// See [`KeyRecord::state_id`].
    fn state_id(&self) -> &Arc<str> {
        self.extra
            .as_ref()
            .and_then(|e| e.rotated_to.as_ref())
            .unwrap_or(&self.id)
    }
}

/// The parts of verify and forward-auth answers that depend only on a
/// key's settings, rendered once per settings version instead of per
/// request, in one shared buffer: the JSON values of a valid verify
/// answer's members (their names are added as the answer is written, see
/// [`Rendered::write_verify_members`]), the scopes joined with commas and
/// the `RateLimit-Policy` value. Header values are slices of it, so cloning
/// one copies nothing.
#[derive(Clone)]
pub struct Rendered {
    text: Bytes,
    key_id: (u32, u32),
    project_id: (u32, u32),
    members_end: u32,
    scopes_end: u32,
    policy_end: u32,
    /// Whether the joined scopes are a valid header value (else the header
    /// is sent empty). The other header ranges were emptied when invalid.
    scopes_header: bool,
}

/// What `HeaderValue::from_bytes` accepts: visible ASCII, space, tab and
/// bytes above 127 (`http`'s own rule).
fn is_header_value_byte(b: u8) -> bool {
    (b >= 32 && b != 127) || b == b'\t'
}

impl Rendered {
    fn new(k: &KeyRecord, default_rate: RateLimitConfig) -> Self {
        let mut text = Vec::with_capacity(256);
        // The values in the order of VERIFY_MEMBERS, each ended by a NUL
        // (which JSON text never holds: serde_json escapes it in strings).
        let member = |text: &mut Vec<u8>, value: &dyn erased::Json| {
            let start = text.len();
            value.write(text);
            let range = (start as u32, text.len() as u32);
            text.push(0);
            range
        };
        let key_id = member(&mut text, &&*k.id);
        let project_id = member(&mut text, &&*k.project_id);
        member(&mut text, &k.name);
        member(&mut text, &k.kind.as_str());
        member(&mut text, &k.environment);
        member(&mut text, &k.scopes);
        member(&mut text, &k.metadata);
        member(&mut text, &k.expires_at.map(crate::types::rfc3339));
        member(&mut text, &k.owner_id);
        let members_end = text.len() as u32;
        // A scope with a comma could not be told apart in the header; the
        // catalog allows none, and such a scope would simply not match.
        for (i, scope) in k.scopes.iter().filter(|s| !s.contains(',')).enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.extend_from_slice(scope.as_bytes());
        }
        let scopes_end = text.len() as u32;
        let rl = k.effective_rate_limit(default_rate);
        let _ = write!(text, "\"default\";q={};w={}", rl.limit, rl.window_secs);
        let policy_end = text.len() as u32;
        // The ids are JSON strings: without escapes their contents are the
        // ids themselves; otherwise the raw ids are appended.
        let mut raw_slice = |range: (u32, u32), raw: &str| {
            let (start, end) = (range.0 as usize + 1, range.1 as usize - 1);
            if text.get(start..end) == Some(raw.as_bytes()) {
                (start as u32, end as u32)
            } else {
                let start = text.len();
                text.extend_from_slice(raw.as_bytes());
                (start as u32, text.len() as u32)
            }
        };
        let key_id = raw_slice(key_id, &k.id);
        let project_id = raw_slice(project_id, &k.project_id);
        // The header values are checked here, once: a value that is not a
        // valid header value is sent empty (ids, catalog scopes and digits
        // always are valid).
        let valid = |range: (u32, u32)| {
            text[range.0 as usize..range.1 as usize]
                .iter()
                .all(|&b| is_header_value_byte(b))
        };
        let key_id = if valid(key_id) { key_id } else { (0, 0) };
        let project_id = if valid(project_id) {
            project_id
        } else {
            (0, 0)
        };
        let scopes_header = valid((members_end, scopes_end));
        let policy_end = if valid((scopes_end, policy_end)) {
            policy_end
        } else {
            scopes_end
        };
        text.shrink_to_fit();
        Rendered {
            text: Bytes::from(text),
            key_id,
            project_id,
            members_end,
            scopes_end,
            policy_end,
            scopes_header,
        }
    }

    /// Appends the JSON members of a valid verify answer, without braces:
    /// `"key_id":...,"owner_id":...`.
    pub fn write_verify_members(&self, out: &mut Vec<u8>) {
        // Two copies per member (its name with the comma before it, then its
        // value), the values' ends found with `memchr`.
        let text = &self.text[..self.members_end as usize];
        let mut start = 0;
        for (prefix, end) in VERIFY_MEMBER_PREFIXES
            .iter()
            .zip(memchr::memchr_iter(0, text))
        {
            out.extend_from_slice(prefix);
            out.extend_from_slice(&text[start..end]);
            start = end + 1;
        }
    }

    /// The length of what [`Rendered::write_verify_members`] writes.
    pub fn verify_members_len(&self) -> usize {
        let names: usize = VERIFY_MEMBERS.iter().map(|n| n.len() + 3).sum();
        // Each value's NUL becomes a comma; the last one is not written.
        self.members_end as usize + names - 1
    }

    /// A header value, sliced from the shared text without copying it or
    /// checking its bytes again on every request.
    fn header(&self, (start, end): (u32, u32)) -> HeaderValue {
        let bytes = self.text.slice(start as usize..end as usize);
        debug_assert!(bytes.iter().all(|&b| is_header_value_byte(b)));
        // SAFETY: the only requirement is that the bytes are a valid header
        // value; `Rendered::new` checked every header range with
        // `is_header_value_byte` (http's own rule) and emptied any range that
        // failed, and `text` is immutable afterwards. (Debug builds of `http`
        // check again and panic on a violation.)
        unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
    }

    /// `X-Gatehouse-Key-Id`.
    pub fn key_id(&self) -> HeaderValue {
        self.header(self.key_id)
    }

    /// `X-Gatehouse-Project-Id`.
    pub fn project_id(&self) -> HeaderValue {
        self.header(self.project_id)
    }

    /// `X-Gatehouse-Scopes`: the key's scopes joined with commas.
    pub fn scopes(&self) -> HeaderValue {
        if self.scopes_header {
            self.header((self.members_end, self.scopes_end))
        } else {
            HeaderValue::from_static("")
        }
    }

    /// `RateLimit-Policy`, e.g. `"default";q=100;w=60`.
    pub fn policy(&self) -> HeaderValue {
        self.header((self.scopes_end, self.policy_end))
    }

    fn scope_names(&self) -> impl Iterator<Item = &str> {
        std::str::from_utf8(&self.text[self.members_end as usize..self.scopes_end as usize])
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
    }
}

/// The members of a valid verify answer before `credits` and `ratelimit`,
/// in order ([`crate::routes::verify::VerifyValid`]).
const VERIFY_MEMBERS: [&str; 9] = [
    "key_id",
    "project_id",
    "name",
    "type",
    "environment",
    "scopes",
    "metadata",
    "expires_at",
    "owner_id",
];

/// [`VERIFY_MEMBERS`] as they are written before each value.
const VERIFY_MEMBER_PREFIXES: [&[u8]; 9] = [
    b"\"key_id\":",
    b",\"project_id\":",
    b",\"name\":",
    b",\"type\":",
    b",\"environment\":",
    b",\"scopes\":",
    b",\"metadata\":",
    b",\"expires_at\":",
    b",\"owner_id\":",
];

/// Writing a value as JSON into a buffer, for [`Rendered::new`].
mod erased {
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(out, self);
        }
    }
}

/// `record` as the cache keeps it, with every allocation the entry keeps
/// made here: run by [`off_worker`].
fn compact(record: KeyRecord, default_rate: RateLimitConfig) -> CachedKey {
    let mut key = CachedKey::new(record, default_rate);
    // The id may have been decoded elsewhere: keep a copy made here.
    key.id = Arc::from(&*key.id);
    // The shared text's first clone allocates its reference count (`Bytes`
    // promotes on first clone): make that happen here too.
    drop(key.rendered.text.clone());
    key
}

/// Runs `make` on a blocking thread (inline without a runtime). What it
/// allocates lands in that thread's malloc arena, away from the worker's
/// request buffers (see [`KeyStore::build`]).
async fn off_worker<T: Send + 'static>(
    make: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => match rt.spawn_blocking(make).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only while the runtime shuts down.
            Err(_) => Err(StoreError::Contended),
        },
        Err(_) => Ok(make()),
    }
}

/// Stripes of key hashes with a change counter each: a fill is retried
/// only when a key of its own stripe changed while it read.
const EPOCH_STRIPES: usize = 1024;

/// Cache fills after which [`return_freed_heap`] is worth its cost.
pub const FILLS_PER_TRIM: u64 = 1000;

/// Gives the heap memory that is free again back to the system. Filling the
/// cache reads whole records (on storage threads, in their malloc arenas)
/// and keeps a small part of each; glibc's malloc keeps the freed rest
/// resident until told otherwise, which after 100,000 fills is some tens of
/// MiB. `malloc_trim` walks the free lists of every arena (a few
/// milliseconds, on a blocking thread); the startup code calls it once a
/// second at most, and only after [`FILLS_PER_TRIM`] fills.
pub fn return_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises malloc's own free lists; it takes
    // the arena locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of this size and larger get pages of their own from the
/// system ([`tune_allocator`]).
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Keeps large, short-lived allocations out of malloc's arenas. glibc's
/// default threshold for giving an allocation its own mapping starts at
/// 128 KiB but rises to the size of every such block freed, up to 32 MiB;
/// after the first usage batch or cache-table growth is freed, the next
/// tables of a few MiB land in the arenas between long-lived cache
/// entries, and their pages stay resident after they are freed (measured:
/// 119 MiB resident with the cache full and two workers, 108 MiB with the
/// threshold fixed). Fixing it costs a system call per such allocation,
/// which are rare (tables growing, batches of thousands of rows).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters, under malloc's own
    // lock; calling it again (each server built in one process) is harmless.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
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
    /// The whole record, read from storage, for a successful check of
    /// [`Purpose::OwnApi`] only.
    pub key: Option<Arc<KeyRecord>>,
    pub rendered: Option<Rendered>,
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
    /// Where keys are read from on a miss.
    store: Arc<dyn Store>,
    cache: Cache<[u8; 32], Arc<KeyHandle>>,
    /// Hashes storage does not know, until the instant given.
    unknown: Cache<[u8; 32], Instant>,
    /// Windows and balances by state id ([`KeyRecord::state_id`]).
    live: Mutex<HashMap<Arc<str>, LiveCell>>,
    /// Project ids shared by the cached keys of a project (one copy each).
    projects: Mutex<HashSet<Arc<str>>>,
    capacity: usize,
    /// Keys read from storage into the cache so far.
    fills: AtomicU64,
    /// Change counters, one per stripe of key hashes ([`EPOCH_STRIPES`]).
    epochs: Box<[AtomicU64]>,
    fill_lock: Mutex<()>,
    imported: RwLock<HashSet<[u8; 32]>>,
    negative_ttl: Duration,
    refresh_after: Duration,
    prefix: String,
    default_rate: RateLimitConfig,
    /// Rate-limit windows shared through Redis, when configured.
    shared: Option<Arc<SharedWindows>>,
    pub usage: Usage,
    /// How current the cache is with the key change feed.
    feed: Arc<super::feed_health::FeedHealth>,
    /// What [`KeyState::loaded`] counts from.
    started: Instant,
}

impl KeyStore {
    /// A cache over `store`, the repository it fills from.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Self {
        let capacity = config.keys.cache_capacity.max(1);
        KeyStore {
            store,
            cache: Cache::new(capacity),
            unknown: Cache::new(capacity),
            live: Mutex::new(HashMap::new()),
            projects: Mutex::new(HashSet::new()),
            capacity,
            fills: AtomicU64::new(0),
            epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            fill_lock: Mutex::new(()),
            imported: RwLock::new(HashSet::new()),
            negative_ttl: Duration::from_secs(config.keys.negative_cache_ttl_secs),
            refresh_after: Duration::from_secs(config.keys.cache_ttl_secs),
            prefix: config.keys.prefix.clone(),
            default_rate: config.keys.default_rate_limit,
            shared: None,
            usage: Usage::default(),
            feed: Arc::new(super::feed_health::FeedHealth::new(
                Duration::from_millis(config.cluster.max_staleness_ms),
                config.uses_postgres(),
            )),
            started: Instant::now(),
        }
    }

    /// Milliseconds since the store started: the clock of [`KeyState::loaded`].
    fn stamp(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// How current the cache is with the key change feed (the feed task
    /// keeps it; checks and `/metrics` read it).
    pub fn feed(&self) -> &super::feed_health::FeedHealth {
        &self.feed
    }

    /// Decides rate limits in Redis from now on (see [`SharedWindows`]).
    pub fn share_windows(&mut self, shared: Arc<SharedWindows>) {
        self.shared = Some(shared);
    }

    /// How many keys were read from storage into the cache so far.
    pub fn fills(&self) -> u64 {
        self.fills.load(Ordering::Relaxed)
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

    /// The record as the cache keeps it, its project id shared with the
    /// other keys of the project.
    fn cached(&self, record: KeyRecord) -> CachedKey {
        let mut key = CachedKey::new(record, self.default_rate);
        self.share_project_id(&mut key);
        key
    }

    /// Points a cached key's project id at the copy the other keys of its
    /// project use. The table of project ids is bounded: past the cache's
    /// capacity it starts afresh (ids in use stay valid).
    fn share_project_id(&self, key: &mut CachedKey) {
        let mut projects = self.projects.lock().expect("projects lock");
        match projects.get(&key.project_id) {
            Some(shared) => key.project_id = shared.clone(),
            None => {
                if projects.len() >= self.capacity {
                    projects.clear();
                }
                projects.insert(key.project_id.clone());
            }
        }
    }

    /// A new cache entry for `record`, with a live state of its own (the
    /// fill swaps in the existing one, if any).
    ///
    /// Built on a blocking thread, not on the worker: a cached key lives
    /// for minutes while the worker's heap churns with requests, and
    /// entries placed between request buffers keep pages resident after
    /// those buffers are freed (measured with the cache full: 36 MiB free
    /// but resident in the two workers' malloc arenas). The blocking
    /// threads' arenas hold little else, so entries pack densely there.
    async fn build(&self, record: KeyRecord) -> Result<Arc<KeyHandle>, StoreError> {
        let default_rate = self.default_rate;
        off_worker(move || {
            let key = compact(record, default_rate);
            let live = Arc::new(Mutex::new(Live {
                id: key.state_id().clone(),
                window: SlidingWindow::default(),
            }));
            Arc::new(KeyHandle {
                state: Mutex::new(KeyState {
                    key,
                    loaded: 0, // set by the fill
                    live,
                }),
            })
        })
        .await
    }

    /// Points a cached key at the live state its record says it draws on.
    /// A key that was just rotated carries its window and balance over to
    /// its successor, unless the successor already has state of its own.
    fn relink(&self, st: &mut KeyState) {
        let want = st.key.state_id().clone();
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

    /// The change counter of `hash`'s stripe.
    fn epoch(&self, hash: &[u8; 32]) -> &AtomicU64 {
        let stripe = u16::from_le_bytes([hash[0], hash[1]]) as usize % EPOCH_STRIPES;
        &self.epochs[stripe]
    }

    async fn handle(&self, hash: [u8; 32]) -> Result<Option<Arc<KeyHandle>>, StoreError> {
        if let Some(handle) = self.cache.get(&hash) {
            let loaded = handle.state.lock().expect("key lock").loaded;
            let age = Duration::from_millis(self.stamp().saturating_sub(loaded));
            // Re-read when old, or when the change feed cannot vouch for
            // it (a failed read is then a 503: fail closed).
            if age > self.refresh_after || !self.feed.vouches_for(age) {
                self.refresh(hash, &handle).await?;
            }
            return Ok(Some(handle));
        }
        // A key remembered as unknown is a cached answer too: trusted only
        // while the change feed vouches for its age, else read again (and a
        // failed read is a 503, never `invalid_key` from a stale entry).
        if self.unknown.get(&hash).is_some_and(|until| {
            let now = Instant::now();
            now < until
                && self
                    .feed
                    .vouches_for(self.negative_ttl.saturating_sub(until - now))
        }) {
            return Ok(None);
        }
        for _ in 0..8 {
            let epoch = self.epoch(&hash).load(Ordering::SeqCst);
            let record = self.store.find_key_by_hash(KeyHash(hash)).await?;
            let built = match record {
                Some(record) => Some(self.build(record).await?),
                None => None,
            };
            let _fill = self.fill_lock.lock().expect("fill lock");
            if self.epoch(&hash).load(Ordering::SeqCst) != epoch {
                continue; // the key changed meanwhile: read again
            }
            if let Some(existing) = self.cache.get(&hash) {
                return Ok(Some(existing));
            }
            return Ok(match built {
                Some(handle) => {
                    {
                        let mut st = handle.state.lock().expect("key lock");
                        self.share_project_id(&mut st.key);
                        let state_id = st.key.state_id().clone();
                        let live = st.live.clone();
                        st.live = self
                            .live
                            .lock()
                            .expect("live lock")
                            .entry(state_id)
                            .or_insert(live)
                            .clone();
                        st.loaded = self.stamp();
                    }
                    self.cache.insert(hash, handle.clone());
                    self.unknown.remove(&hash);
                    self.fills.fetch_add(1, Ordering::Relaxed);
                    Some(handle)
                }
                None => {
                    self.unknown
                        .insert(hash, Instant::now() + self.negative_ttl);
                    None
                }
            });
        }
        Err(StoreError::Contended)
    }

    async fn refresh(&self, hash: [u8; 32], handle: &KeyHandle) -> Result<(), StoreError> {
        let epoch = self.epoch(&hash).load(Ordering::SeqCst);
        let record = self.store.find_key_by_hash(KeyHash(hash)).await?;
        // Built off the worker like a fill (see `build`): cached keys are
        // re-read every `keys.cache_ttl_secs` for as long as they are used.
        let default_rate = self.default_rate;
        let key = match record {
            Some(record) => Some(off_worker(move || compact(record, default_rate)).await?),
            None => None,
        };
        let _fill = self.fill_lock.lock().expect("fill lock");
        let mut st = handle.state.lock().expect("key lock");
        st.loaded = self.stamp();
        if self.epoch(&hash).load(Ordering::SeqCst) == epoch {
            match key {
                // Nothing changed (the usual case): the entry stays where it
                // is, and the copy just built is freed on this side.
                Some(key) if key.same_as(&st.key) => {}
                Some(mut key) => {
                    // Settings from storage; the live window stays. The id
                    // the live state shares stays too (one copy per key).
                    if key.id == st.key.id {
                        key.id = st.key.id.clone();
                    }
                    self.share_project_id(&mut key);
                    st.key = key;
                    self.relink(&mut st);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Publishes a change to a key before its response is sent.
    pub fn updated(&self, record: &KeyRecord) {
        let _fill = self.fill_lock.lock().expect("fill lock");
        self.epoch(&record.hash).fetch_add(1, Ordering::SeqCst);
        self.unknown.remove(&record.hash);
        match self.cache.get(&record.hash) {
            Some(handle) => {
                let mut st = handle.state.lock().expect("key lock");
                st.key = self.cached(record.clone());
                st.loaded = self.stamp();
                self.relink(&mut st);
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
            }
        }
    }

    /// Drops the cached copy of a key changed by another process (read from
    /// the key change feed); its window stays.
    pub fn invalidate(&self, hash: &[u8; 32]) {
        let _fill = self.fill_lock.lock().expect("fill lock");
        self.epoch(hash).fetch_add(1, Ordering::SeqCst);
        self.cache.remove(hash);
        self.unknown.remove(hash);
    }

    /// Forgets live state nothing needs: no cached key uses it and its
    /// window has run empty. Returns how many remain.
    pub fn prune_idle(&self) -> usize {
        let now = self.store.clock().now_ms();
        let mut map = self.live.lock().expect("live lock");
        map.retain(|_, live| {
            Arc::strong_count(live) > 1 || !live.lock().expect("live lock").window.is_idle(now)
        });
        map.len()
    }

    /// Runs the checks of SPEC section 8 in order; the first failure wins.
    /// A refusal before the rate-limit step does not count against the
    /// window; a refused request spends neither credits nor quota. Refusals
    /// as `invalid_key` say nothing about the key (no rate-limit state).
    ///
    /// Without Redis, for a key without credits or quota, everything is
    /// decided under the key's lock without awaiting anything. A shared
    /// window (one Redis round trip) and a spend in storage are awaited
    /// outside the lock.
    pub async fn check(
        &self,
        raw: &str,
        input: &CheckInput<'_>,
        quota: Option<&Quotas>,
    ) -> Result<Checked, StoreError> {
        let Some(hash) = self.hash_of(raw) else {
            return Ok(Checked::denied(Denial::Malformed));
        };
        let Some(handle) = self.handle(hash).await? else {
            return Ok(Checked::denied(Denial::Invalid));
        };
        let mut quota_limit = None;
        if let Some(quota) = quota.filter(|_| input.purpose == Purpose::Verify) {
            let project_id = handle
                .state
                .lock()
                .expect("key lock")
                .key
                .project_id
                .clone();
            quota_limit = quota
                .limit_for(&*self.store, &self.usage, &project_id)
                .await?;
        }
        let now_ms = self.store.clock().now_ms();
        let now = now_ms / 1000;
        let shared = self.shared.as_deref().filter(|s| s.is_healthy());
        let pending = {
            let st = handle.state.lock().expect("key lock");
            let key = &st.key;
            if !key.is_active(now) {
                if input.purpose == Purpose::Verify {
                    let kind = Denial::Invalid.usage_kind();
                    self.usage
                        .record(&key.id, &key.project_id, kind, now, false);
                }
                return Ok(Checked::denied(Denial::Invalid));
            }
            let rl = key.rate_limit;
            let before_rate = if !key.ip_allowed(input.ip) {
                Some(Denial::ForbiddenIp)
            } else if (key.kind == KeyType::Publishable && !is_safe_method(input.method))
                || !input.scopes.iter().all(|s| key.has_scope(s))
            {
                Some(Denial::InsufficientScope)
            } else {
                None
            };
            let spends = input.purpose == Purpose::Verify
                && before_rate.is_none()
                && (key.has_credits || quota_limit.is_some());
            if shared.is_none() && !spends {
                // Decided here and now: the common case costs one lock.
                let rate = st.live.lock().expect("live lock").window.check(
                    rl.limit,
                    rl.window_secs,
                    now_ms,
                    before_rate.is_none(),
                );
                let outcome = match before_rate {
                    Some(denial) => Err(denial),
                    None if !rate.allowed => Err(Denial::RateLimited),
                    None => Ok(()),
                };
                self.record(input.purpose, &key.id, &key.project_id, outcome, now);
                Err(Checked {
                    credits: None,
                    rendered: Some(key.rendered.clone()),
                    key: None,
                    rate: Some(rate),
                    outcome,
                })
            } else {
                Ok(Pending {
                    id: key.id.clone(),
                    project_id: key.project_id.clone(),
                    state_id: key.state_id().clone(),
                    live: st.live.clone(),
                    rl,
                    before_rate,
                    spends_credits: key.has_credits,
                    rendered: key.rendered.clone(),
                })
            }
        };
        let pending = match pending {
            Ok(pending) => pending,
            Err(decided) => return self.finish(hash, input, decided, now).await,
        };
        let take = pending.before_rate.is_none();
        let rl = pending.rl;
        let shared_rate = match shared {
            Some(shared) => {
                shared
                    .check(&pending.state_id, rl.limit, rl.window_secs, take)
                    .await
            }
            None => None,
        };
        let rate = {
            let mut live = pending.live.lock().expect("live lock");
            match shared_rate {
                // Kept here too, for the moment Redis cannot answer.
                Some(rate) => {
                    live.window.absorb(&rate, now_ms);
                    rate
                }
                None => live.window.check(rl.limit, rl.window_secs, now_ms, take),
            }
        };
        let mut credits = None;
        let outcome = match pending.before_rate {
            Some(denial) => Err(denial),
            None if !rate.allowed => Err(Denial::RateLimited),
            None if input.purpose == Purpose::Verify => {
                self.spend(&pending, input.cost, quota, quota_limit, now, &mut credits)
                    .await?
            }
            None => Ok(()),
        };
        self.record(
            input.purpose,
            &pending.id,
            &pending.project_id,
            outcome,
            now,
        );
        let checked = Checked {
            credits,
            rendered: Some(pending.rendered),
            key: None,
            rate: Some(rate),
            outcome,
        };
        self.finish(hash, input, checked, now).await
    }

    /// The credit and quota steps, in storage: credits first (the first
    /// failure wins), then the quota, giving the credits back when the
    /// quota refuses.
    async fn spend(
        &self,
        pending: &Pending,
        cost: i64,
        quotas: Option<&Quotas>,
        quota_limit: Option<QuotaLimit>,
        now: i64,
        credits: &mut Option<i64>,
    ) -> Result<Result<(), Denial>, StoreError> {
        let state_id = KeyId::new(pending.state_id.clone());
        let mut refund = None;
        if pending.spends_credits {
            match self
                .store
                .spend_credits(state_id.clone(), cost, now)
                .await?
            {
                CreditSpend::Spent {
                    remaining,
                    period_start,
                } => {
                    *credits = Some(remaining);
                    refund = (cost > 0).then_some(period_start);
                }
                CreditSpend::Unlimited => {}
                CreditSpend::Insufficient { .. } => return Ok(Err(Denial::UsageExceeded)),
            }
        }
        if let Some(quota) = quota_limit {
            if !self
                .spend_quota(quotas, &pending.project_id, quota, now)
                .await?
            {
                if let Some(period_start) = refund {
                    self.store
                        .refund_credits(state_id, cost, period_start)
                        .await?;
                    *credits = credits.map(|c| c + cost);
                }
                return Ok(Err(Denial::QuotaExceeded));
            }
        }
        Ok(Ok(()))
    }

    /// Counts a verification against the project's monthly quota; false
    /// when the quota refuses. When storage says the plan changed (through
    /// another node), the plan is read again and the count tried once more
    /// with its limit; a second change in between refuses.
    async fn spend_quota(
        &self,
        quotas: Option<&Quotas>,
        project_id: &Arc<str>,
        mut quota: QuotaLimit,
        now: i64,
    ) -> Result<bool, StoreError> {
        for retried in [false, true] {
            let project = ProjectId::new(project_id.clone());
            let plan = quota.plan.to_string();
            match self
                .store
                .spend_quota(project, plan, quota.limit, now)
                .await?
            {
                QuotaSpend::Spent => return Ok(true),
                QuotaSpend::Exhausted => return Ok(false),
                QuotaSpend::PlanChanged => {
                    let Some(quotas) = quotas.filter(|_| !retried) else {
                        return Ok(false);
                    };
                    quotas.invalidate(project_id);
                    match quotas
                        .limit_for(&*self.store, &self.usage, project_id)
                        .await?
                    {
                        Some(next) => quota = next,
                        None => return Ok(true), // no monthly limit now
                    }
                }
            }
        }
        Ok(false)
    }

    /// Counts a check in usage.
    fn record(
        &self,
        purpose: Purpose,
        key_id: &Arc<str>,
        project_id: &Arc<str>,
        outcome: Result<(), Denial>,
        now: i64,
    ) {
        match (purpose, outcome) {
            (Purpose::Verify, Ok(())) => {
                self.usage
                    .record(key_id, project_id, UsageKind::Valid, now, true)
            }
            (Purpose::Verify, Err(d)) => {
                self.usage
                    .record(key_id, project_id, d.usage_kind(), now, false)
            }
            (Purpose::OwnApi, Ok(())) => self.usage.touch(key_id, project_id, now),
            (Purpose::OwnApi, Err(_)) => {}
        }
    }

    /// A successful check of Gatehouse's own API also carries the whole
    /// record: the cache keeps only what checks need.
    async fn finish(
        &self,
        hash: [u8; 32],
        input: &CheckInput<'_>,
        checked: Checked,
        now: i64,
    ) -> Result<Checked, StoreError> {
        if input.purpose == Purpose::OwnApi && checked.outcome.is_ok() {
            return Ok(match self.store.find_key_by_hash(KeyHash(hash)).await? {
                Some(record) if record.is_active(now) => Checked {
                    key: Some(Arc::new(record)),
                    ..checked
                },
                _ => Checked {
                    rate: None,
                    credits: None,
                    rendered: None,
                    ..Checked::denied(Denial::Invalid)
                },
            });
        }
        Ok(checked)
    }
}

/// What a check that awaits something (Redis, or a spend in storage)
/// carries out of the key's lock.
struct Pending {
    id: Arc<str>,
    project_id: Arc<str>,
    state_id: Arc<str>,
    live: LiveCell,
    rl: RateLimitConfig,
    before_rate: Option<Denial>,
    spends_credits: bool,
    rendered: Rendered,
}

#[cfg(test)]
mod memory_tests {
    //! What a cached key costs, part by part, counted by the allocator.
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    }

    /// Heap bytes are rounded up the way glibc's malloc does (16-byte
    /// chunks with an 8-byte header), so the figures are what RSS pays.
    fn charged(size: usize) -> isize {
        (size.max(24) + 8).div_ceil(16) as isize * 16
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = LIVE_BYTES.try_with(|b| b.set(b.get() + charged(layout.size())));
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = LIVE_BYTES.try_with(|b| b.set(b.get() - charged(layout.size())));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
            let _ = LIVE_BYTES.try_with(|b| b.set(b.get() - charged(layout.size()) + charged(new)));
            unsafe { System.realloc(ptr, layout, new) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn heap<T>(make: impl FnOnce() -> T) -> (T, isize) {
        let before = LIVE_BYTES.with(Cell::get);
        let value = make();
        (value, LIVE_BYTES.with(Cell::get) - before)
    }

    fn bench_record(n: u32) -> KeyRecord {
        KeyRecord {
            id: Arc::from(format!("key_{n:020}")),
            project_id: Arc::from("prj_4fQm2ZkT8pW1xN0s"),
            hash: sha256(&n.to_le_bytes()),
            prefix: "gate_sk_AbCdEfGh".into(),
            name: format!("bench key {n}"),
            kind: KeyType::Secret,
            environment: "production".into(),
            scopes: vec!["keys:read".into()],
            rate_limit: None,
            owner_id: None,
            credits: None,
            allowed_ips: None,
            metadata: serde_json::json!({"team": "bench"}),
            created_at: 1_764_000_000,
            updated_at: 1_764_000_000,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            created_by: None,
            rotated_to: None,
        }
    }

    #[test]
    fn member_prefixes_are_the_member_names() {
        for (i, (prefix, name)) in VERIFY_MEMBER_PREFIXES
            .iter()
            .zip(VERIFY_MEMBERS)
            .enumerate()
        {
            let comma = if i == 0 { "" } else { "," };
            assert_eq!(*prefix, format!("{comma}\"{name}\":").as_bytes());
        }
    }

    #[test]
    fn a_refresh_keeps_the_entry_only_when_nothing_changed() {
        let rate = RateLimitConfig::default();
        let cached = compact(bench_record(5), rate);
        assert!(compact(bench_record(5), rate).same_as(&cached));
        let changes = [
            KeyRecord {
                name: "renamed".into(),
                ..bench_record(5)
            },
            KeyRecord {
                revoked_at: Some(1_764_000_100),
                ..bench_record(5)
            },
            KeyRecord {
                rotated_to: Some(Arc::from("key_next")),
                ..bench_record(5)
            },
            KeyRecord {
                scopes: vec![],
                ..bench_record(5)
            },
            KeyRecord {
                rate_limit: Some(RateLimitConfig {
                    limit: 7,
                    window_secs: 1,
                }),
                ..bench_record(5)
            },
        ];
        for changed in changes {
            assert!(!compact(changed, rate).same_as(&cached));
        }
    }

    #[test]
    fn rendered_header_values_are_checked_once() {
        let ok = Rendered::new(&bench_record(3), RateLimitConfig::default());
        assert_eq!(ok.key_id(), "key_00000000000000000003");
        assert_eq!(ok.scopes(), "keys:read");
        // Values that cannot be header values are sent empty, as they were
        // when every request checked them; the scopes still match.
        let bad = KeyRecord {
            id: Arc::from("key_\u{1}x"),
            project_id: Arc::from("prj_\u{7f}"),
            scopes: vec!["keys:read".into(), "odd\nscope".into()],
            ..bench_record(3)
        };
        let bad = Rendered::new(&bad, RateLimitConfig::default());
        assert_eq!(bad.key_id(), "");
        assert_eq!(bad.project_id(), "");
        assert_eq!(bad.scopes(), "");
        assert!(bad.scope_names().any(|s| s == "odd\nscope"));
        assert!(bad.policy().to_str().unwrap().starts_with("\"default\";q="));
    }

    #[test]
    fn what_a_cached_key_costs() {
        const N: usize = 10_000;
        let ids: Vec<Arc<str>> = (0..N as u32).map(|n| bench_record(n).id).collect();
        let hashes: Vec<[u8; 32]> = (0..N as u32).map(|n| bench_record(n).hash).collect();
        // As storage hands them over (the ids are the ones the live state uses).
        let (records, record_bytes) = heap(|| {
            ids.iter()
                .enumerate()
                .map(|(n, id)| KeyRecord {
                    id: id.clone(),
                    ..bench_record(n as u32)
                })
                .collect::<Vec<_>>()
        });
        let (live, live_bytes) = heap(|| {
            let mut map: HashMap<Arc<str>, LiveCell> = HashMap::new();
            for id in &ids {
                map.insert(
                    id.clone(),
                    Arc::new(Mutex::new(Live {
                        id: id.clone(),
                        window: SlidingWindow::default(),
                    })),
                );
            }
            map
        });
        // The record becomes the cached key; its other parts are freed.
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let opened = crate::store::open::open(&config).unwrap();
        let store = KeyStore::new(&config, opened.store);
        let (handles, conversion_bytes) = heap(|| {
            // Pushed into a new Vec: collecting in place would keep the
            // records' buffer alive and count it.
            let mut handles = Vec::with_capacity(N);
            for r in records {
                let live = live[&r.id].clone();
                handles.push(Arc::new(KeyHandle {
                    state: Mutex::new(KeyState {
                        key: store.cached(r),
                        loaded: store.stamp(),
                        live,
                    }),
                }));
            }
            handles
        });
        let (cache, cache_bytes) = heap(|| {
            let cache: Cache<[u8; 32], Arc<KeyHandle>> = Cache::new(N);
            for (hash, h) in hashes.iter().zip(&handles) {
                cache.insert(*hash, h.clone());
            }
            cache
        });
        let per = |b: isize| b / N as isize;
        // The Vec holding the handles in this test is not part of the cost.
        let vec = charged(std::mem::size_of::<usize>() * N);
        let parts = [
            ("cached key", per(record_bytes + conversion_bytes - vec)),
            ("live state", per(live_bytes)),
            ("cache entry", per(cache_bytes)),
        ];
        let total: isize = parts.iter().map(|p| p.1).sum();
        println!(
            "heap per cached key: {parts:?}, total {total} bytes (KeyHandle {} bytes, text {} bytes)",
            std::mem::size_of::<KeyHandle>(),
            handles[7].state.lock().unwrap().key.rendered.text.len()
        );
        let text = handles[7].state.lock().unwrap().key.rendered.clone();
        let mut written = b"{".to_vec();
        text.write_verify_members(&mut written);
        written.push(b'}');
        assert_eq!(written.len(), text.verify_members_len() + 2);
        let members: serde_json::Value = serde_json::from_slice(&written).unwrap();
        let text_of = String::from_utf8(written.clone()).unwrap();
        let at: Vec<usize> = VERIFY_MEMBERS
            .iter()
            .map(|n| text_of.find(&format!("\"{n}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text_of}");
        assert_eq!(members.as_object().unwrap().len(), VERIFY_MEMBERS.len());
        assert_eq!(members["type"], "secret");
        assert_eq!(members["expires_at"], serde_json::Value::Null);
        assert_eq!(members["key_id"], "key_00000000000000000007");
        assert_eq!(members["metadata"]["team"], "bench");
        assert_eq!(text.key_id(), "key_00000000000000000007");
        assert_eq!(text.project_id(), "prj_4fQm2ZkT8pW1xN0s");
        assert_eq!(text.scopes(), "keys:read");
        assert_eq!(text.policy(), "\"default\";q=100;w=60");
        drop((cache, handles, live));
        // It was 2,297 bytes when the cache kept the whole record and its
        // rendered answer in separate allocations, 745 with the members'
        // names in every key's text, 601 before the rare fields were boxed
        // and the load time shrank to 8 bytes.
        assert!(total < 600, "{total} bytes per cached key");
    }
}
