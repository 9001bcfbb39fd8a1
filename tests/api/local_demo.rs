//! SPEC section 6: the local demo cannot be reached from a web page. In
//! local mode the server answers only for IP literals, loopback names and
//! its `public_url` host (DNS rebinding); the mailbox, API and page, only
//! for requests made directly on this machine.

use crate::helpers::{send, spawn_app, spawn_app_with, TestApp};

fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> crate::helpers::Resp {
    let mut req = app.request("GET", path);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    send(req)
}

fn port(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn local_mode_refuses_foreign_host_names_everywhere() {
    let app = spawn_app_with(|c| c.public_url = Some("http://gate.lan:8080/".parse().unwrap()));
    let p = port(&app);
    for path in [
        "/healthz",
        "/api/v1/catalog",
        "/login",
        "/api/v1/dev/mailbox",
        "/nope",
    ] {
        for host in [
            format!("evil.test:{p}"),
            "evil.test".to_string(),
            format!("localhost.evil.test:{p}"),
            format!("gate.lan.evil.test:{p}"),
        ] {
            let res = get_with(&app, path, &[("Host", &host)]);
            let body = res.assert_error(403, "forbidden");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("localhost"),
                "{body}"
            );
            assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        }
    }
    for host in [
        format!("127.0.0.1:{p}"),
        format!("[::1]:{p}"),
        format!("10.1.2.3:{p}"),
        format!("localhost:{p}"),
        format!("demo.localhost:{p}"),
        format!("gate.lan:{p}"),
        "GATE.LAN".to_string(),
    ] {
        let res = get_with(&app, "/api/v1/catalog", &[("Host", &host)]);
        assert_eq!(res.status, 200, "{host}: {}", res.body);
    }
}

#[test]
fn other_modes_leave_the_host_to_the_proxy() {
    let app = spawn_app_with(|c| {
        c.mode = gatehouse::config::Mode::Production;
        c.smtp.host = Some("127.0.0.1".into());
    });
    let res = get_with(&app, "/healthz", &[("Host", "keys.acme.test")]);
    assert_eq!(res.status, 200, "{}", res.body);
    // Outside local mode there is no mailbox, API or page.
    get_with(&app, "/api/v1/dev/mailbox", &[("Host", "127.0.0.1")]).assert_error(404, "not_found");
    get_with(&app, "/dev/mailbox", &[("Host", "127.0.0.1")]).assert_error(404, "not_found");
}

#[test]
fn the_mailbox_answers_only_direct_loopback_requests() {
    let app = spawn_app_with(|c| c.public_url = Some("http://gate.lan:8080/".parse().unwrap()));
    app.send_code("box@acme.test");
    let p = port(&app);
    for path in ["/api/v1/dev/mailbox", "/dev/mailbox"] {
        for host in [
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ] {
            let res = get_with(&app, path, &[("Host", &host)]);
            assert_eq!(res.status, 200, "{path} {host}: {}", res.body);
        }
        // A proxy in between, whatever it says.
        for (name, value) in [
            ("Forwarded", "for=127.0.0.1"),
            ("X-Forwarded-For", "127.0.0.1"),
            ("X-Real-IP", "127.0.0.1"),
        ] {
            get_with(&app, path, &[(name, value)]).assert_error(403, "forbidden");
        }
        // Host names the server answers for, but not loopback ones.
        for host in [format!("gate.lan:{p}"), format!("10.1.2.3:{p}")] {
            get_with(&app, path, &[("Host", &host)]).assert_error(403, "forbidden");
        }
    }
    let items = app.get("/api/v1/dev/mailbox").json()["items"].clone();
    assert_eq!(items[0]["to"], "box@acme.test");
    // The page is the UI shell.
    let page = app.get("/dev/mailbox");
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
}

#[test]
fn a_trusted_proxy_does_not_open_the_mailbox() {
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    // Even a proxy that says the client is this machine.
    for ip in ["203.0.113.7", "127.0.0.1"] {
        get_with(&app, "/api/v1/dev/mailbox", &[("X-Forwarded-For", ip)])
            .assert_error(403, "forbidden");
    }
    assert_eq!(spawn_app().get("/api/v1/dev/mailbox").status, 200);
}
