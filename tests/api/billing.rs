//! SPEC section 10 (billing) and the plan limits of sections 5 and 8:
//! plans change only through Stripe events signed as Stripe signs them
//! (computed here from the documented scheme).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{send, send_body, spawn_app_with, TestApp, Tokens};
use crate::keys::{create_key, verify};
use crate::multinode::Cluster;
use crate::webhooks::{add_webhook, Receiver};

const SECRET: &str = "whsec_billing_test_9f8e7d6c5b4a39281706f5e4";

fn billing_app() -> TestApp {
    spawn_app_with(plans)
}

fn plans(c: &mut gatehouse::config::Config) {
    c.billing.stripe_webhook_secret = Some(gatehouse::config::Secret::new(SECRET));
    c.billing.default_plan = "free".into();
    c.billing.plans = vec![
        gatehouse::config::PlanConfig {
            name: "free".into(),
            stripe_price_id: None,
            max_keys: Some(2),
            monthly_verifications: Some(5),
        },
        gatehouse::config::PlanConfig {
            name: "pro".into(),
            stripe_price_id: Some("price_pro_monthly".into()),
            max_keys: Some(100),
            monthly_verifications: None,
        },
    ];
}

fn stripe_sig(t: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn post_event(app: &TestApp, body: &str, header: &str) -> crate::helpers::Resp {
    send_body(
        app.request("POST", "/api/v1/billing/stripe/webhook")
            .set("Content-Type", "application/json")
            .set("Stripe-Signature", header),
        body,
    )
}

fn signed(app: &TestApp, event: &Value) -> crate::helpers::Resp {
    let body = event.to_string();
    let t = gatehouse::clock::Clock::system().now();
    post_event(app, &body, &format!("t={t},v1={}", stripe_sig(t, &body)))
}

fn checkout(id: &str, project: &str, customer: &str) -> Value {
    json!({ "id": id, "type": "checkout.session.completed", "data": { "object": {
        "id": "cs_test_1", "client_reference_id": project, "customer": customer } } })
}

fn subscription(id: &str, kind: &str, customer: &str, status: &str, price: &str) -> Value {
    json!({ "id": id, "type": kind, "data": { "object": {
        "id": "sub_1", "customer": customer, "status": status,
        "items": { "data": [ { "price": { "id": price } } ] } } } })
}

fn billing(app: &TestApp, t: &Tokens) -> Value {
    let res = send(app.authed("GET", "/api/v1/billing", &t.access));
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()
}

#[test]
fn a_signed_subscription_upgrades_once_and_deletion_downgrades() {
    let app = billing_app();
    let t = app.login("payer@acme.test");
    let project = app.first_project(&t.access);
    let receiver = Receiver::start(vec![200]);
    add_webhook(&app, &t, &receiver.url, &["billing.plan_changed"]);
    assert_eq!(billing(&app, &t)["plan"], "free");
    assert_eq!(
        billing(&app, &t)["limits"],
        json!({"max_keys": 2, "monthly_verifications": 5})
    );

    let res = signed(&app, &checkout("evt_checkout", &project, "cus_A"));
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        billing(&app, &t)["plan"],
        "free",
        "a checkout alone grants nothing"
    );
    let upgrade = subscription(
        "evt_sub_1",
        "customer.subscription.created",
        "cus_A",
        "active",
        "price_pro_monthly",
    );
    let res = signed(&app, &upgrade);
    assert_eq!(res.json(), json!({"received": true, "duplicate": false}));
    assert_eq!(billing(&app, &t)["plan"], "pro");
    assert_eq!(
        billing(&app, &t)["limits"]["monthly_verifications"],
        Value::Null
    );

    // The same event again changes nothing.
    let res = signed(&app, &upgrade);
    assert_eq!(res.json(), json!({"received": true, "duplicate": true}));
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'billing.plan_changed'"),
        1
    );
    let hook = receiver.wait_for(1, Duration::from_secs(10));
    let payload: Value = serde_json::from_str(&hook[0].body).unwrap();
    assert_eq!(payload["type"], "billing.plan_changed");
    assert_eq!(
        payload["data"],
        json!({"project_id": project, "from": "free", "to": "pro"})
    );

    // Unknown prices and customers are acknowledged and change nothing.
    assert_eq!(
        signed(
            &app,
            &subscription(
                "evt_x1",
                "customer.subscription.updated",
                "cus_A",
                "active",
                "price_unknown"
            )
        )
        .status,
        200
    );
    assert_eq!(
        signed(
            &app,
            &subscription(
                "evt_x2",
                "customer.subscription.updated",
                "cus_nobody",
                "active",
                "price_pro_monthly"
            )
        )
        .status,
        200
    );
    assert_eq!(
        signed(
            &app,
            &json!({"id": "evt_x3", "type": "invoice.paid", "data": {"object": {}}})
        )
        .status,
        200
    );
    assert_eq!(billing(&app, &t)["plan"], "pro");

    // Deleting the subscription goes back to the default plan.
    signed(
        &app,
        &subscription(
            "evt_del",
            "customer.subscription.deleted",
            "cus_A",
            "canceled",
            "price_pro_monthly",
        ),
    );
    assert_eq!(billing(&app, &t)["plan"], "free");
    receiver.wait_for(2, Duration::from_secs(10));
}

#[test]
fn bad_signatures_are_refused_and_change_nothing() {
    let app = billing_app();
    let t = app.login("payer@acme.test");
    let project = app.first_project(&t.access);
    signed(&app, &checkout("evt_link", &project, "cus_B"));
    let event = subscription(
        "evt_up",
        "customer.subscription.created",
        "cus_B",
        "active",
        "price_pro_monthly",
    );
    let body = event.to_string();
    let now = gatehouse::clock::Clock::system().now();
    let good = stripe_sig(now, &body);
    let before = app.query_i64("SELECT count(*) FROM stripe_events");
    for header in [
        format!("t={now},v1={}", stripe_sig(now, "{}")),
        format!("t={now},v0={good}"),
        format!("t={},v1={}", now - 301, stripe_sig(now - 301, &body)),
        format!("t={},v1={}", now + 301, stripe_sig(now + 301, &body)),
        format!("v1={good}"),
        String::new(),
        // Timestamps at the ends of the integer range, and other spellings.
        format!("t={},v1={good}", i64::MAX),
        format!("t={},v1={good}", i64::MIN),
        format!("t=99999999999999999999999,v1={good}"),
        format!("t=+{now},v1={}", stripe_sig(now, &body)),
        format!("t={now},t={now},v1={good}"),
    ] {
        post_event(&app, &body, &header).assert_error(400, "invalid_signature");
    }
    assert_eq!(app.query_i64("SELECT count(*) FROM stripe_events"), before);
    assert_eq!(billing(&app, &t)["plan"], "free");

    // Two v1 entries where only the second matches: accepted.
    let res = post_event(
        &app,
        &body,
        &format!("t={now},v1={},v1={good}", stripe_sig(now, "other")),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(billing(&app, &t)["plan"], "pro");

    // A checkout return URL grants nothing.
    let t2 = app.login("freeloader@acme.test");
    assert_eq!(
        app.get("/billing?session_id=cs_test_123&plan=pro").status,
        200
    );
    let res = send(app.authed(
        "GET",
        "/api/v1/billing?session_id=cs_test_123&plan=pro",
        &t2.access,
    ));
    assert_eq!(res.json()["plan"], "free");
}

#[test]
fn a_subscription_before_its_checkout_applies_when_the_customer_is_linked() {
    let app = billing_app();
    let t = app.login("early@acme.test");
    let project = app.first_project(&t.access);
    signed(
        &app,
        &subscription(
            "evt_early",
            "customer.subscription.created",
            "cus_C",
            "trialing",
            "price_pro_monthly",
        ),
    );
    assert_eq!(billing(&app, &t)["plan"], "free");
    signed(&app, &checkout("evt_late_checkout", &project, "cus_C"));
    assert_eq!(billing(&app, &t)["plan"], "pro");
}

#[test]
fn plan_limits_are_enforced() {
    let app = billing_app();
    let t = app.login("limited@acme.test");
    let (_, key) = create_key(
        &app,
        &t,
        json!({ "name": "one", "credits": {"remaining": 100} }),
    );
    create_key(&app, &t, json!({ "name": "two" }));
    let res = send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "three"}"#,
    );
    res.assert_error(403, "plan_limit");
    assert_eq!(billing(&app, &t)["usage"]["keys"], 2);

    // Five verifications a month on the free plan.
    for _ in 0..5 {
        assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);
    }
    let v = verify(&app, json!({ "key": key }));
    assert_eq!(v["code"], "quota_exceeded");
    let res = send(
        app.request("GET", "/api/v1/auth/check")
            .set("X-Forwarded-Uri", "/")
            .set("X-API-Key", &key),
    );
    res.assert_error(429, "quota_exceeded");
    assert_eq!(billing(&app, &t)["usage"]["verifications_this_month"], 5);
    let shown = send(app.authed("GET", "/api/v1/api-keys?limit=10", &t.access)).json();
    let one = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "one")
        .unwrap()
        .clone();
    assert_eq!(
        one["credits"]["remaining"], 95,
        "refused requests spend no credits"
    );

    // Upgrading lifts both limits at once.
    let project = app.first_project(&t.access);
    signed(&app, &checkout("evt_l1", &project, "cus_D"));
    signed(
        &app,
        &subscription(
            "evt_l2",
            "customer.subscription.updated",
            "cus_D",
            "active",
            "price_pro_monthly",
        ),
    );
    assert_eq!(verify(&app, json!({ "key": key }))["valid"], true);
    create_key(&app, &t, json!({ "name": "three" }));
}

#[test]
fn without_billing_everything_is_unlimited_and_the_webhook_is_absent() {
    let app = crate::helpers::spawn_app();
    let t = app.login("free@acme.test");
    let b = billing(&app, &t);
    assert_eq!(b["plan"], "free");
    assert_eq!(
        b["limits"],
        json!({"max_keys": null, "monthly_verifications": null})
    );
    assert_eq!(b["billing_enabled"], false);
    post_event(&app, "{}", "t=1,v1=00").assert_error(404, "not_found");
}

/// Two nodes configured by `configure` on one database (one SQLite file,
/// or one PostgreSQL database) and one clock.
fn two_nodes(
    cluster: &Cluster,
    configure: fn(&mut gatehouse::config::Config),
) -> (TestApp, TestApp) {
    (cluster.app(configure), cluster.app(configure))
}

/// Two nodes on one database (one SQLite file, or one PostgreSQL
/// database): a plan changed through one applies on the other once
/// `billing::quota::PLAN_TTL` has passed, and the shared monthly counter
/// holds.
#[test]
fn a_plan_change_through_one_node_applies_on_the_other() {
    let cluster = Cluster::new();
    let (a, b) = two_nodes(&cluster, plans);
    let t = a.login("payer@acme.test");
    let project = a.first_project(&t.access);
    let (_, key) = create_key(&a, &t, json!({ "name": "metered" }));
    assert_eq!(
        signed(&a, &checkout("evt_c", &project, "cus_N")).status,
        200
    );
    let upgrade = subscription(
        "evt_u",
        "customer.subscription.created",
        "cus_N",
        "active",
        "price_pro_monthly",
    );
    assert_eq!(signed(&a, &upgrade).status, 200);
    // Pro is unlimited: b lets through more than free's 5.
    for _ in 0..7 {
        assert_eq!(verify(&b, json!({ "key": key }))["valid"], true);
    }
    // The month's counter starts from the stored usage: b writes what it
    // counted (as its flush timer does).
    b.block_on(b.state.keys.usage.flush(&*b.state.store))
        .expect("b's usage is written");
    assert_eq!(
        a.query_i64("SELECT CAST(coalesce(sum(valid), 0) AS BIGINT) FROM usage_hourly"),
        7
    );
    let downgrade = subscription(
        "evt_d",
        "customer.subscription.deleted",
        "cus_N",
        "canceled",
        "price_pro_monthly",
    );
    assert_eq!(signed(&a, &downgrade).status, 200);
    assert_eq!(
        verify(&a, json!({ "key": key }))["code"],
        "quota_exceeded",
        "at once on a"
    );
    // Once b's copy of the plan is older than PLAN_TTL, b reads it again.
    cluster
        .clock
        .advance(gatehouse::billing::quota::PLAN_TTL + Duration::from_secs(1));
    let v = verify(&b, json!({ "key": key }));
    assert_eq!(v["code"], "quota_exceeded", "{v}");
}

/// Two processes on one database: a downgrade from one limited plan to a
/// smaller one, taken by one node, holds at once on the other, which
/// still has the old plan's limit in memory: the count in storage checks
/// the plan, so the other node is told and reads it again.
#[test]
fn a_downgrade_through_one_node_holds_at_once_on_the_other() {
    fn with_team(c: &mut gatehouse::config::Config) {
        plans(c);
        c.billing.plans.push(gatehouse::config::PlanConfig {
            name: "team".into(),
            stripe_price_id: Some("price_team_monthly".into()),
            max_keys: Some(10),
            monthly_verifications: Some(1_000),
        });
    }
    let cluster = Cluster::new();
    let (a, b) = two_nodes(&cluster, with_team);
    let t = a.login("team@acme.test");
    let project = a.first_project(&t.access);
    let (_, key) = create_key(&a, &t, json!({ "name": "metered" }));
    assert_eq!(
        signed(&a, &checkout("evt_c", &project, "cus_T")).status,
        200
    );
    let team = subscription(
        "evt_t",
        "customer.subscription.created",
        "cus_T",
        "active",
        "price_team_monthly",
    );
    assert_eq!(signed(&a, &team).status, 200);
    // b learns the team plan (1,000 a month) and counts 3.
    for _ in 0..3 {
        assert_eq!(verify(&b, json!({ "key": key }))["valid"], true);
    }
    let downgrade = subscription(
        "evt_d",
        "customer.subscription.deleted",
        "cus_T",
        "canceled",
        "price_team_monthly",
    );
    assert_eq!(signed(&a, &downgrade).status, 200);
    // Free allows 5 a month: b lets 2 more through and no more, without
    // waiting for its copy of the plan to age.
    let answers: Vec<Value> = (0..6).map(|_| verify(&b, json!({ "key": key }))).collect();
    let valid = answers.iter().filter(|v| v["valid"] == true).count();
    assert_eq!(valid, 2, "{answers:?}");
    assert!(
        answers[2..].iter().all(|v| v["code"] == "quota_exceeded"),
        "{answers:?}"
    );
    assert_eq!(
        a.query_i64("SELECT CAST(max(used) AS BIGINT) FROM quota_counters"),
        5
    );
}

/// The audit entries of `action` in the project the session acts on.
fn audit_entries(app: &TestApp, t: &Tokens, action: &str) -> Vec<Value> {
    let res = send(app.authed("GET", "/api/v1/audit-log?limit=100", &t.access));
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// Whether `project` is linked to `customer` (`None`: to no customer).
fn linked(app: &TestApp, project: &str, customer: Option<&str>) -> bool {
    let is = match customer {
        Some(c) => format!("= '{c}'"),
        None => "IS NULL".into(),
    };
    app.query_i64(&format!(
        "SELECT count(*) FROM projects WHERE id = '{project}' AND stripe_customer_id {is}"
    )) == 1
}

fn billing_cli(app: &TestApp, args: &[&str]) -> crate::helpers::Output {
    crate::helpers::run(
        crate::helpers::gatehouse(&app.root)
            .args(["billing", "link"])
            .args(args)
            .arg("--data-dir")
            .arg(app.root.join("data")),
    )
}

/// SPEC section 10: a checkout that cannot apply (its customer pays for
/// another project, or its project is linked to another customer) is
/// answered 200 on every delivery, recorded (event id, an audit entry on
/// the checkout's project) and changes nothing: a project keeps the
/// customer it was first linked to. `gatehouse billing link` changes a
/// link on purpose, and takes another project's customer only with
/// `--force`, the plan the customer pays for moving with it.
#[test]
fn a_checkout_that_cannot_apply_is_recorded_and_the_first_link_holds() {
    let app = billing_app();
    let a = app.login("owner@alpha.test");
    let alpha = app.first_project(&a.access);
    let b = app.login("owner@beta.test");
    let beta = app.first_project(&b.access);
    assert_eq!(
        signed(&app, &checkout("evt_alpha", &alpha, "cus_A")).status,
        200
    );
    let pro = subscription(
        "evt_alpha_pro",
        "customer.subscription.created",
        "cus_A",
        "active",
        "price_pro_monthly",
    );
    assert_eq!(signed(&app, &pro).status, 200);
    assert_eq!(billing(&app, &a)["plan"], "pro");

    // Beta's checkout names alpha's customer: 200 on the first delivery
    // and on Stripe's retry, and nothing moves.
    let taken = checkout("evt_beta", &beta, "cus_A");
    let res = signed(&app, &taken);
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json(), json!({"received": true, "duplicate": false}));
    let res = signed(&app, &taken);
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json(), json!({"received": true, "duplicate": true}));
    assert_eq!(
        app.query_i64("SELECT count(*) FROM stripe_events WHERE id = 'evt_beta'"),
        1
    );
    assert!(linked(&app, &alpha, Some("cus_A")) && linked(&app, &beta, None));
    assert_eq!(billing(&app, &b)["plan"], "free");
    assert_eq!(billing(&app, &a)["plan"], "pro");
    let ignored = audit_entries(&app, &b, "billing.stripe_event_ignored");
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(ignored[0]["actor"]["type"], "system");
    assert_eq!(ignored[0]["target"], beta.as_str());
    assert_eq!(
        ignored[0]["details"],
        json!({ "event_type": "checkout.session.completed", "customer": "cus_A",
                "reason": "customer_linked_to_another_project", "stripe_event": "evt_beta" })
    );
    assert!(
        !ignored[0].to_string().contains(&alpha),
        "beta is not told which project pays with cus_A"
    );

    // A second checkout for alpha does not replace its customer; the other
    // customer's events do not reach alpha.
    assert_eq!(
        signed(&app, &checkout("evt_alpha_again", &alpha, "cus_Z")).status,
        200
    );
    assert!(linked(&app, &alpha, Some("cus_A")));
    let ignored = audit_entries(&app, &a, "billing.stripe_event_ignored");
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(
        ignored[0]["details"]["reason"],
        "project_linked_to_another_customer"
    );
    assert_eq!(ignored[0]["details"]["linked_customer"], "cus_A");
    let z_cancels = subscription(
        "evt_z_cancel",
        "customer.subscription.deleted",
        "cus_Z",
        "canceled",
        "price_pro_monthly",
    );
    assert_eq!(signed(&app, &z_cancels).status, 200);
    assert_eq!(billing(&app, &a)["plan"], "pro");
    assert_eq!(audit_entries(&app, &a, "billing.customer_linked").len(), 1);

    // By hand: alpha's customer is not taken without --force.
    let out = billing_cli(&app, &[&beta, "cus_A"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cus_A is linked to project {alpha}"))
            && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert!(linked(&app, &alpha, Some("cus_A")) && linked(&app, &beta, None));
    assert!(audit_entries(&app, &b, "billing.customer_linked").is_empty());

    // With --force the customer moves, its plan with it; alpha is left
    // without a customer, on the default plan.
    let out = billing_cli(&app, &[&beta, "cus_A", "--force"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Linked Stripe customer cus_A to project")
            && out
                .stdout
                .contains(&format!("Project {alpha} no longer has")),
        "{}",
        out.stdout
    );
    assert!(linked(&app, &beta, Some("cus_A")) && linked(&app, &alpha, None));
    assert_eq!(billing(&app, &b)["plan"], "pro");
    assert_eq!(billing(&app, &a)["plan"], "free");
    let moved = audit_entries(&app, &b, "billing.customer_linked");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["actor"]["type"], "system");
    assert_eq!(
        moved[0]["details"],
        json!({ "customer": "cus_A", "source": "gatehouse billing link" })
    );
    let left = audit_entries(&app, &a, "billing.customer_unlinked");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0]["details"],
        json!({ "customer": "cus_A", "moved_to": beta, "source": "gatehouse billing link" })
    );
    assert_eq!(audit_entries(&app, &a, "billing.plan_changed").len(), 2);
    assert_eq!(audit_entries(&app, &b, "billing.plan_changed").len(), 1);

    // Stripe's events for cus_A now reach beta only.
    let cancel = subscription(
        "evt_a_cancel",
        "customer.subscription.deleted",
        "cus_A",
        "canceled",
        "price_pro_monthly",
    );
    assert_eq!(signed(&app, &cancel).status, 200);
    assert_eq!(billing(&app, &b)["plan"], "free");
    assert_eq!(audit_entries(&app, &a, "billing.plan_changed").len(), 2);

    // Replacing a project's own customer by hand needs no --force, and a
    // subscription reported for the new customer applies with the link.
    let z_pro = subscription(
        "evt_z_pro",
        "customer.subscription.created",
        "cus_Z",
        "active",
        "price_pro_monthly",
    );
    assert_eq!(signed(&app, &z_pro).status, 200);
    let out = billing_cli(&app, &[&beta, "cus_Z"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("It replaces cus_A"), "{}", out.stdout);
    assert!(linked(&app, &beta, Some("cus_Z")));
    assert_eq!(billing(&app, &b)["plan"], "pro");
    let out = billing_cli(&app, &[&beta, "cus_Z"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("already"), "{}", out.stdout);
    for (args, why) in [
        (vec!["prj_nobody", "cus_Z"], "prj_nobody"),
        (vec![beta.as_str(), "sub_123"], "not a Stripe customer id"),
    ] {
        let out = billing_cli(&app, &args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
    assert!(linked(&app, &beta, Some("cus_Z")));
}
