//! SPEC section 3: SQLite pragmas on pooled connections, migrations.

use gatehouse::config::Synchronous;
use gatehouse::db::{latest_version, Db, DbError};
use gatehouse::startup::{Application, StartupError};

use crate::helpers::{spawn_app, spawn_app_with, test_config};

#[test]
fn pooled_connections_use_wal_foreign_keys_and_full_sync_by_default() {
    let app = spawn_app();
    // Ask several times: each call may get another pooled connection.
    for _ in 0..4 {
        let p = app.block_on(app.state.db.pragmas()).unwrap();
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
    let p = app.block_on(app.state.db.pragmas()).unwrap();
    assert_eq!(p.synchronous, 1, "NORMAL");
    assert_eq!(p.busy_timeout_ms, 1234);
    assert_eq!(p.journal_mode, "wal");
}

#[test]
fn the_database_file_is_migrated_to_the_newest_schema() {
    let app = spawn_app();
    let path = app.state.db.path().to_path_buf();
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
        .block_on(app.state.db.call(|c| {
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
        Err(StartupError::Db(DbError::TooNew { found, supported })) => {
            assert_eq!(found, 999);
            assert_eq!(supported, latest_version());
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a newer database must be refused"),
    }
    let db = Db::open(&path, &config.database).unwrap();
    let version: u32 = db
        .blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(version, 999, "left as it was");
}
