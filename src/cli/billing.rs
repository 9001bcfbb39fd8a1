//! `gatehouse billing link PROJECT CUSTOMER`: the one way to change which
//! Stripe customer pays for a project once it has one (a checkout never
//! replaces a project's customer nor takes another project's; SPEC
//! section 10). The rules are `billing::link`'s; this prints the outcome.

use clap::{Args, Subcommand};

use crate::billing::link::{LinkDecision, Refusal};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum BillingCommand {
    /// Link a Stripe customer to a project by hand (replacing the
    /// project's customer), audited on every project it concerns.
    Link(LinkArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "A checkout (checkout.session.completed) links a customer only to a \
    project without one, and only a customer of no other project; any other checkout is \
    answered 200 to Stripe, recorded in the project's audit log as \
    billing.stripe_event_ignored, and changes nothing. This command changes a link on \
    purpose: it replaces the project's customer (the plan stays until the new customer's \
    next subscription event), and with --force it also takes the customer from the project \
    it is linked to: the plan the customer pays for moves with it, and the project it leaves \
    goes back to billing.default_plan. A subscription Stripe reported for the customer \
    before any project knew it applies now. Each project concerned records \
    billing.customer_linked or billing.customer_unlinked (and billing.plan_changed) in its \
    audit log, with the system as actor."
)]
pub struct LinkArgs {
    /// Project id or (unique) name.
    #[arg(value_name = "PROJECT")]
    project: String,
    /// The Stripe customer id (cus_...).
    #[arg(value_name = "CUSTOMER")]
    customer: String,
    /// Take the customer from the project it is linked to now.
    #[arg(long)]
    force: bool,
}

/// A Stripe customer id as Stripe writes them: `cus_` and letters, digits.
fn customer_id(value: &str) -> Result<String, String> {
    let rest = value.strip_prefix("cus_").unwrap_or_default();
    if rest.is_empty() || value.len() > 255 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "CUSTOMER {value:?} is not a Stripe customer id (cus_ followed by letters and digits)"
        ));
    }
    Ok(value.to_string())
}

pub async fn run(
    store: &dyn Store,
    command: BillingCommand,
    default_plan: String,
) -> Result<(), String> {
    match command {
        BillingCommand::Link(a) => {
            let customer = customer_id(&a.customer)?;
            let project = store
                .find_project(a.project)
                .await
                .map_err(|e| e.to_string())??;
            let outcome = store
                .link_stripe_customer(
                    project.id.clone().into(),
                    customer.clone(),
                    a.force,
                    default_plan,
                )
                .await
                .map_err(|e| e.to_string())?;
            let which = format!("{:?} ({})", project.name, project.id);
            match outcome.decision {
                LinkDecision::Link {
                    previous_customer,
                    taken_from,
                    ..
                } => {
                    println!("Linked Stripe customer {customer} to project {which}.");
                    if let Some(previous) = previous_customer {
                        println!("It replaces {previous}, whose Stripe events no longer reach this project.");
                    }
                    if let Some(other) = taken_from {
                        println!("Project {other} no longer has a Stripe customer.");
                    }
                    for change in outcome.plan_changes {
                        println!(
                            "Project {}: plan {} -> {}.",
                            change.project_id, change.from, change.to
                        );
                    }
                    Ok(())
                }
                LinkDecision::AlreadyLinked => {
                    println!(
                        "Stripe customer {customer} is linked to project {which} already; nothing changed."
                    );
                    Ok(())
                }
                LinkDecision::Refused(Refusal::CustomerLinkedElsewhere { project_id }) => Err(
                    format!(
                        "Stripe customer {customer} is linked to project {project_id}; nothing changed. \
                         Give --force to move it to {which} (project {project_id} is then left without a customer)."
                    ),
                ),
                LinkDecision::Refused(refusal) => Err(format!("nothing changed: {refusal}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn customer_ids_look_like_stripes() {
        assert_eq!(
            super::customer_id("cus_Q9xZ01").as_deref(),
            Ok("cus_Q9xZ01")
        );
        for bad in ["", "cus_", "Q9xZ01", "cus_a b", "cus_a;drop", "sub_123"] {
            assert!(super::customer_id(bad).is_err(), "{bad:?}");
        }
        assert!(super::customer_id(&format!("cus_{}", "a".repeat(252))).is_err());
    }
}
