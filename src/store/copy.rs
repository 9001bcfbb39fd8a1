//! `gatehouse copy-data`: a SQLite deployment's every table copied into an
//! empty PostgreSQL database, hashes and ids unchanged, so a team moves to
//! several nodes without reissuing a key or logging anyone out.
//!
//! - The SQLite side is read inside one `BEGIN IMMEDIATE` transaction: a
//!   consistent snapshot, and a server still writing to the file is noticed
//!   (the lock cannot be had) instead of losing what it writes meanwhile.
//! - The PostgreSQL side is migrated to the same schema, refused unless
//!   every Gatehouse table is empty, and written in one transaction with
//!   binary `COPY`, tables in the order the schema creates them (parents
//!   before children); identity sequences continue after the copied ids.
//! - Then every table's rows are counted on both sides; any difference
//!   fails the command (and the transaction is not committed).

use std::collections::HashMap;

use rusqlite::types::ValueRef;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::postgres::{self, PgError};
use super::sqlite::SqliteStore;

/// What was copied: each table and its row count (equal on both sides).
#[derive(Debug, Default)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Refused(String),
    #[error("SQLite: {0}")]
    Sqlite(String),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Sqlite(e.to_string())
    }
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyError::Postgres(e.into())
    }
}

/// `gatehouse copy-data`: opens the SQLite database at `path` (migrating
/// it to the newest schema first), and copies it into the PostgreSQL
/// database at `url` on a runtime of its own.
pub fn copy_file_to_postgres(
    path: &std::path::Path,
    config: &crate::config::DatabaseConfig,
    url: &str,
) -> Result<CopyReport, CopyError> {
    let source = SqliteStore::open(path, config)
        .and_then(|db| {
            db.migrate()?;
            Ok(db)
        })
        .map_err(|e| CopyError::Sqlite(format!("{}: {e}", path.display())))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CopyError::Refused(format!("cannot start a runtime: {e}")))?
        .block_on(copy_sqlite_to_postgres(&source, url))
}

/// Rows sent per `COPY` write between awaits.
const BATCH: usize = 1000;

/// Copies the SQLite database `source` (already migrated to the newest
/// schema) into the PostgreSQL database at `url`.
pub async fn copy_sqlite_to_postgres(
    source: &SqliteStore,
    url: &str,
) -> Result<CopyReport, CopyError> {
    let pool = postgres::pool(url, 1)?;
    postgres::migrate(&pool).await?;
    let mut client = pool.get().await.map_err(PgError::from)?;
    let target_tables = postgres_columns(&client).await?;

    let mut conn = source
        .pool_connection()
        .map_err(|e| CopyError::Sqlite(e.to_string()))?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                CopyError::Refused(
                    "the SQLite database is in use (a running server?); stop Gatehouse, then copy"
                        .into(),
                )
            }
            _ => e.into(),
        })?;
    let tables = sqlite_tables(&tx)?;
    for table in &tables {
        if !target_tables.contains_key(table) {
            return Err(CopyError::Refused(format!(
                "table {table} is not in the PostgreSQL schema; are both at the same Gatehouse version?"
            )));
        }
    }

    let pg = client.transaction().await?;
    // Refuse a database that already holds data (checked inside the
    // transaction that writes, so two copies cannot both see it empty).
    pg.execute("LOCK TABLE users IN EXCLUSIVE MODE", &[])
        .await?;
    for table in target_tables.keys() {
        let n: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .try_get(0)?;
        if n > 0 {
            return Err(CopyError::Refused(format!(
                "the PostgreSQL database is not empty ({table} has {n} rows); copy-data fills only an empty database"
            )));
        }
    }

    let mut report = CopyReport::default();
    for table in &tables {
        let target = &target_tables[table];
        let columns = sqlite_columns(&tx, table)?;
        let typed: Vec<(String, Type)> = columns
            .iter()
            .map(|c| {
                target
                    .get(c)
                    .map(|t| (c.clone(), t.clone()))
                    .ok_or_else(|| {
                        CopyError::Refused(format!(
                            "column {table}.{c} is not in the PostgreSQL schema"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let copied = copy_table(&tx, &pg, table, &typed).await?;
        let counted: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .try_get(0)?;
        let in_sqlite: i64 =
            tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        if counted != in_sqlite || copied != in_sqlite as u64 {
            return Err(CopyError::Refused(format!(
                "{table}: {in_sqlite} rows in SQLite but {counted} in PostgreSQL; nothing was committed"
            )));
        }
        if typed.iter().any(|(c, _)| c == "id") && is_identity(&pg, table).await? {
            pg.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
                ),
                &[],
            )
            .await?;
        }
        report.tables.push((table.clone(), copied));
    }
    pg.commit().await?;
    tx.rollback()?;
    Ok(report)
}

/// Every Gatehouse table in SQLite, in the order the schema created them.
fn sqlite_tables(conn: &rusqlite::Connection) -> Result<Vec<String>, CopyError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

fn sqlite_columns(conn: &rusqlite::Connection, table: &str) -> Result<Vec<String>, CopyError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    ))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// The Gatehouse tables in PostgreSQL and each column's type.
async fn postgres_columns(
    client: &tokio_postgres::Client,
) -> Result<HashMap<String, HashMap<String, Type>>, CopyError> {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, udt_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> 'gatehouse_schema'",
            &[],
        )
        .await?;
    let mut tables: HashMap<String, HashMap<String, Type>> = HashMap::new();
    for row in rows {
        let (table, column, udt): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let ty = match udt.as_str() {
            "int8" => Type::INT8,
            "int4" => Type::INT4,
            "int2" => Type::INT2,
            "text" | "varchar" => Type::TEXT,
            "bytea" => Type::BYTEA,
            "bool" => Type::BOOL,
            "float8" => Type::FLOAT8,
            other => {
                return Err(CopyError::Refused(format!(
                    "{table}.{column} has type {other}, which copy-data does not know"
                )))
            }
        };
        tables.entry(table).or_default().insert(column, ty);
    }
    Ok(tables)
}

async fn is_identity(pg: &tokio_postgres::Transaction<'_>, table: &str) -> Result<bool, CopyError> {
    let row = pg
        .query_one(
            "SELECT pg_get_serial_sequence($1, 'id') IS NOT NULL",
            &[&table],
        )
        .await?;
    Ok(row.try_get(0)?)
}

type Cell = Box<dyn ToSql + Sync + Send>;

/// One SQLite value as the PostgreSQL column's type wants it.
fn cell(value: ValueRef<'_>, ty: &Type, table: &str, column: &str) -> Result<Cell, CopyError> {
    let wrong = |what: &str| {
        CopyError::Refused(format!(
            "{table}.{column}: a stored {what} cannot become PostgreSQL {ty}"
        ))
    };
    Ok(match (value, ty) {
        (ValueRef::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (ValueRef::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
        (ValueRef::Null, t) if *t == Type::INT2 => Box::new(None::<i16>),
        (ValueRef::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
        (ValueRef::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (ValueRef::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (ValueRef::Null, _) => Box::new(None::<f64>),
        (ValueRef::Integer(i), t) if *t == Type::INT8 => Box::new(Some(i)),
        (ValueRef::Integer(i), t) if *t == Type::INT4 => {
            Box::new(Some(i32::try_from(i).map_err(|_| wrong("large integer"))?))
        }
        (ValueRef::Integer(i), t) if *t == Type::INT2 => {
            Box::new(Some(i16::try_from(i).map_err(|_| wrong("large integer"))?))
        }
        (ValueRef::Integer(i), t) if *t == Type::BOOL => Box::new(Some(i != 0)),
        (ValueRef::Integer(i), t) if *t == Type::FLOAT8 => Box::new(Some(i as f64)),
        (ValueRef::Integer(i), t) if *t == Type::TEXT => Box::new(Some(i.to_string())),
        (ValueRef::Real(f), t) if *t == Type::FLOAT8 => Box::new(Some(f)),
        (ValueRef::Text(s), t) if *t == Type::TEXT => Box::new(Some(
            String::from_utf8(s.to_vec()).map_err(|_| wrong("non-UTF-8 text"))?,
        )),
        (ValueRef::Text(s), t) if *t == Type::BYTEA => Box::new(Some(s.to_vec())),
        (ValueRef::Blob(b), t) if *t == Type::BYTEA => Box::new(Some(b.to_vec())),
        (ValueRef::Integer(_), _) => return Err(wrong("integer")),
        (ValueRef::Real(_), _) => return Err(wrong("real number")),
        (ValueRef::Text(_), _) => return Err(wrong("text")),
        (ValueRef::Blob(_), _) => return Err(wrong("blob")),
    })
}

async fn copy_table(
    source: &rusqlite::Transaction<'_>,
    pg: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &[(String, Type)],
) -> Result<u64, CopyError> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
    let sink = pg
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    let mut stmt = source.prepare(&format!("SELECT {} FROM {table}", names.join(", ")))?;
    let mut rows = stmt.query([])?;
    let mut batch: Vec<Vec<Cell>> = Vec::with_capacity(BATCH);
    let mut copied = 0u64;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(columns.len());
        for (i, (column, ty)) in columns.iter().enumerate() {
            cells.push(cell(row.get_ref(i)?, ty, table, column)?);
        }
        batch.push(cells);
        if batch.len() >= BATCH {
            copied += write_batch(writer.as_mut(), &mut batch).await?;
        }
    }
    copied += write_batch(writer.as_mut(), &mut batch).await?;
    writer.finish().await?;
    Ok(copied)
}

async fn write_batch(
    mut writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    batch: &mut Vec<Vec<Cell>>,
) -> Result<u64, CopyError> {
    let mut n = 0;
    for cells in batch.drain(..) {
        let refs: Vec<&(dyn ToSql + Sync)> = cells
            .iter()
            .map(|c| c.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await?;
        n += 1;
    }
    Ok(n)
}
