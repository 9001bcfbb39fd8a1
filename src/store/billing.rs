//! Plans from Stripe behind the storage interface.
//!
//! What a verified event does is decided by `billing::Action` (parsed from
//! the event) and the reconciliation rules in `billing` (`store::billing_link`
//! decides which project a customer pays for; the effects of a plan change
//! or a link); the backend records the event id
//! and applies the change in one transaction, so an event is applied once
//! however many nodes receive it (the event id's primary key decides).

use async_trait::async_trait;

use super::audit::Actor;
use super::billing_link::{LinkDecision, LinkOutcome, PlanChange};
use super::effects::{AuditEntry, Effects, WebhookEvent};
use super::{ProjectId, StoreResult};

/// What a Stripe event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `checkout.session.completed`: this customer pays for this project.
    Link {
        project_id: String,
        customer: String,
    },
    /// A subscription changed: the customer's project moves to `plan`.
    SetPlan { customer: String, plan: String },
    /// Acknowledged and logged, nothing changes.
    Ignore(String),
}

#[async_trait]
pub trait BillingRepo: Send + Sync {
    async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: Action,
    ) -> StoreResult<StripeOutcome>;

    /// `gatehouse billing link`: links a Stripe customer to a project by
    /// hand under the rules of `store::billing_link` (a project's customer may be
    /// replaced; a customer of another project is taken only with `force`),
    /// audited on every project it concerns.
    /// `default_plan` is what a project left without a customer goes back to.
    async fn link_stripe_customer(
        &self,
        project: ProjectId,
        customer: String,
        force: bool,
        default_plan: String,
    ) -> StoreResult<LinkOutcome>;
}

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
    /// Recorded but not applied, and why: a checkout for a customer linked
    /// to another project or for a project linked to another customer, a
    /// subscription of a customer no project knows (SPEC section 10). Worth
    /// a warning; never a failure, or Stripe would retry it for days.
    NotApplied(String),
}

/// What a plan change records and announces (both backends); `event_id`
/// is the Stripe event that caused it, when one did.
pub fn plan_changed_effects(
    project_id: &str,
    from: &str,
    to: &str,
    event_id: Option<&str>,
) -> Effects {
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

/// What a link outcome means for the Stripe event that asked for it.
pub fn link_event_outcome(project_id: String, customer: &str, link: LinkOutcome) -> StripeOutcome {
    match link.decision {
        LinkDecision::Link { .. } => match link.plan_changes.into_iter().next() {
            Some(PlanChange {
                project_id,
                from,
                to,
            }) => StripeOutcome::PlanChanged {
                project_id,
                from,
                to,
            },
            None => StripeOutcome::Recorded("linked".into()),
        },
        LinkDecision::AlreadyLinked => {
            StripeOutcome::Recorded("the customer is linked to this project already".into())
        }
        LinkDecision::Refused(refusal) => StripeOutcome::NotApplied(format!(
            "checkout for project {project_id} and customer {customer} not applied: {refusal}; \
             change the link with `gatehouse billing link` if it should"
        )),
    }
}

/// A subscription's plan for a customer no project is linked to: kept
/// until a checkout (or `gatehouse billing link`) links it.
pub fn plan_kept_for_later(customer: &str, plan: &str) -> StripeOutcome {
    StripeOutcome::NotApplied(format!(
        "customer {customer} is not linked to a project; its plan {plan} applies when a checkout (or `gatehouse billing link`) links it"
    ))
}

/// What setting a linked project's plan did: `from` is the plan it
/// replaced, `None` when the project was on that plan already.
pub fn plan_set(project_id: String, from: Option<String>, to: String) -> StripeOutcome {
    match from {
        Some(from) => StripeOutcome::PlanChanged {
            project_id,
            from,
            to,
        },
        None => StripeOutcome::Recorded("plan unchanged".into()),
    }
}
