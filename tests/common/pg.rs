//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `GATEHOUSE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): a URL of a database the
//! test user may connect to, with the right to create databases. When no
//! server answers, the PostgreSQL tests are skipped visibly (`skip`),
//! unless `GATEHOUSE_REQUIRE_E2E` is set (as in CI), in which case they fail.

#![allow(dead_code)]

use std::time::Duration;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn server_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Runs a future on a throwaway runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

async fn admin() -> Result<tokio_postgres::Client, String> {
    let url = server_url();
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("no answer from {url} within 5 s"))?
    .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Whether the test server answers its administrator.
pub fn server_answers() -> Result<(), String> {
    block_on(async {
        let client = admin().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Runs statements on the database at `url` (on its own thread: this may
/// be called inside a test's runtime).
pub fn exec(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("the database answers");
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    })
    .join()
    .unwrap();
}

/// Runs a statement as the test server's administrator (on its own thread:
/// this may be called inside a test's runtime).
pub fn admin_sql(sql: &str) {
    let sql = sql.to_string();
    std::thread::spawn(move || {
        block_on(async move {
            let client = admin().await.expect("the PostgreSQL server answers");
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    })
    .join()
    .unwrap();
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("GATEHOUSE_TEST_PG_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A database name that says which process made it
/// (`gh_test_<pid>_<random>`), so [`sweep_abandoned`] can tell the
/// databases of a run that died from those of a run still going.
fn new_name() -> String {
    sweep_abandoned();
    format!("gh_test_{}_{}", std::process::id(), fastrand::u64(..))
}

/// Once per process: drops the test databases whose process is gone (a run
/// that failed or was killed before its databases were dropped).
fn sweep_abandoned() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let _ = std::thread::spawn(|| {
            block_on(async {
                let Ok(client) = admin().await else { return };
                let Ok(rows) = client
                    .query(
                        "SELECT datname::text FROM pg_database WHERE datname LIKE 'gh\\_test\\_%\\_%'",
                        &[],
                    )
                    .await
                else {
                    return;
                };
                for row in rows {
                    let name: String = row.get(0);
                    let Some(pid) = name
                        .strip_prefix("gh_test_")
                        .and_then(|rest| rest.split('_').next())
                        .and_then(|pid| pid.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                }
            })
        })
        .join();
    });
}

pub struct TestDb {
    pub name: String,
    /// The new database's URL (same server and user as the admin URL).
    pub url: String,
}

impl TestDb {
    /// A new empty database, or `None` when the test should be skipped.
    pub fn create() -> Option<TestDb> {
        let name = new_name();
        let created = block_on(async {
            let client = admin().await?;
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .map_err(|e| e.to_string())
        });
        match created {
            Ok(()) => Some(TestDb {
                url: with_database(&server_url(), &name),
                name,
            }),
            Err(why) => {
                crate::skip::e2e_available(
                    false,
                    &format!("PostgreSQL ({why}; set GATEHOUSE_TEST_PG_URL to a server)"),
                );
                None
            }
        }
    }

    /// A new empty database; a failure is a test failure (for binaries that
    /// checked the server before their first test).
    pub fn must_create() -> TestDb {
        let name = new_name();
        block_on(async {
            let client = admin().await?;
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|why| panic!("PostgreSQL failed during the run: {why}"));
        TestDb {
            url: with_database(&server_url(), &name),
            name,
        }
    }

    /// A connection to the test database, for looking at what was stored.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let url = self.url.clone();
        let sql = sql.to_string();
        block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("the test database answers");
            tokio::spawn(conn);
            client.query_one(&sql, &[]).await.expect(&sql).get(0)
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: this may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            block_on(async move {
                let client = admin().await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
    }
}
