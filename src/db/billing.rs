//! Stripe events and project plans.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::audit::Actor;
use super::{Db, DbResult};
use crate::billing::Action;
use crate::store::effects::{AuditEntry, Effects, WebhookEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StripeOutcome {
    /// This event id was processed before; nothing changed.
    Duplicate,
    /// A project's plan changed.
    PlanChanged {
        project_id: String,
        from: String,
        to: String,
    },
    /// Recorded; nothing else to do (a link, the same plan, or an ignored event).
    Recorded(String),
}

fn set_plan(
    conn: &Connection,
    project_id: &str,
    plan: &str,
    event_id: &str,
    now: i64,
) -> DbResult<Option<String>> {
    let from: Option<String> = conn
        .query_row(
            "SELECT plan FROM projects WHERE id = ?1",
            [project_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(from) = from else { return Ok(None) };
    if from == plan {
        return Ok(None);
    }
    conn.execute(
        "UPDATE projects SET plan = ?2 WHERE id = ?1",
        params![project_id, plan],
    )?;
    super::effects::write(
        conn,
        &plan_changed_effects(project_id, &from, plan, event_id),
        now,
    )?;
    Ok(Some(from))
}

/// What a plan change records and announces (both backends).
pub fn plan_changed_effects(project_id: &str, from: &str, to: &str, event_id: &str) -> Effects {
    Effects::default()
        .audit(AuditEntry {
            project_id: Some(project_id.to_string()),
            action: "billing.plan_changed",
            actor: Actor::system(),
            target: Some(project_id.to_string()),
            details: serde_json::json!({ "from": from, "to": to, "stripe_event": event_id }),
        })
        .webhook(WebhookEvent {
            project_id: project_id.to_string(),
            event: "billing.plan_changed",
            data: serde_json::json!({ "project_id": project_id, "from": from, "to": to }),
        })
}

/// What linking a Stripe customer to a project records (both backends).
pub fn customer_linked_effects(project_id: &str, customer: &str, event_id: &str) -> Effects {
    Effects::default().audit(AuditEntry {
        project_id: Some(project_id.to_string()),
        action: "billing.customer_linked",
        actor: Actor::system(),
        target: Some(project_id.to_string()),
        details: serde_json::json!({ "customer": customer, "stripe_event": event_id }),
    })
}

impl Db {
    /// Applies a verified Stripe event exactly once: the event id is recorded
    /// in the same transaction as the change it causes.
    pub async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: Action,
    ) -> DbResult<StripeOutcome> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx.execute(
                "INSERT INTO stripe_events (id, type, processed_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
                params![event_id, event_type, now],
            )?;
            if inserted == 0 {
                return Ok(StripeOutcome::Duplicate);
            }
            let outcome = match action {
                Action::Ignore(reason) => StripeOutcome::Recorded(reason),
                Action::Link { project_id, customer } => {
                    let linked = tx.execute(
                        "UPDATE projects SET stripe_customer_id = ?2 WHERE id = ?1",
                        params![project_id, customer],
                    )?;
                    if linked == 0 {
                        StripeOutcome::Recorded(format!("no project {project_id:?}"))
                    } else {
                        super::effects::write(
                            &tx,
                            &customer_linked_effects(&project_id, &customer, &event_id),
                            now,
                        )?;
                        // A subscription reported before this checkout applies now.
                        let waiting: Option<String> = tx
                            .query_row("SELECT plan FROM stripe_customer_plans WHERE customer_id = ?1", [&customer], |r| r.get(0))
                            .optional()?;
                        match waiting {
                            Some(plan) => {
                                tx.execute("DELETE FROM stripe_customer_plans WHERE customer_id = ?1", [&customer])?;
                                match set_plan(&tx, &project_id, &plan, &event_id, now)? {
                                    Some(from) => StripeOutcome::PlanChanged { project_id, from, to: plan },
                                    None => StripeOutcome::Recorded("linked".into()),
                                }
                            }
                            None => StripeOutcome::Recorded("linked".into()),
                        }
                    }
                }
                Action::SetPlan { customer, plan } => {
                    let project: Option<String> = tx
                        .query_row("SELECT id FROM projects WHERE stripe_customer_id = ?1", [&customer], |r| r.get(0))
                        .optional()?;
                    match project {
                        None => {
                            tx.execute(
                                "INSERT INTO stripe_customer_plans (customer_id, plan, updated_at) VALUES (?1, ?2, ?3)
                                 ON CONFLICT (customer_id) DO UPDATE SET plan = excluded.plan, updated_at = excluded.updated_at",
                                params![customer, plan, now],
                            )?;
                            StripeOutcome::Recorded(format!("customer {customer:?} is not linked to a project yet"))
                        }
                        Some(project_id) => match set_plan(&tx, &project_id, &plan, &event_id, now)? {
                            Some(from) => StripeOutcome::PlanChanged { project_id, from, to: plan },
                            None => StripeOutcome::Recorded("plan unchanged".into()),
                        },
                    }
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }
}
