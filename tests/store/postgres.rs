//! The PostgreSQL backend's connections and migrations.

use gatehouse::store::postgres::{self, latest_version, PgError};

use crate::pg::{block_on, TestDb};

#[test]
fn migrates_a_fresh_database_once() {
    let Some(db) = TestDb::create() else { return };
    let outcome = block_on(async {
        let pool = postgres::pool(&db.url, 2).unwrap();
        let first = postgres::migrate(&pool).await.unwrap();
        let again = postgres::migrate(&pool).await.unwrap();
        (first, again)
    });
    assert_eq!((outcome.0.from, outcome.0.to), (0, latest_version()));
    assert_eq!(
        (outcome.1.from, outcome.1.to),
        (latest_version(), latest_version())
    );
    assert_eq!(
        db.query_i64("SELECT count(*) FROM gatehouse_schema"),
        i64::from(latest_version())
    );
    for table in [
        "users",
        "api_keys",
        "key_changes",
        "webhook_deliveries",
        "stripe_customer_plans",
    ] {
        assert_eq!(
            db.query_i64(&format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
            )),
            1,
            "{table}"
        );
    }
}

#[test]
fn nodes_starting_together_apply_each_step_once() {
    let Some(db) = TestDb::create() else { return };
    let url = db.url.clone();
    let results = block_on(async move {
        let runs = (0..6).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // Each "node" has its own pool, as separate processes would.
                let pool = postgres::pool(&url, 1).unwrap();
                postgres::migrate(&pool).await
            })
        });
        let mut out = Vec::new();
        for run in runs.collect::<Vec<_>>() {
            out.push(run.await.unwrap());
        }
        out
    });
    for r in &results {
        assert_eq!(r.as_ref().unwrap().to, latest_version(), "{r:?}");
    }
    // Each step was applied by exactly one of the six: the steps applied
    // add up to the schema, whoever applied which.
    let applied: u32 = results.iter().map(|r| r.as_ref().unwrap().applied).sum();
    assert_eq!(applied, latest_version(), "{results:?}");
    assert_eq!(
        db.query_i64("SELECT count(*) FROM gatehouse_schema"),
        i64::from(latest_version())
    );
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let Some(db) = TestDb::create() else { return };
    let result = block_on(async {
        let pool = postgres::pool(&db.url, 1).unwrap();
        postgres::migrate(&pool).await.unwrap();
        let client = pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO gatehouse_schema (version, description, applied_at) VALUES ($1, 'from the future', 0)",
                &[&i64::from(latest_version() + 1)],
            )
            .await
            .unwrap();
        drop(client);
        postgres::migrate(&pool).await
    });
    match result {
        Err(PgError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (latest_version() + 1, latest_version()))
        }
        other => panic!("{other:?}"),
    }
}

/// Connections say who they are; TLS follows `sslmode` as libpq does.
#[test]
fn connections_carry_the_application_name_and_follow_sslmode() {
    let Some(db) = TestDb::create() else { return };
    let with = |query: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", db.url)
    };
    let ssl_of = |url: String| -> Result<(String, bool), String> {
        block_on(async move {
            let pool = postgres::pool(&url, 1).map_err(|e| e.to_string())?;
            let client = pool.get().await.map_err(|e| PgError::from(e).to_string())?;
            let row = client
                .query_one(
                    "SELECT a.application_name, coalesce(s.ssl, false)
                     FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
                     WHERE a.pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok((row.get(0), row.get(1)))
        })
    };
    let (name, ssl) = ssl_of(with("sslmode=disable")).unwrap();
    assert_eq!(name, "gatehouse");
    assert!(!ssl);
    let (_, server_has_tls) = ssl_of(with("sslmode=prefer")).unwrap();
    if server_has_tls {
        // A server with TLS (its certificate is usually self-signed): require
        // encrypts without checking it, as libpq does; verify-full checks it.
        assert!(ssl_of(with("sslmode=require")).unwrap().1);
        let err = ssl_of(with("sslmode=verify-full")).unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    } else {
        assert!(ssl_of(with("sslmode=require")).is_err());
    }
    let (name, _) = ssl_of(with("application_name=custom&sslmode=disable")).unwrap();
    assert_eq!(name, "custom", "a name in the URL wins");
}
