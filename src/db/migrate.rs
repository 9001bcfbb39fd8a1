//! Migrations from `schema.sql`, versioned with `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

const SCHEMA: &str = include_str!("../../schema.sql");
const MARKER: &str = "-- migration: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// The steps of `schema.sql`, in order. Panics only if the file shipped in
/// the binary is malformed, which a unit test rules out.
pub fn migrations() -> Vec<Migration> {
    parse_steps(SCHEMA)
}

/// Splits a schema file into its numbered steps (`-- migration: N what`
/// lines, numbered 1, 2, ...). Panics on a malformed file: schema files are
/// shipped in the binary and checked by unit tests.
pub fn parse_steps(schema: &'static str) -> Vec<Migration> {
    // Byte offsets of every line that starts with the marker.
    let mut headers: Vec<(usize, usize)> = Vec::new(); // (line start, line end)
    let mut offset = 0;
    for line in schema.split_inclusive('\n') {
        if line.starts_with(MARKER) {
            headers.push((offset, offset + line.len()));
        }
        offset += line.len();
    }
    let mut steps = Vec::new();
    for (i, &(start, end)) in headers.iter().enumerate() {
        let header = schema[start + MARKER.len()..end].trim();
        let (number, description) = header.split_once(' ').unwrap_or((header, ""));
        let version: u32 = number.parse().expect("schema file: migration number");
        assert_eq!(
            version as usize,
            i + 1,
            "schema file: migrations numbered 1, 2, ..."
        );
        let body_end = headers.get(i + 1).map(|h| h.0).unwrap_or(schema.len());
        steps.push(Migration {
            version,
            description,
            sql: &schema[end..body_end],
        });
    }
    steps
}

pub fn latest_version() -> u32 {
    migrations().len() as u32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOutcome {
    /// The version found before this run.
    pub from: u32,
    /// The version after it.
    pub to: u32,
    /// How many steps this run applied itself: a node that found its steps
    /// applied by another one meanwhile applied none of them.
    pub applied: u32,
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
