//! Forward-auth through real reverse proxies started on loopback: nginx
//! (`auth_request`, with deploy/nginx-gatehouse.conf) and Caddy
//! (`forward_auth`, with deploy/Caddyfile). Skipped when the program is
//! missing, unless GATEHOUSE_REQUIRE_E2E is set (as in CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{e2e_available, free_port, send, spawn_app_with, TestApp};
use crate::keys::create_key;

fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    e2e_available(found.is_some(), name)
        .then_some(found)
        .flatten()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        crate::helpers::agent().request(method, &format!("http://127.0.0.1:{}{path}", self.port))
    }
}

fn nginx(gatehouse_port: u16) -> Option<Proxy> {
    let bin = find_program("nginx")?;
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = (free_port(), free_port());
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx-gatehouse.conf"
    ))
    .unwrap()
    .replace(
        "server 127.0.0.1:8080;",
        &format!("server 127.0.0.1:{gatehouse_port};"),
    )
    .replace("listen 8443;", &format!("listen 127.0.0.1:{port};"))
    .replace(
        "proxy_pass http://127.0.0.1:3000;",
        &format!("proxy_pass http://127.0.0.1:{upstream};"),
    );
    assert!(
        snippet.contains(&format!("127.0.0.1:{upstream}")),
        "the documented config has the expected shape"
    );
    let d = dir.path().display();
    let conf = format!(
        r#"worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {snippet}
    # The protected service: shows what it was told about the key.
    server {{
        listen 127.0.0.1:{upstream};
        location / {{
            default_type text/plain;
            return 200 "key=$http_x_gatehouse_key_id scopes=$http_x_gatehouse_scopes";
        }}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .args(["-c", "nginx.conf", "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    wait_for_port(port, &mut child, "nginx", &dir.path().join("error.log"));
    Some(Proxy {
        child,
        port,
        _dir: dir,
    })
}

fn caddy(gatehouse_port: u16) -> Option<Proxy> {
    let bin = find_program("caddy")?;
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = (free_port(), free_port());
    let documented =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile"))
            .unwrap()
            .replace("api.acme.test {", &format!("http://127.0.0.1:{port} {{"))
            .replace(
                "forward_auth 127.0.0.1:8080",
                &format!("forward_auth 127.0.0.1:{gatehouse_port}"),
            )
            .replace(
                "reverse_proxy 127.0.0.1:3000",
                &format!("reverse_proxy 127.0.0.1:{upstream}"),
            );
    let conf = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n{documented}\nhttp://127.0.0.1:{upstream} {{\n\trespond \"key={{http.request.header.X-Gatehouse-Key-Id}} scopes={{http.request.header.X-Gatehouse-Scopes}}\"\n}}\n"
    );
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, conf).unwrap();
    let log = dir.path().join("caddy.log");
    let mut child = Command::new(bin)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("caddy starts");
    wait_for_port(port, &mut child, "caddy", &log);
    Some(Proxy {
        child,
        port,
        _dir: dir,
    })
}

fn gatehouse_for_proxies() -> TestApp {
    spawn_app_with(|c| {
        c.scopes.push(gatehouse::config::ScopeConfig {
            name: "orders:write".into(),
            description: String::new(),
        });
        c.routes.push(gatehouse::config::RouteRule {
            path_prefix: "/orders".into(),
            scope: "orders:write".into(),
        });
    })
}

/// The must-show cases, through whichever proxy.
fn exercise(app: &TestApp, proxy: &Proxy) {
    let t = app.login("ops@acme.test");
    let (good_id, good) = create_key(
        app,
        &t,
        json!({ "name": "good", "scopes": ["orders:write"] }),
    );
    let (_, publishable) = create_key(
        app,
        &t,
        json!({ "name": "pk", "type": "publishable", "scopes": ["orders:write"] }),
    );
    let (_, reader) = create_key(app, &t, json!({ "name": "reader" }));
    let (_, limited) = create_key(
        app,
        &t,
        json!({ "name": "limited", "rate_limit": {"limit": 2, "window_secs": 60} }),
    );

    // A good key reaches the upstream, which learns the key id.
    let res = send(
        proxy
            .request("GET", "/orders/7?x=1")
            .set("X-API-Key", &good),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body.trim(),
        format!("key={good_id} scopes=orders:write")
    );
    let res = send(
        proxy
            .request("POST", "/orders")
            .set("Authorization", &format!("Bearer {good}")),
    );
    assert_eq!(res.status, 200, "{}", res.body);

    // No key, a forged identity header, a mistyped key: 401, upstream not reached.
    let res = send(
        proxy
            .request("GET", "/orders/7")
            .set("X-Gatehouse-Key-Id", "key_forged"),
    );
    assert_eq!(res.status, 401, "{}", res.body);
    assert!(!res.body.contains("key_forged"));
    let mut bad = good.clone().into_bytes();
    bad[12] = if bad[12] == b'A' { b'B' } else { b'A' };
    let res = send(
        proxy
            .request("GET", "/orders/7")
            .set("X-API-Key", std::str::from_utf8(&bad).unwrap()),
    );
    assert_eq!(res.status, 401);
    assert!(res.body.contains("malformed_key"), "{}", res.body);

    // A publishable key may not POST; a key without the route's scope is refused.
    let res = send(
        proxy
            .request("POST", "/orders")
            .set("X-API-Key", &publishable),
    );
    assert_eq!(res.status, 403, "{}", res.body);
    assert!(res.body.contains("insufficient_scope"), "{}", res.body);
    assert_eq!(
        send(
            proxy
                .request("GET", "/orders")
                .set("X-API-Key", &publishable)
        )
        .status,
        200
    );
    assert_eq!(
        send(proxy.request("GET", "/orders").set("X-API-Key", &reader)).status,
        403
    );

    // Over the limit: 429 with Retry-After.
    for _ in 0..2 {
        assert_eq!(
            send(proxy.request("GET", "/").set("X-API-Key", &limited)).status,
            200
        );
    }
    let res = send(proxy.request("GET", "/").set("X-API-Key", &limited));
    assert_eq!(res.status, 429, "{}", res.body);
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(res.body.contains("rate_limited"), "{}", res.body);
}

#[test]
fn forward_auth_through_nginx() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = nginx(port) else { return };
    exercise(&app, &proxy);
}

#[test]
fn forward_auth_through_caddy() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = caddy(port) else { return };
    exercise(&app, &proxy);
}
