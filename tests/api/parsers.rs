//! Parsers of untrusted text, as property tests from outside: the request
//! id rule, CIDR input (`trusted_proxies`, `allowed_ips`), and through a
//! live server the query and body values that reach arithmetic (page and
//! limit, verify's `cost` and `ip`, usage `from`/`to`). Properties: never a
//! panic or a 5xx; exactly what the rule says is accepted; round trips.
//! The other parsers have theirs beside them (`keys::format`,
//! `auth::redirect`, `billing`, `http::client`, `keys::input`,
//! `webhooks`, `http::host`).

use gatehouse::config::Cidr;
use gatehouse::http::is_valid_request_id;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::helpers::{send, send_body, spawn_app, TestApp, Tokens};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

proptest! {
    #[test]
    fn request_ids_are_exactly_1_to_128_safe_characters(id in "\\PC{0,130}|[A-Za-z0-9._-]{0,130}") {
        let expected = (1..=128).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        prop_assert_eq!(is_valid_request_id(&id), expected);
    }

    #[test]
    fn cidr_input_is_exactly_an_address_or_a_network(raw in "\\PC{0,24}|[0-9a-f:./ ]{1,30}") {
        let trimmed = raw.trim();
        let expected = trimmed.parse::<ipnet::IpNet>().is_ok() || trimmed.parse::<std::net::IpAddr>().is_ok();
        match raw.parse::<Cidr>() {
            Ok(net) => {
                prop_assert!(expected);
                // The network written out parses to itself.
                let text = String::from(net);
                prop_assert_eq!(text.parse::<Cidr>().unwrap(), net);
                // An address is the network of just itself.
                if let Ok(ip) = trimmed.parse::<std::net::IpAddr>() {
                    prop_assert!(net.contains(&ip));
                    prop_assert_eq!(net.0.prefix_len(), net.0.max_prefix_len());
                }
            }
            Err(why) => {
                prop_assert!(!expected);
                prop_assert!(why.contains("is not an IP address or CIDR network"));
            }
        }
    }

    #[test]
    fn trusted_proxies_in_the_config_use_the_same_rule(a: u32, len in 0u8..=32) {
        let net = format!("{}/{len}", std::net::Ipv4Addr::from(a));
        let v: Vec<Cidr> = serde_json::from_value(json!([net, "::1", " 10.0.0.0/8 "])).unwrap();
        prop_assert!(v[0].contains(&std::net::Ipv4Addr::from(a).into()));
        prop_assert!(serde_json::from_value::<Vec<Cidr>>(json!(["10.0.0.0/33"])).is_err());
    }
}

#[test]
fn a_clients_request_id_is_echoed_exactly_when_it_follows_the_rule() {
    let app = spawn_app();
    runner(64)
        .run(&"[!-~]{0,140}", |id| {
            let res = send(app.request("GET", "/healthz").set("X-Request-Id", &id));
            prop_assert_eq!(res.status, 200);
            let echoed = res.header("x-request-id").unwrap();
            if is_valid_request_id(&id) {
                prop_assert_eq!(echoed, id.as_str());
            } else {
                prop_assert!(
                    echoed.starts_with("req_") && echoed.len() == 24,
                    "{}",
                    echoed
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The message of a 422 `validation_error` (which names the field first).
fn field_error(res: &crate::helpers::Resp) -> String {
    let body = res.assert_error(422, "validation_error");
    body["error"]["message"].as_str().unwrap().to_string()
}

/// A value for a numeric query parameter or body field: numbers of any
/// size and sign, and text.
fn number_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..200).prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_string()),
        "[0-9a-z.+-]{0,8}",
    ]
}

#[test]
fn page_and_limit_are_validated_for_any_value() {
    let app = spawn_app();
    let t = app.login("pages@acme.test");
    runner(64)
        .run(
            &(number_like(), number_like(), any::<bool>()),
            |(page, limit, keys)| {
                let route = if keys { "api-keys" } else { "audit-log" };
                let path = format!(
                    "/api/v1/{route}?page={}&limit={}",
                    encode(&page),
                    encode(&limit)
                );
                let res = send(app.authed("GET", &path, &t.access));
                let page_ok = page
                    .parse::<i64>()
                    .is_ok_and(|p| (1..=1_000_000).contains(&p));
                let limit_ok = limit.parse::<i64>().is_ok_and(|l| (1..=100).contains(&l));
                if page_ok && limit_ok {
                    prop_assert_eq!(res.status, 200, "{}", res.body);
                    let p = res.json()["pagination"].clone();
                    prop_assert_eq!(
                        p["page"].to_string(),
                        page.parse::<i64>().unwrap().to_string()
                    );
                } else {
                    let message = field_error(&res);
                    prop_assert!(
                        message.contains("page") || message.contains("limit"),
                        "{}",
                        message
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

fn key_for(app: &TestApp, t: &Tokens) -> String {
    crate::keys::create_key(app, t, json!({ "name": "props" })).1
}

#[test]
fn verify_cost_and_ip_are_validated_for_any_value() {
    let app = spawn_app();
    let t = app.login("verify-props@acme.test");
    let key = key_for(&app, &t);
    let ip_text = prop_oneof![
        any::<std::net::IpAddr>().prop_map(|ip| ip.to_string()),
        "[0-9a-f:.%/ \\[\\]]{0,20}",
        "\\PC{0,12}",
    ];
    runner(48)
        .run(&(any::<i64>(), 0i64..3, ip_text), |(cost, small, ip)| {
            for cost in [cost, small] {
                let res = app.post_json(
                    "/api/v1/keys/verify",
                    json!({ "key": key, "cost": cost, "ip": ip }),
                );
                let ip_ok = ip.trim().parse::<std::net::IpAddr>().is_ok();
                if (0..=1_000_000).contains(&cost) && ip_ok {
                    prop_assert_eq!(res.status, 200, "{}", res.body);
                    prop_assert!(res.json()["valid"].is_boolean());
                } else {
                    let message = field_error(&res);
                    prop_assert!(
                        message.starts_with("cost") || message.starts_with("ip"),
                        "{}",
                        message
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    // Out of the integer range altogether: a malformed body.
    let res = send_body(
        app.request("POST", "/api/v1/keys/verify")
            .set("Content-Type", "application/json"),
        &format!(r#"{{"key": "{key}", "cost": 99999999999999999999999}}"#),
    );
    res.assert_error(422, "validation_error");
}

#[test]
fn usage_ranges_are_validated_for_any_value() {
    let app = spawn_app();
    let t = app.login("usage-props@acme.test");
    let time_text = prop_oneof![
        "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](Z|[+-][01][0-9]:[0-5][0-9])",
        Just("0000-01-01T00:00:00Z".to_string()),
        Just("9999-12-31T23:59:59Z".to_string()),
        Just("9999-12-31T23:59:59-23:59".to_string()),
        "\\PC{0,16}",
    ];
    runner(48)
        .run(
            &(time_text.clone(), time_text, any::<bool>()),
            |(from, to, daily)| {
                let granularity = if daily { "day" } else { "hour" };
                let path = format!(
                    "/api/v1/usage?from={}&to={}&granularity={granularity}",
                    encode(&from),
                    encode(&to)
                );
                let res = send(app.authed("GET", &path, &t.access));
                prop_assert!(
                    res.status == 200 || res.status == 422,
                    "{} {}",
                    res.status,
                    res.body
                );
                if res.status == 422 {
                    let message = field_error(&res);
                    prop_assert!(
                        message.starts_with("from") || message.starts_with("to"),
                        "{}",
                        message
                    );
                } else {
                    let series = res.json()["series"].as_array().unwrap().len();
                    prop_assert!(series <= 10_001);
                }
                Ok(())
            },
        )
        .unwrap();
}
