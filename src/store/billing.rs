//! Plans from Stripe behind the storage interface.
//!
//! What a verified event does is decided by `billing::Action` (parsed from
//! the event) and the reconciliation rules in `billing` (which effects a
//! plan change or a customer link has); the backend records the event id
//! and applies the change in one transaction, so an event is applied once
//! however many nodes receive it (the event id's primary key decides).

use async_trait::async_trait;

use super::StoreResult;
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
}
