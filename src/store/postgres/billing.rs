//! Stripe events in PostgreSQL: the event id is inserted first (its
//! primary key decides which node applies a redelivered event), then the
//! change, in one transaction.

use deadpool_postgres::GenericClient;

use super::effects;
use super::PgError;
use crate::billing::Action;
use crate::db::billing::{customer_linked_effects, plan_changed_effects, StripeOutcome};

async fn set_plan(
    client: &impl GenericClient,
    project_id: &str,
    plan: &str,
    event_id: &str,
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
            let linked = tx
                .execute(
                    "UPDATE projects SET stripe_customer_id = $2 WHERE id = $1",
                    &[&project_id, &customer],
                )
                .await?;
            if linked == 0 {
                StripeOutcome::Recorded(format!("no project {project_id:?}"))
            } else {
                effects::write(
                    &tx,
                    &customer_linked_effects(&project_id, &customer, event_id),
                    now,
                )
                .await?;
                // A subscription reported before this checkout applies now.
                let waiting: Option<String> = tx
                    .query_opt(
                        "DELETE FROM stripe_customer_plans WHERE customer_id = $1 RETURNING plan",
                        &[&customer],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                match waiting {
                    Some(plan) => match set_plan(&tx, &project_id, &plan, event_id, now).await? {
                        Some(from) => StripeOutcome::PlanChanged {
                            project_id,
                            from,
                            to: plan,
                        },
                        None => StripeOutcome::Recorded("linked".into()),
                    },
                    None => StripeOutcome::Recorded("linked".into()),
                }
            }
        }
        Action::SetPlan { customer, plan } => {
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
                    StripeOutcome::Recorded(format!(
                        "customer {customer:?} is not linked to a project yet"
                    ))
                }
                Some(project_id) => match set_plan(&tx, &project_id, &plan, event_id, now).await? {
                    Some(from) => StripeOutcome::PlanChanged {
                        project_id,
                        from,
                        to: plan,
                    },
                    None => StripeOutcome::Recorded("plan unchanged".into()),
                },
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}
