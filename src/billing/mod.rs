//! Plans and entitlements from signed Stripe webhooks (SPEC section 10).
//! Nothing but a verified Stripe event changes a project's plan: a checkout
//! return URL or any client-supplied parameter grants nothing.

pub mod quota;

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::{Config, PlanConfig};

/// How far `t=` may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Verifies `Stripe-Signature` (`t=...,v1=...[,v1=...][,v0=...]`) over the
/// raw body: hex HMAC-SHA256 of `"{t}.{body}"` keyed with the whole
/// `whsec_...` string, as Stripe does. Any `v1` may match; `v0` is ignored.
pub fn verify_signature(header: &str, body: &[u8], secret: &str, now: i64) -> bool {
    let mut timestamp: Option<i64> = None;
    let mut candidates: Vec<&str> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse().ok(),
            Some(("v1", v)) => candidates.push(v),
            _ => {}
        }
    }
    let Some(t) = timestamp else { return false };
    if candidates.is_empty() || (now - t).abs() > TOLERANCE_SECS {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let expected: String = ctx
        .sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut matched = false;
    for c in candidates {
        // Compare every candidate, in constant time each.
        matched |= bool::from(c.as_bytes().ct_eq(expected.as_bytes()));
    }
    matched
}

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

fn plan_for_price<'a>(plans: &'a [PlanConfig], price: &str) -> Option<&'a PlanConfig> {
    plans
        .iter()
        .find(|p| p.stripe_price_id.as_deref() == Some(price))
}

/// Reads the event (already verified) into an action.
pub fn interpret(event: &serde_json::Value, config: &Config) -> Action {
    let kind = event["type"].as_str().unwrap_or_default();
    let object = &event["data"]["object"];
    let customer = object["customer"].as_str().map(String::from);
    let default_plan = config.billing.default_plan.clone();
    match kind {
        "checkout.session.completed" => match (object["client_reference_id"].as_str(), customer) {
            (Some(project), Some(customer)) if !project.is_empty() => Action::Link {
                project_id: project.to_string(),
                customer,
            },
            _ => Action::Ignore("checkout session without client_reference_id or customer".into()),
        },
        "customer.subscription.deleted" => match customer {
            Some(customer) => Action::SetPlan {
                customer,
                plan: default_plan,
            },
            None => Action::Ignore("subscription without customer".into()),
        },
        "customer.subscription.created" | "customer.subscription.updated" => {
            let Some(customer) = customer else {
                return Action::Ignore("subscription without customer".into());
            };
            let status = object["status"].as_str().unwrap_or_default();
            match status {
                "active" | "trialing" => {
                    let price = object["items"]["data"][0]["price"]["id"]
                        .as_str()
                        .unwrap_or_default();
                    match plan_for_price(&config.billing.plans, price) {
                        Some(plan) => Action::SetPlan {
                            customer,
                            plan: plan.name.clone(),
                        },
                        None => Action::Ignore(format!("no plan has the price {price:?}")),
                    }
                }
                "canceled" | "unpaid" | "incomplete_expired" => Action::SetPlan {
                    customer,
                    plan: default_plan,
                },
                // past_due, incomplete, paused: keep the current plan while Stripe retries.
                other => Action::Ignore(format!(
                    "subscription status {other:?} keeps the current plan"
                )),
            }
        }
        other => Action::Ignore(format!("event type {other:?} is not used")),
    }
}

/// A plan's limits: `None` is unlimited. Unknown plans (and the default plan
/// without `[[billing.plans]]`) are unlimited.
pub fn limits(config: &Config, plan: &str) -> (Option<u64>, Option<u64>) {
    config
        .billing
        .plans
        .iter()
        .find(|p| p.name == plan)
        .map(|p| (p.max_keys, p.monthly_verifications))
        .unwrap_or((None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, format!("{t}.{body}").as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn signature_rules() {
        let secret = "whsec_test_0123456789abcdefghij";
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        assert!(verify_signature(
            &format!("t={now},v1={good}"),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(verify_signature(
            &format!("t={now},v1=deadbeef,v1={good}"),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(!verify_signature(
            &format!("t={now},v0={good}"),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(!verify_signature(
            &format!("t={now},v1={good}"),
            b"{}",
            secret,
            now
        ));
        assert!(!verify_signature(
            &format!("t={},v1={}", now - 301, sign(secret, now - 301, body)),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(!verify_signature(
            &format!("t={},v1={}", now + 301, sign(secret, now + 301, body)),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(verify_signature(
            &format!("t={},v1={}", now - 300, sign(secret, now - 300, body)),
            body.as_bytes(),
            secret,
            now
        ));
        assert!(!verify_signature("", body.as_bytes(), secret, now));
        assert!(!verify_signature(
            &format!("v1={good}"),
            body.as_bytes(),
            secret,
            now
        ));
    }
}
