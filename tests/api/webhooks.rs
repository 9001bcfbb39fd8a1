//! SPEC section 10: signed outgoing webhooks, checked by a receiver started
//! by the test on loopback. Signatures are verified here from the Standard
//! Webhooks definition with `ring`, not with the product's signing code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{
    query_i64_at, send, send_body, spawn_app, spawn_app_at, spawn_app_on, spawn_app_with, wait_for,
    wait_until, TestApp, Tokens,
};
use crate::keys::create_key;

#[derive(Clone, Debug)]
pub struct Received {
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver answering with `statuses` in turn (the last one repeats).
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    /// Whether answers may go out (see [`Receiver::start_held`]).
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Receiver {
    pub fn start(statuses: Vec<u16>) -> Receiver {
        Self::start_on("127.0.0.1", statuses)
    }

    /// A receiver that records each request as soon as it arrived and
    /// answers none until [`Receiver::release`].
    pub fn start_held(statuses: Vec<u16>) -> Receiver {
        Self::listen("127.0.0.1", statuses, false, String::new())
    }

    /// A receiver on the loopback address `ip` (`127.0.0.1` or `::1`).
    pub fn start_on(ip: &str, statuses: Vec<u16>) -> Receiver {
        Self::listen(ip, statuses, true, String::new())
    }

    /// A receiver that answers every request 302 to `location`.
    pub fn start_redirecting(location: &str) -> Receiver {
        Self::listen(
            "127.0.0.1",
            vec![302],
            true,
            format!("Location: {location}\r\n"),
        )
    }

    /// Lets a held receiver answer (what it holds and all that follows).
    pub fn release(&self) {
        let (open, opened) = &*self.gate;
        *open.lock().unwrap() = true;
        opened.notify_all();
    }

    /// How many requests have arrived so far.
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn listen(ip: &str, statuses: Vec<u16>, open: bool, extra: String) -> Receiver {
        let addr: std::net::IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind((addr, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match addr {
            std::net::IpAddr::V4(_) => format!("http://{addr}:{port}/hook"),
            std::net::IpAddr::V6(_) => format!("http://[{addr}]:{port}/hook"),
        };
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = got.clone();
        let gate = Arc::new((Mutex::new(open), std::sync::Condvar::new()));
        let held = gate.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let n = {
                    let mut g = record.lock().unwrap();
                    g.push(Received {
                        headers,
                        body: String::from_utf8(body).unwrap(),
                    });
                    g.len()
                };
                let status = statuses
                    .get(n - 1)
                    .or(statuses.last())
                    .copied()
                    .unwrap_or(200);
                let (open, opened) = &*held;
                drop(
                    opened
                        .wait_while(open.lock().unwrap(), |open| !*open)
                        .unwrap(),
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, got, gate }
    }

    /// Everything received, once there are at least `n` requests.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        wait_for(&format!("{n} deliveries"), within, || {
            let got = self.got.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
    }
}

/// Standard Webhooks: base64(HMAC-SHA256(base64decode(secret without whsec_), "{id}.{ts}.{body}")).
fn assert_signed(r: &Received, secret: &str) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!((24..=64).contains(&key.len()));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        format!("{id}.{ts}.{}", r.body).as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    let sigs = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        sigs.split(' ').any(|s| s == expected),
        "{sigs} vs {expected}"
    );
    let ts: i64 = ts.parse().unwrap();
    assert!((gatehouse::clock::Clock::system().now() - ts).abs() < 60);
}

pub fn add_webhook(app: &TestApp, t: &Tokens, url: &str, events: &[&str]) -> (String, String) {
    let res = send_body(
        app.authed("POST", "/api/v1/webhooks", &t.access)
            .set("Content-Type", "application/json"),
        &json!({ "url": url, "events": events }).to_string(),
    );
    assert_eq!(res.status, 201, "{}", res.body);
    let v = res.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

fn deliveries(app: &TestApp, t: &Tokens, id: &str) -> Value {
    let res = send(app.authed(
        "GET",
        &format!("/api/v1/webhooks/{id}/deliveries"),
        &t.access,
    ));
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()
}

#[test]
fn key_created_is_delivered_signed_and_retried_with_a_stable_id() {
    let app = spawn_app_with(|c| c.webhooks.retry_delays_secs = vec![1, 1, 1]);
    let t = app.login("hooks@acme.test");
    let receiver = Receiver::start(vec![500, 500, 200]);
    let (hook_id, secret) = add_webhook(&app, &t, &receiver.url, &["key.created", "key.revoked"]);
    assert!(secret.starts_with("whsec_"));
    let listed = send(app.authed("GET", "/api/v1/webhooks", &t.access));
    assert!(!listed.body.contains(&secret), "the secret is shown once");

    let (key_id, _) = create_key(&app, &t, json!({ "name": "hooked" }));
    let got = receiver.wait_for(3, Duration::from_secs(20));
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same webhook-id on every retry: {ids:?}"
    );
    for r in &got {
        assert_signed(r, &secret);
        let payload: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(payload["type"], "key.created");
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(payload["data"]["id"], key_id.as_str());
        assert_eq!(payload["data"]["name"], "hooked");
        assert!(payload["data"].get("plaintext_key").is_none());
    }
    // The deliveries list shows the three attempts.
    let list = wait_for(
        "the delivery recorded as delivered",
        Duration::from_secs(10),
        || {
            let list = deliveries(&app, &t, &hook_id);
            (list["items"][0]["status"] == "delivered").then_some(list)
        },
    );
    let attempts = list["items"][0]["attempts"].as_array().unwrap();
    let statuses: Vec<u64> = attempts
        .iter()
        .map(|a| a["response_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(list["items"][0]["webhook_id"], ids[0]);
    assert_eq!(list["items"][0]["event_type"], "key.created");

    // Events it did not subscribe to are not sent; subscribed ones are.
    // A delivery is queued in the transaction of the change that causes
    // it, so once the later, subscribed event has arrived the endpoint's
    // deliveries show everything ever queued for it.
    let added = send_body(
        app.authed("POST", "/api/v1/members", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"email": "x@acme.test", "role": "member"}"#,
    );
    assert_eq!(added.status, 201, "{}", added.body);
    let revoked = send(app.authed("DELETE", &format!("/api/v1/api-keys/{key_id}"), &t.access));
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let got = receiver.wait_for(4, Duration::from_secs(10));
    let last: Value = serde_json::from_str(&got[3].body).unwrap();
    assert_eq!(last["type"], "key.revoked");
    assert_eq!(last["data"]["is_active"], false);
    let queued: Vec<Value> = deliveries(&app, &t, &hook_id)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].clone())
        .collect();
    assert_eq!(
        queued,
        [json!("key.revoked"), json!("key.created")],
        "member.added was not subscribed"
    );
    assert!(
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .all(|r| !r.body.contains("member.added")),
        "member.added was not sent"
    );
}

#[test]
fn gone_disables_the_endpoint_and_failures_stop_after_the_schedule() {
    let app = spawn_app_with(|c| c.webhooks.retry_delays_secs = vec![1]);
    let t = app.login("gone@acme.test");
    let gone = Receiver::start(vec![410]);
    let (gone_id, _) = add_webhook(&app, &t, &gone.url, &["key.created"]);
    let failing = Receiver::start(vec![503]);
    let (failing_id, _) = add_webhook(&app, &t, &failing.url, &["key.created"]);
    create_key(&app, &t, json!({ "name": "one" }));
    gone.wait_for(1, Duration::from_secs(10));
    failing.wait_for(2, Duration::from_secs(10));
    let (g, f) = wait_for(
        "the gone endpoint disabled and the failing delivery failed",
        Duration::from_secs(10),
        || {
            let hooks = send(app.authed("GET", "/api/v1/webhooks", &t.access)).json();
            let g = hooks["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["id"] == gone_id.as_str())
                .unwrap()
                .clone();
            let f = deliveries(&app, &t, &failing_id);
            (g["is_active"] == false && f["items"][0]["status"] == "failed").then_some((g, f))
        },
    );
    assert!(g["disabled_reason"].as_str().unwrap().contains("410"));
    assert_eq!(
        f["items"][0]["attempts"].as_array().unwrap().len(),
        2,
        "one try and one retry"
    );
    create_key(&app, &t, json!({ "name": "two" }));
    // Deliveries are queued with the change that causes them: once the
    // active endpoint has its first try of "two" and nothing is pending for
    // the gone one, nothing can be sent to it any more.
    failing.wait_for(3, Duration::from_secs(10));
    wait_until(
        "nothing pending for the gone endpoint",
        Duration::from_secs(10),
        || {
            app.query_i64(&format!(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{gone_id}' AND status = 'pending'"
            )) == 0
        },
    );
    assert_eq!(gone.count(), 1, "nothing more is sent to a gone endpoint");
}

#[test]
fn a_pending_delivery_is_sent_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![500, 200]);
    // One clock for both runs of the app: the retry comes due by moving it.
    let clock = gatehouse::clock::Clock::manual();
    let retry_after = |c: &mut gatehouse::config::Config| c.webhooks.retry_delays_secs = vec![60];
    let t = {
        let app = spawn_app_on(root.path(), clock.clone(), retry_after);
        let t = app.login("restart@acme.test");
        add_webhook(&app, &t, &receiver.url, &["key.created"]);
        create_key(&app, &t, json!({ "name": "before restart" }));
        receiver.wait_for(1, Duration::from_secs(10));
        // The first attempt is on record before the node stops: a node that
        // stops between sending and recording holds its lease until it runs out.
        wait_until(
            "the first attempt recorded",
            Duration::from_secs(10),
            || app.query_i64("SELECT COUNT(*) FROM webhook_deliveries WHERE attempts = 1") == 1,
        );
        t
    }; // stopped with the retry pending
       // The retry's time (60 s and up to 10% jitter) has come.
    clock.advance(Duration::from_secs(67));
    let app = spawn_app_on(root.path(), clock, retry_after);
    let got = receiver.wait_for(2, Duration::from_secs(20));
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let _ = (app, t);
}

#[test]
fn a_graceful_stop_finishes_and_records_the_delivery_in_progress() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Arc::new(Receiver::start_held(vec![200]));
    let t = {
        let app = spawn_app_at(root.path(), |_| {});
        let t = app.login("stop@acme.test");
        add_webhook(&app, &t, &receiver.url, &["key.created"]);
        create_key(&app, &t, json!({ "name": "during a stop" }));
        // The request has arrived; it is answered once the stop has begun.
        receiver.wait_for(1, Duration::from_secs(10));
        let (state, held) = (app.state.clone(), receiver.clone());
        std::thread::spawn(move || {
            wait_until("the app to stop", Duration::from_secs(30), || {
                state.work.is_stopping()
            });
            held.release();
        });
        t
    }; // stopped gracefully while the receiver is still answering
    assert_eq!(
        query_i64_at(
            root.path(),
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND attempts = 1"
        ),
        1,
        "the attempt in progress was finished and recorded before the process stopped"
    );
    // Nothing is sent again after a restart: a change made after it is
    // delivered, and once the app has stopped (finishing any attempt in
    // progress) that is the only request added.
    let app = spawn_app_at(root.path(), |_| {});
    create_key(&app, &t, json!({ "name": "after the restart" }));
    receiver.wait_for(2, Duration::from_secs(10));
    drop(app);
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "the first delivery was not sent again");
    assert!(got[1].body.contains("after the restart"), "{}", got[1].body);
}

#[test]
fn private_targets_are_refused_outside_local_mode() {
    let app = spawn_app_with(|c| {
        c.mode = gatehouse::config::Mode::Production;
        c.smtp.host = Some("127.0.0.1".into());
        c.smtp.port = 9;
        c.dev.expose_codes = true;
    });
    let t = crate::helpers::login_directly(&app, "prod@acme.test");
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/",
        "http://[::1]/",
        "http://localhost:8080/",
        "http://localhost.:8080/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[64:ff9b::169.254.169.254]/latest/meta-data",
        "http://[64:ff9b:1::93.184.216.34]/",
        "http://[fd00:ec2::254]/",
        "http://192.0.0.170/",
        "http://198.18.0.1/",
    ] {
        let res = send_body(
            app.authed("POST", "/api/v1/webhooks", &t.access)
                .set("Content-Type", "application/json"),
            &json!({ "url": url, "events": ["key.created"] }).to_string(),
        );
        res.assert_error(422, "validation_error");
    }
    let res = send_body(
        app.authed("POST", "/api/v1/webhooks", &t.access)
            .set("Content-Type", "application/json"),
        &json!({ "url": "https://hooks.acme.test/in", "events": ["key.created", "bogus"] })
            .to_string(),
    );
    res.assert_error(422, "validation_error");
    assert_eq!(
        send_body(
            app.authed("POST", "/api/v1/webhooks", &t.access)
                .set("Content-Type", "application/json"),
            &json!({ "url": "https://hooks.acme.test/in", "events": ["key.created"] }).to_string(),
        )
        .status,
        201
    );
    let allowed = spawn_app_with(|c| {
        c.mode = gatehouse::config::Mode::Production;
        c.webhooks.allow_private_targets = true;
        c.dev.expose_codes = true;
    });
    let t = crate::helpers::login_directly(&allowed, "lab@acme.test");
    add_webhook(&allowed, &t, "http://127.0.0.1:9/x", &["key.created"]);
}

#[test]
fn webhooks_need_owner_admin_or_the_scope() {
    let app = spawn_app();
    let t = app.login("boss@acme.test");
    let (_, manager) = create_key(
        &app,
        &t,
        json!({ "name": "ci", "scopes": ["webhooks:manage"] }),
    );
    let (_, plain) = create_key(&app, &t, json!({ "name": "plain" }));
    assert_eq!(
        send(app.authed("GET", "/api/v1/webhooks", &manager)).status,
        200
    );
    send(app.authed("GET", "/api/v1/webhooks", &plain)).assert_error(403, "insufficient_scope");
    send_body(
        app.authed("POST", "/api/v1/members", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"email": "m@acme.test", "role": "member"}"#,
    );
    let member = app.login("m@acme.test");
    send(app.authed("GET", "/api/v1/webhooks", &member.access)).assert_error(403, "forbidden");
    send(app.authed("DELETE", "/api/v1/webhooks/whk_missing", &t.access))
        .assert_error(404, "not_found");

    // "Send test event" reaches only that endpoint.
    let receiver = Receiver::start(vec![200]);
    let (id, secret) = add_webhook(&app, &t, &receiver.url, &["member.removed"]);
    assert_eq!(
        send(app.authed("POST", &format!("/api/v1/webhooks/{id}/test"), &t.access)).status,
        202
    );
    let got = receiver.wait_for(1, Duration::from_secs(10));
    assert_signed(&got[0], &secret);
    assert_eq!(
        serde_json::from_str::<Value>(&got[0].body).unwrap()["type"],
        "webhook.test"
    );
    assert_eq!(
        send(app.authed("DELETE", &format!("/api/v1/webhooks/{id}"), &t.access)).status,
        200
    );
    assert_eq!(
        send(app.authed("GET", "/api/v1/webhooks", &t.access)).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// IPv6 literal targets are delivered like IPv4 ones (here with
/// `webhooks.allow_private_targets`, to a loopback receiver), and refused
/// at delivery time once private targets are no longer allowed.
#[test]
fn an_ipv6_literal_target_is_delivered_and_checked_again_at_delivery() {
    let root = tempfile::tempdir().unwrap();
    let receiver = Receiver::start_on("::1", vec![200]);
    assert!(
        receiver.url.starts_with("http://[::1]:"),
        "{}",
        receiver.url
    );
    let production = |allow: bool| {
        move |c: &mut gatehouse::config::Config| {
            c.mode = gatehouse::config::Mode::Production;
            c.webhooks.allow_private_targets = allow;
            c.webhooks.retry_delays_secs = vec![1];
            c.dev.expose_codes = true;
        }
    };
    let (t, hook_id) = {
        let app = spawn_app_at(root.path(), production(true));
        let t = crate::helpers::login_directly(&app, "six@acme.test");
        let (hook_id, secret) = add_webhook(&app, &t, &receiver.url, &["key.created"]);
        let (key_id, _) = create_key(&app, &t, json!({ "name": "over v6" }));
        let got = receiver.wait_for(1, Duration::from_secs(10));
        assert_signed(&got[0], &secret);
        let payload: Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(payload["data"]["id"], key_id.as_str());
        wait_until(
            "the delivery recorded as delivered",
            Duration::from_secs(10),
            || deliveries(&app, &t, &hook_id)["items"][0]["status"] == "delivered",
        );
        (t, hook_id)
    };
    // The same endpoint, private targets no longer allowed: nothing is sent,
    // and the attempt says why.
    let app = spawn_app_at(root.path(), production(false));
    create_key(&app, &t, json!({ "name": "refused" }));
    let attempt = wait_for("an attempt recorded", Duration::from_secs(10), || {
        let list = deliveries(&app, &t, &hook_id);
        let attempts = list["items"][0]["attempts"].clone();
        attempts
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then(|| attempts[0].clone())
    });
    assert!(attempt["response_status"].is_null(), "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("target refused") && error.contains("loopback"),
        "{error}"
    );
    // Stopped, the app has finished every attempt it began.
    drop(app);
    assert_eq!(receiver.count(), 1, "nothing more reached the receiver");
}

/// Every event type a team can subscribe to besides `key.created` and
/// `key.revoked` (tested above) is delivered, signed, with the documented
/// payload `{"type", "timestamp", "data"}`: key events carry the key's
/// metadata (`key.rotated` the new key with `rotated_from`, `key.leaked`
/// the report), member events the membership.
#[test]
fn every_event_type_is_delivered_with_its_documented_payload() {
    let app = spawn_app_with(|c| c.webhooks.retry_delays_secs = vec![1]);
    let t = app.login("events@acme.test");
    let receiver = Receiver::start(vec![200]);
    let events = [
        "key.updated",
        "key.rotated",
        "key.leaked",
        "member.added",
        "member.removed",
    ];
    let (hook_id, secret) = add_webhook(&app, &t, &receiver.url, &events);

    let (key_id, _) = create_key(&app, &t, json!({ "name": "first" }));
    let res = send_body(
        app.authed("PATCH", &format!("/api/v1/api-keys/{key_id}"), &t.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "renamed"}"#,
    );
    assert_eq!(res.status, 200, "{}", res.body);
    let res = send_body(
        app.authed(
            "POST",
            &format!("/api/v1/api-keys/{key_id}/rotate"),
            &t.access,
        )
        .set("Content-Type", "application/json"),
        r#"{"expire_previous_in_secs": 0}"#,
    );
    assert_eq!(res.status, 201, "{}", res.body);
    let rotated = res.json();
    let new_id = rotated["id"].as_str().unwrap().to_string();
    let new_key = rotated["plaintext_key"].as_str().unwrap().to_string();
    let res = app.post_json(
        "/api/v1/keys/leaked",
        json!([{ "token": new_key, "url": "https://paste.example/1", "source": "scanner" }]),
    );
    assert_eq!(res.json()[0]["result"], "revoked", "{}", res.body);
    let res = send_body(
        app.authed("POST", "/api/v1/members", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"email": "joiner@acme.test", "role": "member"}"#,
    );
    assert_eq!(res.status, 201, "{}", res.body);
    let member_id = res.json()["user"]["id"].as_str().unwrap().to_string();
    let res = send(app.authed("DELETE", &format!("/api/v1/members/{member_id}"), &t.access));
    assert_eq!(res.status, 200, "{}", res.body);

    let got = receiver.wait_for(5, Duration::from_secs(20));
    let mut by_type = std::collections::HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        assert_signed(r, &secret);
        assert!(ids.insert(r.header("webhook-id").unwrap().to_string()));
        let payload: Value = serde_json::from_str(&r.body).unwrap();
        let mut fields: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["data", "timestamp", "type"], "{payload}");
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
        let kind = payload["type"].as_str().unwrap().to_string();
        assert!(
            by_type.insert(kind.clone(), payload).is_none(),
            "{kind} delivered once"
        );
    }
    let mut types: Vec<&str> = by_type.keys().map(String::as_str).collect();
    types.sort_unstable();
    let mut expected = events.to_vec();
    expected.sort_unstable();
    assert_eq!(types, expected, "one delivery per subscribed event");

    let key_fields = [
        "id",
        "name",
        "type",
        "environment",
        "prefix",
        "scopes",
        "rate_limit",
        "is_active",
        "created_at",
        "revoked_at",
    ];
    for kind in ["key.updated", "key.rotated", "key.leaked"] {
        let data = &by_type[kind]["data"];
        for field in key_fields {
            assert!(data.get(field).is_some(), "{kind} data has {field}: {data}");
        }
        assert!(data.get("plaintext_key").is_none(), "{kind}: {data}");
        assert!(data.get("key_hash").is_none(), "{kind}: {data}");
    }
    let updated = &by_type["key.updated"]["data"];
    assert_eq!(updated["id"], key_id.as_str());
    assert_eq!(updated["name"], "renamed");
    let rotated = &by_type["key.rotated"]["data"];
    assert_eq!(rotated["id"], new_id.as_str());
    assert_eq!(rotated["name"], "renamed");
    assert_eq!(rotated["rotated_from"]["id"], key_id.as_str());
    assert!(
        rotated["rotated_from"]["revoked_at"].is_string(),
        "grace 0 revoked the previous key: {rotated}"
    );
    let leaked = &by_type["key.leaked"]["data"];
    assert_eq!(leaked["id"], new_id.as_str());
    assert_eq!(leaked["is_active"], false);
    assert_eq!(leaked["report"]["url"], "https://paste.example/1");
    assert_eq!(leaked["report"]["source"], "scanner");
    for kind in ["member.added", "member.removed"] {
        let data = &by_type[kind]["data"];
        assert_eq!(data["user"]["id"], member_id.as_str(), "{kind}: {data}");
        assert_eq!(data["user"]["email"], "joiner@acme.test", "{kind}: {data}");
        assert_eq!(data["role"], "member", "{kind}: {data}");
    }
    let listed = deliveries(&app, &t, &hook_id);
    assert_eq!(listed["items"].as_array().unwrap().len(), 5, "{listed}");
}

/// Only a 2xx counts as delivered, and redirects are not followed: an
/// endpoint that answers 302 to another receiver is tried (and retried)
/// as failing, every attempt is recorded with its 302, and the target of
/// the redirect never hears of it.
#[test]
fn a_redirect_is_not_followed_and_counts_as_a_failure() {
    let app = spawn_app_with(|c| c.webhooks.retry_delays_secs = vec![1]);
    let t = app.login("redirects@acme.test");
    let elsewhere = Receiver::start(vec![200]);
    let redirecting = Receiver::start_redirecting(&elsewhere.url);
    let (hook_id, _) = add_webhook(&app, &t, &redirecting.url, &["key.created"]);
    create_key(&app, &t, json!({ "name": "redirected" }));
    let list = wait_for(
        "the delivery recorded as failed",
        Duration::from_secs(20),
        || {
            let list = deliveries(&app, &t, &hook_id);
            (list["items"][0]["status"] == "failed").then_some(list)
        },
    );
    let statuses: Vec<Value> = list["items"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["response_status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!(302), json!(302)],
        "one try and one retry: {list}"
    );
    assert_eq!(redirecting.count(), 2);
    assert_eq!(elsewhere.count(), 0, "the redirect was not followed");
}

/// A name in the system's hosts file that resolves to loopback only and
/// is not a `localhost` name (Debian maps the machine's own name to
/// 127.0.1.1; Debian and container images name `::1` `ip6-localhost`):
/// the name and the address it stands for.
fn loopback_name_from_hosts() -> Option<(String, std::net::IpAddr)> {
    use std::net::ToSocketAddrs;
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        let ip: std::net::IpAddr = words.next()?.parse().ok()?;
        if !ip.is_loopback() {
            return None;
        }
        words
            .find(|name| {
                let lower = name.to_ascii_lowercase();
                lower != "localhost"
                    && !lower.ends_with(".localhost")
                    && !lower.starts_with("localhost.")
                    && (*name, 80)
                        .to_socket_addrs()
                        .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()))
            })
            .map(|name| (name.to_string(), ip))
    })
}

/// SSRF is checked on the address a name resolves to at delivery time,
/// not only on the URL's text: outside local mode, an endpoint whose name
/// (not a `localhost` name, so its text passes) resolves to loopback is
/// accepted when created but never connected to; the attempt records why.
/// With private targets allowed the same name is delivered to, so the
/// refusal is the rule's and not a resolver's failure.
#[test]
fn a_name_that_resolves_to_loopback_is_refused_at_delivery() {
    let found = loopback_name_from_hosts();
    if !crate::helpers::e2e_available(
        found.is_some(),
        "a non-localhost name for a loopback address in /etc/hosts",
    ) {
        return;
    }
    let (name, ip) = found.unwrap();
    let receiver = Receiver::start_on(&ip.to_string(), vec![200]);
    // The receiver's URL with the name in place of the address.
    let path = receiver.url.rsplit(':').next().unwrap();
    let url = format!("http://{name}:{path}");
    assert!(url.ends_with("/hook"), "{url}");
    let production = |allow: bool| {
        move |c: &mut gatehouse::config::Config| {
            c.mode = gatehouse::config::Mode::Production;
            c.webhooks.allow_private_targets = allow;
            c.webhooks.retry_delays_secs = vec![1];
            c.dev.expose_codes = true;
        }
    };

    let allowed = spawn_app_with(production(true));
    let t = crate::helpers::login_directly(&allowed, "lab@acme.test");
    add_webhook(&allowed, &t, &url, &["key.created"]);
    create_key(&allowed, &t, json!({ "name": "allowed" }));
    receiver.wait_for(1, Duration::from_secs(10));
    drop(allowed);

    let app = spawn_app_with(production(false));
    let t = crate::helpers::login_directly(&app, "prod@acme.test");
    let (hook_id, _) = add_webhook(&app, &t, &url, &["key.created"]);
    create_key(&app, &t, json!({ "name": "refused" }));
    let list = wait_for(
        "the delivery recorded as failed",
        Duration::from_secs(20),
        || {
            let list = deliveries(&app, &t, &hook_id);
            (list["items"][0]["status"] == "failed").then_some(list)
        },
    );
    for attempt in list["items"][0]["attempts"].as_array().unwrap() {
        assert!(attempt["response_status"].is_null(), "{attempt}");
        let error = attempt["error"].as_str().unwrap();
        assert!(
            error.contains("target refused") && error.contains("loopback"),
            "{error}"
        );
    }
    assert_eq!(receiver.count(), 1, "only the allowed app reached it");
}
