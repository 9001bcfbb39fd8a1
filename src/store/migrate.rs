//! Schema migrations, the same way for both backends: each schema file
//! (`schema.sql`, `schema.postgres.sql`) is a list of numbered steps, and
//! each backend records the version it reached (`PRAGMA user_version`,
//! the `gatehouse_schema` table) and applies the steps after it.

pub(crate) const MARKER: &str = "-- migration: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
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
