//! Writes [`Effects`] inside a SQLite transaction.

use rusqlite::Connection;

use super::audit;
use super::{work, DbResult};
use crate::store::audit::AuditEvent;
use crate::store::effects::Effects;

pub(crate) fn write(conn: &Connection, effects: &Effects, now: i64) -> DbResult<()> {
    for a in &effects.audit {
        audit::record(
            conn,
            &AuditEvent {
                project_id: a.project_id.as_deref(),
                action: a.action,
                actor: &a.actor,
                target: a.target.as_deref(),
                details: a.details.clone(),
            },
            now,
        )?;
    }
    for w in &effects.webhooks {
        work::emit(conn, &w.project_id, w.event, w.data.clone(), now)?;
    }
    for m in &effects.mail {
        work::enqueue(conn, m, now)?;
    }
    Ok(())
}
