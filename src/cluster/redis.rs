//! Shared sliding windows in Redis: one server-side script per check (one
//! round trip, `EVALSHA`; the script is loaded when the connection is made
//! and again if Redis answers `NOSCRIPT`), with the very arithmetic of
//! [`crate::keys::limiter::SlidingWindow`], timed by Redis's own clock so
//! nodes with drifting clocks still share one window.
//!
//! Redis never makes a check fail or hang: every call has a short timeout
//! (`redis.timeout_ms`), and on any error the node decides on its own
//! window ([`SharedWindows::check`] returns `None`), says so once in the
//! log, counts it in `/metrics` and probes Redis every
//! `redis.probe_interval_ms` until it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::MultiplexedConnection;

use crate::config::RedisConfig;
use crate::keys::limiter::RateStatus;

/// The sliding-window check. KEYS[1] is the window's hash; ARGV: limit,
/// window in seconds, 1 to count the request or 0 to only report.
/// Returns `{allowed, remaining, reset_secs}`.
const SCRIPT: &str = r#"
local limit = tonumber(ARGV[1])
local w = tonumber(ARGV[2]) * 1000
local take = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'start', 'prev', 'cur')
local start = tonumber(s[1]) or 0
local prev = tonumber(s[2]) or 0
local cur = tonumber(s[3]) or 0
local ws = now - (now % w)
if ws ~= start then
  if ws - start == w then prev = cur else prev = 0 end
  cur = 0
  start = ws
end
local function estimate()
  return prev * ((w - (now - start)) / w) + cur
end
local function ms_until_at_most(target)
  local left = start + w - now
  if estimate() <= target then return 0 end
  if target >= cur and prev > 0 then
    local x = left - (target - cur) * w / prev
    if x < 0 then x = 0 end
    return math.ceil(x)
  end
  if target < 0 then return left + w end
  local after = 0
  if cur > 0 then
    after = w - target * w / cur
    if after < 0 then after = 0 end
  end
  return math.ceil(left + after)
end
local allowed = estimate() + 1 <= limit
if take and allowed then
  cur = cur + 1
  redis.call('HSET', KEYS[1], 'start', start, 'prev', prev, 'cur', cur)
  redis.call('PEXPIRE', KEYS[1], 2 * w + 1000)
end
local after = estimate()
local remaining = math.floor(limit - after)
if remaining < 0 then remaining = 0 end
local wait
if take and not allowed then
  wait = ms_until_at_most(limit - 1)
elseif after >= 1 then
  wait = ms_until_at_most(math.ceil(after) - 1)
else
  wait = 0
end
local reset = math.ceil(wait / 1000)
if take and not allowed and reset < 1 then reset = 1 end
local ok = 0
if allowed or not take then ok = 1 end
return {ok, remaining, reset}
"#;

/// Checks `redis.url`: a `redis://` or `rediss://` URL the client accepts.
/// The error never repeats the URL (it may hold a password).
pub fn parse_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|_| "is not a URL (expected redis://host:6379 or rediss://...)".to_string())?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err("must start with redis:// or rediss:// (TLS)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err("names a database that is not a number (redis://host:6379/0)".into());
    }
    if redis::Client::open(url.as_str()).is_err() {
        return Err("is not a Redis URL the client accepts".into());
    }
    Ok(url)
}

/// The metrics of where rate limits are decided.
#[derive(Clone, Default)]
pub struct BackendMetrics {
    /// 1 while checks use Redis, else 0.
    pub redis: Gauge,
    /// 1 while checks use the node's own windows, else 0.
    pub local: Gauge,
    /// Times the node fell back from Redis to its own windows.
    pub fallbacks: Counter,
}

impl BackendMetrics {
    fn on_redis(&self, yes: bool) {
        self.redis.set(i64::from(yes));
        self.local.set(i64::from(!yes));
    }
}

pub struct SharedWindows {
    client: redis::Client,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    probe_every: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Whether checks go to Redis; false from start until the first connect.
    healthy: AtomicBool,
    metrics: BackendMetrics,
}

impl SharedWindows {
    /// Nothing is connected yet: [`SharedWindows::run`] connects and keeps
    /// the connection (spawn it once on a long-lived runtime).
    pub fn new(config: &RedisConfig, metrics: BackendMetrics) -> Option<Arc<SharedWindows>> {
        let url = config.url.as_ref()?;
        let client = redis::Client::open(url.expose().trim()).ok()?;
        metrics.on_redis(false);
        Some(Arc::new(SharedWindows {
            client,
            script: redis::Script::new(SCRIPT),
            prefix: config.key_prefix.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            probe_every: Duration::from_millis(config.probe_interval_ms.max(100)),
            conn: Mutex::new(None),
            healthy: AtomicBool::new(false),
            metrics,
        }))
    }

    /// Whether checks are decided in Redis right now.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_healthy() {
            return None;
        }
        self.conn.lock().expect("redis lock").clone()
    }

    /// Checks the shared window of `state_id`; `None` when Redis cannot
    /// answer within the timeout (the caller uses its own window).
    pub async fn check(
        &self,
        state_id: &str,
        limit: u32,
        window_secs: u32,
        take: bool,
    ) -> Option<RateStatus> {
        let mut conn = self.connection()?;
        let mut key = String::with_capacity(self.prefix.len() + 3 + state_id.len());
        key.push_str(&self.prefix);
        key.push_str("rl:");
        key.push_str(state_id);
        let call = async {
            self.script
                .key(&key)
                .arg(limit)
                .arg(window_secs.max(1))
                .arg(u8::from(take))
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, reset))) => Some(RateStatus {
                allowed: allowed == 1,
                limit,
                window_secs,
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset_secs: u64::try_from(reset).unwrap_or(0),
            }),
            Ok(Err(e)) => {
                self.lost(&e.to_string());
                None
            }
            Err(_) => {
                self.lost("no answer within redis.timeout_ms");
                None
            }
        }
    }

    /// Readiness: Redis answers a PING within the timeout.
    pub async fn ping(&self) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        let ping = redis::cmd("PING");
        let call = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(500)), call).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                self.lost(&e.to_string());
                false
            }
            Err(_) => {
                self.lost("no answer to PING");
                false
            }
        }
    }

    /// Falls back to the node's own windows (said once per outage).
    fn lost(&self, reason: &str) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            self.conn.lock().expect("redis lock").take();
            self.metrics.on_redis(false);
            self.metrics.fallbacks.inc();
            tracing::warn!(
                reason,
                "Redis is unreachable: rate limits fall back to this node's own windows"
            );
        }
    }

    async fn connect(&self) -> Result<(), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.probe_every.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.timeout.max(Duration::from_millis(500))));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        *self.conn.lock().expect("redis lock") = Some(conn);
        Ok(())
    }

    /// Connects, and reconnects whenever Redis was lost. Runs forever.
    pub async fn run(self: Arc<Self>) {
        let mut first = true;
        loop {
            if !self.is_healthy() {
                match self.connect().await {
                    Ok(()) => {
                        self.healthy.store(true, Ordering::Release);
                        self.metrics.on_redis(true);
                        if first {
                            tracing::info!("rate limits are shared through Redis");
                        } else {
                            tracing::info!("Redis answers again: rate limits are shared again");
                        }
                    }
                    Err(e) if first => {
                        self.metrics.fallbacks.inc();
                        tracing::warn!(
                            error = %e,
                            "cannot reach Redis: rate limits fall back to this node's own windows until it answers"
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "Redis still unreachable"),
                }
                first = false;
            }
            tokio::time::sleep(self.probe_every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_repeating_them() {
        assert!(parse_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_url("rediss://user:pw@redis.acme.test:6380/3").is_ok());
        for bad in ["http://x", "redis://", "redis://h/abc", "not a url"] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
        let e = parse_url("https://u:s3cret@h").unwrap_err();
        assert!(!e.contains("s3cret"));
    }

    #[test]
    fn nothing_without_a_url() {
        assert!(SharedWindows::new(&RedisConfig::default(), BackendMetrics::default()).is_none());
    }
}
