//! The audit log: one row per security-relevant event.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{DbResult, SqliteStore};
use crate::store::audit::{AuditEvent, StoredEvent};
use crate::store::audit::{AuditFilter, AuditRepo, AUDIT_COLUMNS, AUDIT_PAGE_ROWS};
use crate::store::{ProjectId, StoreResult};

/// Records an event inside the caller's transaction, so it is kept exactly
/// when the change it describes is.
pub fn record(conn: &Connection, event: &AuditEvent<'_>, now: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO audit_events (project_id, action, actor_type, actor_id, target, ip, request_id, details, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            event.project_id,
            event.action,
            event.actor.kind.as_str(),
            event.actor.id,
            event.target,
            event.actor.ip,
            event.actor.request_id,
            event.details.to_string(),
            now
        ],
    )?;
    Ok(())
}

/// Reads an event from `id, project_id, action, actor_type, actor_id,
/// target, ip, request_id, details, created_at`.
pub(crate) fn event_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let details: String = r.get(8)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        project_id: r.get(1)?,
        action: r.get(2)?,
        actor_type: r.get(3)?,
        actor_id: r.get(4)?,
        target: r.get(5)?,
        ip: r.get(6)?,
        request_id: r.get(7)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        created_at: r.get(9)?,
    })
}

#[async_trait]
impl AuditRepo for SqliteStore {
    /// One page of a project's audit log, newest first: the project's own
    /// events and the sign-ins of its current members.
    async fn audit_page(
        &self,
        project: ProjectId,
        filter: AuditFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)> {
        self.call(move |c| {
            let rows_sql = AUDIT_PAGE_ROWS.replace('$', "?");
            let f = &filter;
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM audit_events WHERE {rows_sql}"),
                params![project.as_str(), f.action, f.actor_type, f.actor_id, f.target, f.since, f.until],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {rows_sql} ORDER BY id DESC LIMIT ?8 OFFSET ?9"
            ))?;
            let rows = stmt.query_map(
                params![project.as_str(), f.action, f.actor_type, f.actor_id, f.target, f.since, f.until, limit, offset],
                event_from,
            )?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }
}
