//! SPEC section 3: SQLite pragmas on pooled connections, migrations; and
//! storage faults (a full disk, a read-only database, a write lock held
//! past the busy timeout): 503 `unavailable` with `Retry-After`, never 500;
//! key checks answer from the cache; nothing acknowledged is lost; the
//! server recovers by itself.

use std::time::{Duration, Instant};

use gatehouse::config::Synchronous;
use gatehouse::startup::{Application, StartupError};
use gatehouse::store::sqlite::{latest_version, DbError, SimulatedFault, SqliteStore};
use serde_json::json;

use crate::helpers::{
    send, send_body, spawn_app, spawn_app_with, test_config, Resp, TestApp, Tokens,
};
use crate::keys::{create_key, verify};

/// The SQLite handle (this module tests SQLite itself).
fn sqlite(app: &TestApp) -> &SqliteStore {
    app.state
        .store
        .as_any()
        .downcast_ref::<SqliteStore>()
        .expect("the app runs on SQLite")
}

#[test]
fn pooled_connections_use_wal_foreign_keys_and_full_sync_by_default() {
    let app = spawn_app();
    // Ask several times: each call may get another pooled connection.
    for _ in 0..4 {
        let p = app.block_on(sqlite(&app).pragmas()).unwrap();
        assert_eq!(p.journal_mode, "wal");
        assert_eq!(p.foreign_keys, 1);
        assert_eq!(p.synchronous, 2, "FULL");
        assert_eq!(p.busy_timeout_ms, 5000);
    }
}

#[test]
fn synchronous_and_busy_timeout_follow_the_configuration() {
    let app = spawn_app_with(|c| {
        c.database.synchronous = Synchronous::Normal;
        c.database.busy_timeout_ms = 1234;
    });
    let p = app.block_on(sqlite(&app).pragmas()).unwrap();
    assert_eq!(p.synchronous, 1, "NORMAL");
    assert_eq!(p.busy_timeout_ms, 1234);
    assert_eq!(p.journal_mode, "wal");
}

#[test]
fn the_database_file_is_migrated_to_the_newest_schema() {
    let app = spawn_app();
    let path = sqlite(&app).path().to_path_buf();
    assert!(path.ends_with("data/gatehouse.db"));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest_version());
    for table in ["users", "projects", "memberships", "audit_events"] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{table} exists");
    }
    // Foreign keys are enforced through the pool.
    let err = app
        .block_on(sqlite(&app).call(|c| {
            c.execute(
                "INSERT INTO memberships (project_id, user_id, role, created_at) VALUES ('p', 'u', 'owner', 0)",
                [],
            )?;
            Ok(())
        }))
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

#[test]
fn a_database_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let path = config.database_path();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 999;")
            .unwrap();
    }
    match Application::build(config.clone()) {
        Err(StartupError::Store(gatehouse::store::StoreError::TooNew { found, supported })) => {
            assert_eq!(found, 999);
            assert_eq!(supported, latest_version());
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a newer database must be refused"),
    }
    let db = SqliteStore::open(&path, &config.database).unwrap();
    let version: u32 = db
        .blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(version, 999, "left as it was");
}

fn post_key(app: &TestApp, t: &Tokens, name: &str) -> Resp {
    // 3 KB of metadata: every key needs a new database page or more.
    let body = json!({ "name": name, "metadata": { "notes": "x".repeat(3000) } });
    send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        &body.to_string(),
    )
}

fn assert_unavailable(res: &Resp) {
    res.assert_error(503, "unavailable");
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After on unavailable")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(
        !res.body.contains("sqlite") && !res.body.contains("SQLITE"),
        "{}",
        res.body
    );
}

fn listed_ids(app: &TestApp, t: &Tokens) -> Vec<String> {
    let res = send(app.authed("GET", "/api/v1/api-keys?limit=100", &t.access));
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

fn valid_total(app: &TestApp, t: &Tokens) -> u64 {
    let res = send(app.authed("GET", "/api/v1/usage", &t.access));
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()["totals"]["valid"].as_u64().unwrap()
}

/// A write fault from start to recovery: writes are 503 `unavailable` (never
/// 500), reads and cached key checks go on, what was acknowledged stays,
/// and once the fault clears the same server takes writes again and the
/// checks made meanwhile are counted.
fn write_fault_round(fault: SimulatedFault) {
    let app = spawn_app_with(|c| c.usage.flush_interval_secs = 1);
    let t = app.login("faults@acme.test");
    let (_, key) = create_key(&app, &t, json!({ "name": "cached" }));
    assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);
    let mut acknowledged = vec![];

    sqlite(&app).simulate_fault(Some(fault));
    let mut refused = None;
    for i in 0..200 {
        let res = post_key(&app, &t, &format!("during {i}"));
        match res.status {
            201 => acknowledged.push(res.json()["id"].as_str().unwrap().to_string()),
            503 => {
                refused = Some(res);
                break;
            }
            other => panic!(
                "{other} while the database cannot take writes: {}",
                res.body
            ),
        }
    }
    let refused = refused.expect("the fault refuses a write");
    assert_unavailable(&refused);
    // Key checks answer from the cache (verify and forward-auth); reads work.
    for _ in 0..5 {
        assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);
    }
    let checked = send(
        app.request("GET", "/api/v1/auth/check")
            .set("X-API-Key", &key)
            .set("X-Forwarded-Method", "GET")
            .set("X-Forwarded-Uri", "/reports/7"),
    );
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(listed_ids(&app, &t).len() > acknowledged.len());
    // A usage flush during the fault (made here, as the flush timer makes
    // one every second): a write that fails keeps the counts in memory for
    // the next; one that fits in the pages the database has succeeds.
    // Either way none is lost (counted below).
    let _ = app.block_on(app.state.keys.usage.flush(&*app.state.store));
    assert_unavailable(&post_key(&app, &t, "still refused"));

    sqlite(&app).simulate_fault(None);
    let res = post_key(&app, &t, "after");
    assert_eq!(res.status, 201, "recovers by itself: {}", res.body);
    acknowledged.push(res.json()["id"].as_str().unwrap().to_string());
    let listed = listed_ids(&app, &t);
    for id in &acknowledged {
        assert!(listed.contains(id), "acknowledged key {id} is kept");
    }
    assert_eq!(
        valid_total(&app, &t),
        7,
        "one check before; five verify and one forward-auth during the fault"
    );
}

#[test]
fn a_full_disk_is_unavailable_and_recovers() {
    write_fault_round(SimulatedFault::DiskFull);
}

#[test]
fn a_read_only_database_is_unavailable_and_recovers() {
    write_fault_round(SimulatedFault::ReadOnly);
}

#[test]
fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
    let app = spawn_app_with(|c| c.database.busy_timeout_ms = 300);
    let t = app.login("locked@acme.test");
    let (_, key) = create_key(&app, &t, json!({ "name": "cached" }));
    assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);

    // Another process takes the write lock and keeps it.
    let holder = rusqlite::Connection::open(app.root.join("data/gatehouse.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let res = post_key(&app, &t, "blocked");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for the busy timeout"
    );
    assert_unavailable(&res);
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);
    assert!(
        listed_ids(&app, &t).len() == 1,
        "reads go on under the lock"
    );

    holder.execute_batch("COMMIT").unwrap();
    let res = post_key(&app, &t, "after");
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(listed_ids(&app, &t).len(), 2);
}

#[test]
fn sqlite_faults_map_to_unavailable() {
    use gatehouse::store::sqlite::Fault;
    use rusqlite::ffi;
    for (code, fault) in [
        (ffi::SQLITE_FULL, Some(Fault::Full)),
        (ffi::SQLITE_READONLY, Some(Fault::ReadOnly)),
        (ffi::SQLITE_BUSY, Some(Fault::Busy)),
        (ffi::SQLITE_LOCKED, Some(Fault::Busy)),
        (ffi::SQLITE_IOERR, Some(Fault::Io)),
        (ffi::SQLITE_IOERR_FSYNC, Some(Fault::Io)),
        (ffi::SQLITE_CANTOPEN, Some(Fault::ReadOnly)),
        (ffi::SQLITE_CONSTRAINT, None),
        (ffi::SQLITE_CORRUPT, None),
    ] {
        let err = DbError::from(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        assert_eq!(err.fault(), fault, "{code}");
        let api = gatehouse::error::ApiError::from(gatehouse::store::StoreError::from(err));
        let expected = if fault.is_some() {
            "unavailable"
        } else {
            "internal"
        };
        assert_eq!(api.code.as_str(), expected, "{code}");
    }
    let pool = DbError::Pool("timed out waiting for connection".into());
    assert_eq!(pool.fault(), Some(Fault::Busy));
}

/// A key check that must read the database (a key not in the cache) while
/// the database cannot be reached (here: every pooled connection held
/// elsewhere past the pool's timeout) is 503 `unavailable` with
/// Retry-After on forward-auth and verify, never a verdict; once the
/// database answers again the same check is decided.
#[test]
fn forward_auth_is_unavailable_while_the_database_cannot_be_reached() {
    let app = spawn_app_with(|c| {
        c.database.busy_timeout_ms = 300;
        c.database.pool_size = 2;
    });
    let unknown = gatehouse::keys::ApiKey::generate(
        &app.state.config.keys.prefix,
        gatehouse::keys::KeyType::Secret,
    )
    .expose()
    .to_string();
    let check = || {
        send(
            app.request("GET", "/api/v1/auth/check")
                .set("X-API-Key", &unknown)
                .set("X-Forwarded-Method", "GET")
                .set("X-Forwarded-Uri", "/reports/7"),
        )
    };
    let held: Vec<_> = (0..2)
        .map(|_| sqlite(&app).pool_connection().expect("a pooled connection"))
        .collect();
    let res = check();
    assert_unavailable(&res);
    assert!(res.header("x-gatehouse-key-id").is_none());
    assert_unavailable(&app.post_json("/api/v1/keys/verify", json!({ "key": unknown })));

    drop(held);
    check().assert_error(401, "invalid_key");
}
