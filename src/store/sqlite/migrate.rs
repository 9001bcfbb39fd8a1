//! Migrations from `schema.sql`, versioned with `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;
use crate::store::migrate::{parse_steps, MigrateOutcome, Migration};

const SCHEMA: &str = include_str!("../../../schema.sql");
/// The steps of `schema.sql`, in order. Panics only if the file shipped in
/// the binary is malformed, which a unit test rules out.
pub fn migrations() -> Vec<Migration> {
    parse_steps(SCHEMA)
}

pub fn latest_version() -> u32 {
    migrations().len() as u32
}

pub fn user_version(conn: &Connection) -> Result<u32, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Applies every pending step, each in its own immediate transaction that
/// also records the new `user_version`. A database written by a newer
/// Gatehouse is refused untouched.
pub fn migrate(conn: &mut Connection) -> Result<MigrateOutcome, DbError> {
    let steps = migrations();
    let latest = steps.len() as u32;
    let from = user_version(conn)?;
    if from > latest {
        return Err(DbError::TooNew {
            found: from,
            supported: latest,
        });
    }
    let mut applied = 0;
    for step in steps.iter().filter(|s| s.version > from) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have applied the step while we waited.
        if user_version(&tx)? >= step.version {
            continue;
        }
        tx.execute_batch(step.sql).map_err(|e| {
            DbError::Migration(format!("step {} ({}): {e}", step.version, step.description))
        })?;
        tx.pragma_update(None, "user_version", step.version)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(MigrateOutcome {
        from,
        to: user_version(conn)?,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::MARKER;

    #[test]
    fn schema_parses_into_numbered_steps() {
        let steps = migrations();
        assert!(!steps.is_empty());
        assert!(steps[0].sql.contains("CREATE TABLE users"));
        assert!(!steps[0].sql.contains(MARKER));
    }

    #[test]
    fn migrates_once_and_refuses_newer_databases() {
        let mut conn = Connection::open_in_memory().unwrap();
        let first = migrate(&mut conn).unwrap();
        assert_eq!(
            first,
            MigrateOutcome {
                from: 0,
                to: latest_version(),
                applied: latest_version(),
            }
        );
        let again = migrate(&mut conn).unwrap();
        assert_eq!(again.from, again.to);
        assert_eq!(again.applied, 0);
        conn.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, DbError::TooNew { .. }), "{err}");
    }
}
