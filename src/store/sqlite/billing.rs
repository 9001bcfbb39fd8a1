//! Stripe events and project plans.

use crate::store::billing::BillingRepo;
use crate::store::billing::{
    link_event_outcome, plan_changed_effects, plan_kept_for_later, plan_set, StripeOutcome,
};
use crate::store::{ProjectId, StoreResult};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{DbResult, SqliteStore};
use crate::store::billing::Action;
use crate::store::billing_link::{
    self, Holder, LinkDecision, LinkOutcome, LinkRequest, LinkState, PlanChange,
};

fn set_plan(
    conn: &Connection,
    project_id: &str,
    plan: &str,
    event_id: Option<&str>,
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

/// Links `customer` to `project_id` as `request` asks, if the rules allow
/// ([`billing_link::decide`]), in the caller's transaction.
fn link_customer(
    tx: &Connection,
    project_id: &str,
    customer: &str,
    request: &LinkRequest,
    now: i64,
) -> DbResult<LinkOutcome> {
    let state = LinkState {
        project_customer: tx
            .query_row(
                "SELECT stripe_customer_id FROM projects WHERE id = ?1",
                [project_id],
                |r| r.get(0),
            )
            .optional()?,
        holder: tx
            .query_row(
                "SELECT id, plan FROM projects WHERE stripe_customer_id = ?1",
                [customer],
                |r| {
                    Ok(Holder {
                        project_id: r.get(0)?,
                        plan: r.get(1)?,
                    })
                },
            )
            .optional()?,
        waiting_plan: tx
            .query_row(
                "SELECT plan FROM stripe_customer_plans WHERE customer_id = ?1",
                [customer],
                |r| r.get(0),
            )
            .optional()?,
    };
    let decision = billing_link::decide(project_id, request, &state);
    let mut plan_changes = Vec::new();
    if let LinkDecision::Link { taken_from, .. } = &decision {
        if let Some(other) = taken_from {
            tx.execute(
                "UPDATE projects SET stripe_customer_id = NULL WHERE id = ?1",
                [other],
            )?;
        }
        tx.execute(
            "UPDATE projects SET stripe_customer_id = ?2 WHERE id = ?1",
            params![project_id, customer],
        )?;
    }
    // The link's audit entries come before the plan changes it causes.
    super::effects::write(
        tx,
        &billing_link::effects(project_id, customer, request, &decision),
        now,
    )?;
    if let LinkDecision::Link { plans, .. } = &decision {
        tx.execute(
            "DELETE FROM stripe_customer_plans WHERE customer_id = ?1",
            [customer],
        )?;
        for (project, plan) in plans {
            if let Some(from) = set_plan(tx, project, plan, request.event_id(), now)? {
                plan_changes.push(PlanChange {
                    project_id: project.clone(),
                    from,
                    to: plan.clone(),
                });
            }
        }
    }
    Ok(LinkOutcome {
        decision,
        plan_changes,
    })
}

#[async_trait]
impl BillingRepo for SqliteStore {
    /// Applies a verified Stripe event exactly once: the event id is recorded
    /// in the same transaction as the change it causes.
    async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: Action,
    ) -> StoreResult<StripeOutcome> {
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
                    let request = LinkRequest::Checkout { event_id: event_id.clone() };
                    let link = link_customer(&tx, &project_id, &customer, &request, now)?;
                    link_event_outcome(project_id, &customer, link)
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
                            plan_kept_for_later(&customer, &plan)
                        }
                        Some(project_id) => {
                            let from = set_plan(&tx, &project_id, &plan, Some(&event_id), now)?;
                            plan_set(project_id, from, plan)
                        }
                    }
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// `gatehouse billing link`: links `customer` to the project by hand
    /// (see `store::billing_link`), in one transaction.
    async fn link_stripe_customer(
        &self,
        project: ProjectId,
        customer: String,
        force: bool,
        default_plan: String,
    ) -> StoreResult<LinkOutcome> {
        let project_id = project.to_string();
        let request = LinkRequest::Manual {
            force,
            default_plan,
        };
        let clock = self.clock.clone();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let outcome = link_customer(&tx, &project_id, &customer, &request, clock.now())?;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }
}
