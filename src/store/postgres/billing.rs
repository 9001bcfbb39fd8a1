//! Stripe events in PostgreSQL: the event id is inserted first (its
//! primary key decides which node applies a redelivered event), then the
//! change, in one transaction.

use super::{effects, PgError, PgStore};
use crate::store::billing::Action;
use crate::store::billing::{
    link_event_outcome, plan_changed_effects, plan_kept_for_later, plan_set, BillingRepo,
    StripeOutcome,
};
use crate::store::billing_link::{
    self, Holder, LinkDecision, LinkOutcome, LinkRequest, LinkState, PlanChange,
};
use crate::store::StoreResult;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;

async fn set_plan(
    client: &impl GenericClient,
    project_id: &str,
    plan: &str,
    event_id: Option<&str>,
    now: i64,
) -> Result<Option<String>, PgError> {
    // The row lock orders two events changing one project's plan at once.
    let from: Option<String> = client
        .query_opt(
            "SELECT plan FROM projects WHERE id = $1 FOR UPDATE",
            &[&project_id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let Some(from) = from else { return Ok(None) };
    if from == plan {
        return Ok(None);
    }
    client
        .execute(
            "UPDATE projects SET plan = $2 WHERE id = $1",
            &[&project_id, &plan],
        )
        .await?;
    effects::write(
        client,
        &plan_changed_effects(project_id, &from, plan, event_id),
        now,
    )
    .await?;
    Ok(Some(from))
}

pub async fn apply_stripe_event(
    client: &mut deadpool_postgres::Client,
    event_id: &str,
    event_type: &str,
    action: Action,
    now: i64,
) -> Result<StripeOutcome, PgError> {
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO stripe_events (id, type, processed_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[&event_id, &event_type, &now],
        )
        .await?;
    if inserted == 0 {
        return Ok(StripeOutcome::Duplicate);
    }
    let outcome = match action {
        Action::Ignore(reason) => StripeOutcome::Recorded(reason),
        Action::Link {
            project_id,
            customer,
        } => {
            let request = LinkRequest::Checkout {
                event_id: event_id.to_string(),
            };
            let link = link_customer(&tx, &project_id, &customer, &request, now).await?;
            link_event_outcome(project_id, &customer, link)
        }
        Action::SetPlan { customer, plan } => {
            // Ordered with a checkout linking the same customer on another
            // node, so a plan kept for later is never left behind by a link
            // that has just read none.
            super::directory::lock_name(&tx, &customer_lock(&customer)).await?;
            let project: Option<String> = tx
                .query_opt(
                    "SELECT id FROM projects WHERE stripe_customer_id = $1",
                    &[&customer],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            match project {
                None => {
                    tx.execute(
                        "INSERT INTO stripe_customer_plans (customer_id, plan, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (customer_id) DO UPDATE SET plan = excluded.plan, updated_at = excluded.updated_at",
                        &[&customer, &plan, &now],
                    )
                    .await?;
                    plan_kept_for_later(&customer, &plan)
                }
                Some(project_id) => {
                    let from = set_plan(&tx, &project_id, &plan, Some(event_id), now).await?;
                    plan_set(project_id, from, plan)
                }
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The advisory lock's name for what concerns one Stripe customer.
fn customer_lock(customer: &str) -> String {
    format!("stripe-customer:{customer}")
}

/// Links `customer` to `project_id` as `request` asks, if the rules allow
/// ([`billing_link::decide`]), in the caller's transaction. The customer's advisory
/// lock and the project rows' locks order two links of one customer or of
/// one project, on any node.
async fn link_customer(
    tx: &impl GenericClient,
    project_id: &str,
    customer: &str,
    request: &LinkRequest,
    now: i64,
) -> Result<LinkOutcome, PgError> {
    super::directory::lock_name(tx, &customer_lock(customer)).await?;
    let project_customer = tx
        .query_opt(
            "SELECT stripe_customer_id FROM projects WHERE id = $1 FOR UPDATE",
            &[&project_id],
        )
        .await?
        .map(|r| r.try_get::<_, Option<String>>(0))
        .transpose()?;
    let holder = match tx
        .query_opt(
            "SELECT id, plan FROM projects WHERE stripe_customer_id = $1 FOR UPDATE",
            &[&customer],
        )
        .await?
    {
        Some(r) => Some(Holder {
            project_id: r.try_get(0)?,
            plan: r.try_get(1)?,
        }),
        None => None,
    };
    let waiting_plan = tx
        .query_opt(
            "SELECT plan FROM stripe_customer_plans WHERE customer_id = $1",
            &[&customer],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let state = LinkState {
        project_customer,
        holder,
        waiting_plan,
    };
    let decision = billing_link::decide(project_id, request, &state);
    let mut plan_changes = Vec::new();
    if let LinkDecision::Link { taken_from, .. } = &decision {
        if let Some(other) = taken_from {
            tx.execute(
                "UPDATE projects SET stripe_customer_id = NULL WHERE id = $1",
                &[other],
            )
            .await?;
        }
        tx.execute(
            "UPDATE projects SET stripe_customer_id = $2 WHERE id = $1",
            &[&project_id, &customer],
        )
        .await?;
    }
    // The link's audit entries come before the plan changes it causes.
    effects::write(
        tx,
        &billing_link::effects(project_id, customer, request, &decision),
        now,
    )
    .await?;
    if let LinkDecision::Link { plans, .. } = &decision {
        tx.execute(
            "DELETE FROM stripe_customer_plans WHERE customer_id = $1",
            &[&customer],
        )
        .await?;
        for (project, plan) in plans {
            if let Some(from) = set_plan(tx, project, plan, request.event_id(), now).await? {
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

/// `gatehouse billing link`: links `customer` to the project by hand, in
/// one transaction.
pub async fn link_stripe_customer(
    client: &mut deadpool_postgres::Client,
    project_id: &str,
    customer: &str,
    request: LinkRequest,
    now: i64,
) -> Result<LinkOutcome, PgError> {
    let tx = client.transaction().await?;
    let outcome = link_customer(&tx, project_id, customer, &request, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

#[async_trait]
impl BillingRepo for PgStore {
    async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: crate::store::billing::Action,
    ) -> StoreResult<StripeOutcome> {
        let mut client = self.client().await?;
        Ok(apply_stripe_event(
            &mut client,
            &event_id,
            &event_type,
            action,
            self.clock.now(),
        )
        .await?)
    }

    async fn link_stripe_customer(
        &self,
        project: crate::store::ProjectId,
        customer: String,
        force: bool,
        default_plan: String,
    ) -> StoreResult<crate::store::billing_link::LinkOutcome> {
        let request = crate::store::billing_link::LinkRequest::Manual {
            force,
            default_plan,
        };
        let mut client = self.client().await?;
        Ok(link_stripe_customer(
            &mut client,
            project.as_str(),
            &customer,
            request,
            self.clock.now(),
        )
        .await?)
    }
}
