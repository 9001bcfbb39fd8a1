//! Plans from Stripe behind the storage interface.
//!
//! What a verified event does is decided by `billing::Action` (parsed from
//! the event) and the reconciliation rules in `billing` (`billing::link`
//! decides which project a customer pays for; the effects of a plan change
//! or a link); the backend records the event id
//! and applies the change in one transaction, so an event is applied once
//! however many nodes receive it (the event id's primary key decides).

use async_trait::async_trait;

use super::{ProjectId, StoreResult};
use crate::billing::link::LinkOutcome;
use crate::billing::Action;
use crate::db::billing::StripeOutcome;

#[async_trait]
pub trait BillingRepo: Send + Sync {
    async fn apply_stripe_event(
        &self,
        event_id: String,
        event_type: String,
        action: Action,
    ) -> StoreResult<StripeOutcome>;

    /// `gatehouse billing link`: links a Stripe customer to a project by
    /// hand under the rules of `billing::link` (a project's customer may be
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
