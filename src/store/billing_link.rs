//! Which project a Stripe customer pays for (SPEC section 10).
//!
//! A project keeps the customer it was first linked to, and a customer
//! pays for one project. A `checkout.session.completed` that would break
//! either (a customer already linked to another project, a project already
//! linked to another customer) is not applied: it is answered 200 and
//! recorded (its event id, an audit entry on the checkout's project, a log
//! warning), so Stripe does not retry it for days. The team changes a link
//! on purpose with `gatehouse billing link PROJECT CUSTOMER`, which may
//! replace the project's customer, and with `--force` take a customer from
//! the project it is linked to.
//!
//! The decision is a pure function of what storage read ([`decide`]); each
//! backend reads under its locks, decides, and applies the decision and its
//! [`effects`] in one transaction.

use serde_json::json;

use crate::store::audit::Actor;
use crate::store::effects::{AuditEntry, Effects};

/// Who asks for the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRequest {
    /// A verified `checkout.session.completed` with this event id.
    Checkout { event_id: String },
    /// `gatehouse billing link`, on the host; `force` takes the customer
    /// from another project, which goes back to `default_plan`.
    Manual { force: bool, default_plan: String },
}

impl LinkRequest {
    /// The Stripe event behind the request, if one is.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            LinkRequest::Checkout { event_id } => Some(event_id),
            LinkRequest::Manual { .. } => None,
        }
    }
}

/// What storage read before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The requested project's customer now: `None` when there is no such
    /// project, `Some(None)` when it has no customer.
    pub project_customer: Option<Option<String>>,
    /// The project the customer is linked to now, if any.
    pub holder: Option<Holder>,
    /// The plan of a subscription Stripe reported for the customer while no
    /// project knew it (applied when it is linked).
    pub waiting_plan: Option<String>,
}

/// The project a customer is linked to, and its plan (which that
/// customer's subscription set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub project_id: String,
    pub plan: String,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkDecision {
    /// Unlink the customer from `taken_from`, link it to the project
    /// (replacing `previous_customer`), then set each `(project, plan)` of
    /// `plans` (a plan the customer pays for follows it).
    Link {
        previous_customer: Option<String>,
        taken_from: Option<String>,
        plans: Vec<(String, String)>,
    },
    /// The customer is linked to this project already: nothing changes.
    AlreadyLinked,
    /// Nothing changes.
    Refused(Refusal),
}

/// Why a link is not made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No project has the requested id.
    NoProject,
    /// The customer pays for another project.
    CustomerLinkedElsewhere { project_id: String },
    /// The project is linked to another customer (checkouts only: the team
    /// replaces a customer by hand).
    ProjectHasAnotherCustomer { customer: String },
}

impl Refusal {
    /// A stable code for the audit entry's details.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoProject => "no_such_project",
            Refusal::CustomerLinkedElsewhere { .. } => "customer_linked_to_another_project",
            Refusal::ProjectHasAnotherCustomer { .. } => "project_linked_to_another_customer",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoProject => write!(f, "no project has this id"),
            Refusal::CustomerLinkedElsewhere { project_id } => {
                write!(f, "the customer is linked to project {project_id}")
            }
            Refusal::ProjectHasAnotherCustomer { customer } => {
                write!(f, "the project is linked to customer {customer}")
            }
        }
    }
}

/// A project's plan that a link changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanChange {
    pub project_id: String,
    pub from: String,
    pub to: String,
}

/// What a link did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOutcome {
    pub decision: LinkDecision,
    pub plan_changes: Vec<PlanChange>,
}

/// The rules for linking `customer` to `project_id`: a checkout links
/// only a customer of no project to a project without one (or repeats the
/// link it has); by hand, a project's customer may be replaced, and a
/// customer of another project is taken only with `force`, its plan with
/// it (the project it leaves goes back to the default plan: nobody pays
/// for it any more). A subscription reported before the link applies.
pub fn decide(project_id: &str, request: &LinkRequest, state: &LinkState) -> LinkDecision {
    let Some(current) = &state.project_customer else {
        return LinkDecision::Refused(Refusal::NoProject);
    };
    let (manual, force) = match request {
        LinkRequest::Checkout { .. } => (false, None),
        LinkRequest::Manual {
            force,
            default_plan,
        } => (true, force.then_some(default_plan)),
    };
    let waiting = |project: &str| {
        state
            .waiting_plan
            .iter()
            .map(|plan| (project.to_string(), plan.clone()))
            .collect()
    };
    match (&state.holder, force) {
        (Some(holder), _) if holder.project_id == project_id => LinkDecision::AlreadyLinked,
        (Some(holder), None) => LinkDecision::Refused(Refusal::CustomerLinkedElsewhere {
            project_id: holder.project_id.clone(),
        }),
        (Some(holder), Some(default_plan)) => LinkDecision::Link {
            previous_customer: current.clone(),
            taken_from: Some(holder.project_id.clone()),
            plans: vec![
                (holder.project_id.clone(), default_plan.clone()),
                (project_id.to_string(), holder.plan.clone()),
            ],
        },
        (None, _) => match current {
            Some(kept) if !manual => LinkDecision::Refused(Refusal::ProjectHasAnotherCustomer {
                customer: kept.clone(),
            }),
            _ => LinkDecision::Link {
                previous_customer: current.clone(),
                taken_from: None,
                plans: waiting(project_id),
            },
        },
    }
}

/// What a decision records, in the transaction that applies it: the link
/// on the project (and on the project it was taken from), or, for a
/// checkout that is not applied, why, on the checkout's project.
pub fn effects(
    project_id: &str,
    customer: &str,
    request: &LinkRequest,
    decision: &LinkDecision,
) -> Effects {
    let source = match request {
        LinkRequest::Checkout { event_id } => json!({ "stripe_event": event_id }),
        LinkRequest::Manual { .. } => json!({ "source": "gatehouse billing link" }),
    };
    let entry = |project: &str, action: &'static str, mut details: serde_json::Value| {
        if let (Some(d), Some(s)) = (details.as_object_mut(), source.as_object()) {
            d.extend(s.clone());
        }
        AuditEntry {
            project_id: Some(project.to_string()),
            action,
            actor: Actor::system(),
            target: Some(project.to_string()),
            details,
        }
    };
    match decision {
        LinkDecision::Link {
            previous_customer,
            taken_from,
            ..
        } => {
            let mut linked = json!({ "customer": customer });
            if let Some(previous) = previous_customer {
                linked["previous_customer"] = json!(previous);
            }
            let mut effects =
                Effects::default().audit(entry(project_id, "billing.customer_linked", linked));
            if let Some(other) = taken_from {
                effects = effects.audit(entry(
                    other,
                    "billing.customer_unlinked",
                    json!({ "customer": customer, "moved_to": project_id }),
                ));
            }
            effects
        }
        LinkDecision::AlreadyLinked | LinkDecision::Refused(Refusal::NoProject) => {
            Effects::default()
        }
        LinkDecision::Refused(refusal) => match request {
            // The checkout's project learns that its checkout did not
            // apply; which other project holds the customer is not its
            // business (the log names it for the operator).
            LinkRequest::Checkout { .. } => {
                let mut details = json!({
                    "event_type": "checkout.session.completed",
                    "customer": customer,
                    "reason": refusal.code(),
                });
                if let Refusal::ProjectHasAnotherCustomer { customer: kept } = refusal {
                    details["linked_customer"] = json!(kept);
                }
                Effects::default().audit(entry(project_id, "billing.stripe_event_ignored", details))
            }
            // Refused by hand: nothing changed, the command says why.
            LinkRequest::Manual { .. } => Effects::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::ActorType;

    fn checkout() -> LinkRequest {
        LinkRequest::Checkout {
            event_id: "evt_1".into(),
        }
    }

    fn by_hand(force: bool) -> LinkRequest {
        LinkRequest::Manual {
            force,
            default_plan: "free".into(),
        }
    }

    fn all_requests() -> [LinkRequest; 3] {
        [checkout(), by_hand(false), by_hand(true)]
    }

    fn state(project_customer: Option<Option<&str>>, holder: Option<(&str, &str)>) -> LinkState {
        LinkState {
            project_customer: project_customer.map(|c| c.map(String::from)),
            holder: holder.map(|(project_id, plan)| Holder {
                project_id: project_id.into(),
                plan: plan.into(),
            }),
            waiting_plan: None,
        }
    }

    fn link(
        previous: Option<&str>,
        taken_from: Option<&str>,
        plans: &[(&str, &str)],
    ) -> LinkDecision {
        LinkDecision::Link {
            previous_customer: previous.map(String::from),
            taken_from: taken_from.map(String::from),
            plans: plans
                .iter()
                .map(|(p, plan)| (p.to_string(), plan.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_free_customer_links_to_a_project_without_one_however_asked() {
        for request in all_requests() {
            assert_eq!(
                decide("prj_a", &request, &state(Some(None), None)),
                link(None, None, &[])
            );
        }
    }

    #[test]
    fn a_subscription_reported_before_the_link_applies_with_it() {
        let mut waiting = state(Some(None), None);
        waiting.waiting_plan = Some("pro".into());
        for request in all_requests() {
            assert_eq!(
                decide("prj_a", &request, &waiting),
                link(None, None, &[("prj_a", "pro")])
            );
        }
    }

    #[test]
    fn the_same_link_again_changes_nothing() {
        for request in all_requests() {
            assert_eq!(
                decide(
                    "prj_a",
                    &request,
                    &state(Some(Some("cus_1")), Some(("prj_a", "pro")))
                ),
                LinkDecision::AlreadyLinked
            );
        }
    }

    #[test]
    fn a_checkout_never_moves_a_customer_nor_replaces_one() {
        let elsewhere = LinkDecision::Refused(Refusal::CustomerLinkedElsewhere {
            project_id: "prj_b".into(),
        });
        assert_eq!(
            decide(
                "prj_a",
                &checkout(),
                &state(Some(None), Some(("prj_b", "pro")))
            ),
            elsewhere
        );
        // Both at once: the customer's link is what is reported.
        assert_eq!(
            decide(
                "prj_a",
                &checkout(),
                &state(Some(Some("cus_0")), Some(("prj_b", "pro")))
            ),
            elsewhere
        );
        assert_eq!(
            decide("prj_a", &checkout(), &state(Some(Some("cus_0")), None)),
            LinkDecision::Refused(Refusal::ProjectHasAnotherCustomer {
                customer: "cus_0".into()
            })
        );
    }

    #[test]
    fn by_hand_a_customer_is_replaced_and_taken_only_with_force() {
        assert_eq!(
            decide("prj_a", &by_hand(false), &state(Some(Some("cus_0")), None)),
            link(Some("cus_0"), None, &[])
        );
        assert_eq!(
            decide(
                "prj_a",
                &by_hand(false),
                &state(Some(None), Some(("prj_b", "pro")))
            ),
            LinkDecision::Refused(Refusal::CustomerLinkedElsewhere {
                project_id: "prj_b".into()
            })
        );
        // The plan the customer pays for moves with it; the project it
        // leaves has nobody paying for it.
        assert_eq!(
            decide(
                "prj_a",
                &by_hand(true),
                &state(Some(Some("cus_0")), Some(("prj_b", "pro")))
            ),
            link(
                Some("cus_0"),
                Some("prj_b"),
                &[("prj_b", "free"), ("prj_a", "pro")]
            )
        );
    }

    #[test]
    fn no_project_no_link() {
        for request in all_requests() {
            assert_eq!(
                decide("prj_x", &request, &state(None, Some(("prj_b", "pro")))),
                LinkDecision::Refused(Refusal::NoProject)
            );
        }
    }

    fn recorded(e: &Effects) -> Vec<(String, &'static str, serde_json::Value)> {
        e.audit
            .iter()
            .map(|a| (a.project_id.clone().unwrap(), a.action, a.details.clone()))
            .collect()
    }

    #[test]
    fn a_link_is_recorded_on_both_projects_it_concerns() {
        let linked = effects("prj_a", "cus_1", &checkout(), &link(None, None, &[]));
        assert_eq!(
            recorded(&linked),
            [(
                "prj_a".into(),
                "billing.customer_linked",
                json!({ "customer": "cus_1", "stripe_event": "evt_1" })
            )]
        );
        let moved = effects(
            "prj_a",
            "cus_1",
            &by_hand(true),
            &link(Some("cus_0"), Some("prj_b"), &[]),
        );
        assert_eq!(
            recorded(&moved),
            [
                (
                    "prj_a".into(),
                    "billing.customer_linked",
                    json!({ "customer": "cus_1", "previous_customer": "cus_0",
                            "source": "gatehouse billing link" })
                ),
                (
                    "prj_b".into(),
                    "billing.customer_unlinked",
                    json!({ "customer": "cus_1", "moved_to": "prj_a",
                            "source": "gatehouse billing link" })
                )
            ]
        );
        assert!(moved
            .audit
            .iter()
            .all(|a| a.actor.kind == ActorType::System));
    }

    #[test]
    fn a_checkout_not_applied_is_recorded_on_its_project_only() {
        let ignored = effects(
            "prj_a",
            "cus_1",
            &checkout(),
            &LinkDecision::Refused(Refusal::CustomerLinkedElsewhere {
                project_id: "prj_b".into(),
            }),
        );
        let entries = recorded(&ignored);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].0.as_str(), entries[0].1),
            ("prj_a", "billing.stripe_event_ignored")
        );
        // Which other project holds the customer is not this one's business.
        assert_eq!(
            entries[0].2,
            json!({ "event_type": "checkout.session.completed", "customer": "cus_1",
                    "reason": "customer_linked_to_another_project", "stripe_event": "evt_1" })
        );
        let kept = effects(
            "prj_a",
            "cus_1",
            &checkout(),
            &LinkDecision::Refused(Refusal::ProjectHasAnotherCustomer {
                customer: "cus_0".into(),
            }),
        );
        assert_eq!(recorded(&kept)[0].2["linked_customer"], "cus_0");
        for nothing in [
            effects("prj_a", "cus_1", &checkout(), &LinkDecision::AlreadyLinked),
            effects(
                "prj_x",
                "cus_1",
                &checkout(),
                &LinkDecision::Refused(Refusal::NoProject),
            ),
            effects(
                "prj_a",
                "cus_1",
                &by_hand(false),
                &LinkDecision::Refused(Refusal::CustomerLinkedElsewhere {
                    project_id: "prj_b".into(),
                }),
            ),
        ] {
            assert!(recorded(&nothing).is_empty());
        }
    }

    #[test]
    fn a_plan_change_names_the_stripe_event_behind_it() {
        assert_eq!(checkout().event_id(), Some("evt_1"));
        assert_eq!(by_hand(false).event_id(), None);
        assert_eq!(by_hand(true).event_id(), None);
    }

    #[test]
    fn a_refusal_says_why_in_words() {
        assert_eq!(Refusal::NoProject.to_string(), "no project has this id");
        assert_eq!(
            Refusal::CustomerLinkedElsewhere {
                project_id: "prj_b".into()
            }
            .to_string(),
            "the customer is linked to project prj_b"
        );
        assert_eq!(
            Refusal::ProjectHasAnotherCustomer {
                customer: "cus_1".into()
            }
            .to_string(),
            "the project is linked to customer cus_1"
        );
    }
}
