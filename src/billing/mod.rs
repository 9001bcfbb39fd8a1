//! Plans and entitlements from signed Stripe webhooks (SPEC section 10).
//! A project's plan is the default plan or one a verified Stripe event
//! reported for its customer: a checkout return URL or any client-supplied
//! parameter grants nothing (`link` decides which project a customer pays
//! for; moving a customer by hand moves the plan Stripe reported for it).

/// Which project a customer pays for: decided with the billing storage.
pub use crate::store::billing_link as link;
pub mod quota;

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::{Config, PlanConfig};

/// How far `t=` may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// At most this many `v1=` signatures are compared (Stripe sends one per
/// active secret: two while a secret is being rolled).
pub const MAX_SIGNATURES: usize = 8;

/// A parsed `Stripe-Signature` header: `t=<unix seconds>` exactly once
/// (ASCII digits only, as Stripe writes it) and one or more `v1=`
/// candidates; `v0` and unknown schemes are ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct StripeSignature<'a> {
    /// The timestamp as sent: the signed payload starts with these bytes.
    pub t_raw: &'a str,
    pub t: i64,
    pub v1: Vec<&'a str>,
}

/// Parses the header; `None` when it is not a usable signature (no or
/// several `t`, a `t` that is not a plain number, no `v1`, too many `v1`).
pub fn parse_signature(header: &str) -> Option<StripeSignature<'_>> {
    let mut t_raw: Option<&str> = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", _)) if t_raw.is_some() => return None,
            Some(("t", v)) => t_raw = Some(v),
            Some(("v1", _)) if v1.len() == MAX_SIGNATURES => return None,
            Some(("v1", v)) => v1.push(v),
            _ => {}
        }
    }
    let t_raw = t_raw?;
    if t_raw.is_empty() || t_raw.len() > 18 || !t_raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = t_raw.parse().ok()?;
    (!v1.is_empty()).then_some(StripeSignature { t_raw, t, v1 })
}

/// Whether `t` is within [`TOLERANCE_SECS`] of `now`, either way, for any
/// values (no overflow).
pub fn within_tolerance(t: i64, now: i64) -> bool {
    t.abs_diff(now) <= TOLERANCE_SECS as u64
}

/// The expected `v1`: hex HMAC-SHA256 of `"{t}.{body}"` keyed with the
/// whole `whsec_...` string, as Stripe signs.
pub fn expected_signature(t_raw: &str, body: &[u8], secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t_raw.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies `Stripe-Signature` (`t=...,v1=...[,v1=...][,v0=...]`) over the
/// raw body: any `v1` may match; a `t` more than [`TOLERANCE_SECS`] from
/// `now` fails.
pub fn verify_signature(header: &str, body: &[u8], secret: &str, now: i64) -> bool {
    let Some(sig) = parse_signature(header) else {
        return false;
    };
    if !within_tolerance(sig.t, now) {
        return false;
    }
    let expected = expected_signature(sig.t_raw, body, secret);
    let mut matched = false;
    for c in sig.v1 {
        // Compare every candidate, in constant time each.
        matched |= bool::from(c.as_bytes().ct_eq(expected.as_bytes()));
    }
    matched
}

pub use crate::store::billing::Action;

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

    /// Stripe's signing, written out independently of `expected_signature`.
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

    #[test]
    fn extreme_and_odd_timestamps_are_refused_without_overflow() {
        let secret = "whsec_test_0123456789abcdefghij";
        let body = b"{}";
        for now in [0, 1_800_000_000, i64::MAX, i64::MIN] {
            for t in [
                "-1",
                "+1800000000",
                "9223372036854775807",
                "-9223372036854775808",
                "99999999999999999999",
                "",
                "0x10",
                " 1800000000",
                "1e9",
            ] {
                assert!(
                    !verify_signature(&format!("t={t},v1=00"), body, secret, now),
                    "t={t} now={now}"
                );
            }
        }
        assert!(within_tolerance(i64::MAX, i64::MAX));
        assert!(!within_tolerance(i64::MIN, i64::MAX));
        assert!(!within_tolerance(i64::MAX, i64::MIN));
        let now = 1_800_000_000;
        let good = sign(secret, now, "{}");
        // `t` given twice is ambiguous: refused even when one is right.
        assert!(!verify_signature(
            &format!("t={now},t=1,v1={good}"),
            body,
            secret,
            now
        ));
        let many = vec![format!("v1={good}"); MAX_SIGNATURES + 1].join(",");
        assert!(!verify_signature(
            &format!("t={now},{many}"),
            body,
            secret,
            now
        ));
        let enough = vec![format!("v1={good}"); MAX_SIGNATURES].join(",");
        assert!(verify_signature(
            &format!("t={now},{enough}"),
            body,
            secret,
            now
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_header_is_judged_without_panicking(header in "\\PC{0,120}", now: i64, body: Vec<u8>) {
            let _ = verify_signature(&header, &body, "whsec_x", now);
        }

        #[test]
        fn a_signature_verifies_exactly_within_the_window(
            t in 0i64..4_000_000_000,
            skew in -1000i64..1000,
            body in "\\PC{0,64}",
            other in "\\PC{0,64}",
            decoys in proptest::collection::vec("[0-9a-f]{64}", 0..3),
        ) {
            let secret = "whsec_prop_0123456789";
            let now = t + skew;
            let good = sign(secret, t, &body);
            let mut parts = vec![format!("t={t}")];
            parts.extend(decoys.iter().map(|d| format!("v1={d}")));
            parts.push(format!("v1={good}"));
            parts.push(format!("v0={good}"));
            let header = parts.join(",");
            proptest::prop_assert_eq!(
                verify_signature(&header, body.as_bytes(), secret, now),
                skew.abs() <= TOLERANCE_SECS
            );
            if other != body {
                proptest::prop_assert!(!verify_signature(&header, other.as_bytes(), secret, t));
            }
            proptest::prop_assert!(!verify_signature(&header, body.as_bytes(), "whsec_other", t));
            // Parsing gives back what was written.
            let parsed = parse_signature(&header).unwrap();
            proptest::prop_assert_eq!(parsed.t, t);
            proptest::prop_assert_eq!(parsed.v1.last().copied(), Some(good.as_str()));
        }
    }
}
