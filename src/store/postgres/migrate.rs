//! Migrations from `schema.postgres.sql`, recorded in `gatehouse_schema`.
//! Every step runs in its own transaction holding an advisory lock, and
//! re-reads the applied version once it has the lock: nodes that start
//! together (or `gatehouse migrate` beside a starting node) apply each step
//! exactly once. A database written by a newer Gatehouse is refused.

use deadpool_postgres::Pool;

use super::PgError;
use crate::store::migrate::{parse_steps, MigrateOutcome, Migration};

const SCHEMA: &str = include_str!("../../../schema.postgres.sql");

/// The advisory lock key held while migrating ("gatehous" in ASCII).
const MIGRATION_LOCK: i64 = 0x6761_7465_686f_7573;

pub fn migrations() -> Vec<Migration> {
    parse_steps(SCHEMA)
}

pub fn latest_version() -> u32 {
    migrations().len() as u32
}

async fn applied_version(client: &impl deadpool_postgres::GenericClient) -> Result<u32, PgError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::BIGINT FROM gatehouse_schema",
            &[],
        )
        .await?;
    Ok(u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX))
}

async fn schema_table_exists(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<bool, PgError> {
    Ok(client
        .query_one("SELECT to_regclass('gatehouse_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?)
}

/// The version recorded in the database (0 for an empty database),
/// without changing anything.
pub async fn applied_schema_version(pool: &Pool) -> Result<u32, PgError> {
    let client = pool.get().await?;
    if !schema_table_exists(&client).await? {
        return Ok(0);
    }
    applied_version(&client).await
}

/// Applies every pending step.
pub async fn migrate(pool: &Pool) -> Result<MigrateOutcome, PgError> {
    let steps = migrations();
    let latest = steps.len() as u32;
    let mut client = pool.get().await?;
    // Created under the lock too: concurrent CREATE TABLE IF NOT EXISTS
    // statements can still collide in the catalog.
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Looked for first: `CREATE TABLE IF NOT EXISTS` on an existing table
    // makes the server send a NOTICE, which every start would log.
    if !schema_table_exists(&tx).await? {
        tx.batch_execute(
            "CREATE TABLE gatehouse_schema (
                 version     BIGINT PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at  BIGINT NOT NULL
             )",
        )
        .await?;
    }
    tx.commit().await?;
    let from = applied_version(&client).await?;
    if from > latest {
        return Err(PgError::TooNew {
            found: from,
            supported: latest,
        });
    }
    let mut applied = 0;
    for step in steps.iter().filter(|s| s.version > from) {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // Another node may have applied the step while we waited.
        if applied_version(&tx).await? >= step.version {
            continue;
        }
        tx.batch_execute(step.sql).await.map_err(|e| {
            PgError::Migration(format!(
                "step {} ({}): {}",
                step.version,
                step.description,
                e.as_db_error().map(|d| d.message()).unwrap_or("failed")
            ))
        })?;
        tx.execute(
            "INSERT INTO gatehouse_schema (version, description, applied_at) VALUES ($1, $2, $3)",
            &[
                &i64::from(step.version),
                &step.description,
                &crate::clock::Clock::system().now(),
            ],
        )
        .await?;
        tx.commit().await?;
        applied += 1;
    }
    let to = applied_version(&client).await?;
    Ok(MigrateOutcome { from, to, applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parses_and_matches_sqlite_tables() {
        let steps = migrations();
        assert!(steps[0].sql.contains("CREATE TABLE users"));
        // Every table of the SQLite schema exists here too (copy-data moves
        // rows between them unchanged).
        let tables = |sql: String| -> std::collections::BTreeSet<String> {
            sql.split("CREATE TABLE ")
                .skip(1)
                .map(|rest| rest.split_whitespace().next().unwrap().to_string())
                .collect()
        };
        let pg: String = steps.iter().map(|s| s.sql).collect();
        let sqlite: String = crate::store::sqlite::migrate::migrations()
            .iter()
            .map(|s| s.sql)
            .collect();
        assert_eq!(tables(pg), tables(sqlite));
    }
}
