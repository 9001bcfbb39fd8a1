//! Forward-auth through real reverse proxies started on loopback: nginx
//! (`auth_request`, with deploy/nginx-gatehouse.conf) and Caddy
//! (`forward_auth` written out, with deploy/Caddyfile). Skipped when the
//! program is missing, unless GATEHOUSE_REQUIRE_E2E is set (as in CI).
//! Each proxy runs in a process group of its own, stopped whole.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    e2e_available, free_port, group_dies_with_the_test, send, spawn_app_with, TestApp,
};
use crate::keys::create_key;

pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    e2e_available(found.is_some(), name)
        .then_some(found)
        .flatten()
}

pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
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

pub(crate) struct Proxy {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) _dir: tempfile::TempDir,
}

/// Signals a whole process group (`kill -SIG -PGID`).
fn signal_group(pgid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops a proxy and everything it started: SIGTERM to its process group
/// (whose leader, the shell of [`group_dies_with_the_test`], then kills the
/// group), SIGKILL to whatever is left.
fn stop_group(child: &mut Child) {
    let pgid = child.id();
    signal_group(pgid, "-TERM");
    let _ = child.wait();
    signal_group(pgid, "-KILL");
    // The workers were the master's children: once killed they are reaped
    // by another parent, maybe later; wait until none of them runs.
    let gone = Instant::now() + Duration::from_secs(10);
    while !group_members(pgid).is_empty() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

impl Proxy {
    pub(crate) fn request(&self, method: &str, path: &str) -> ureq::Request {
        crate::helpers::agent().request(method, &format!("http://127.0.0.1:{}{path}", self.port))
    }
}

pub(crate) fn nginx(gatehouse_port: u16) -> Option<Proxy> {
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
    // The protected service: shows what it was told about the key.
    let service = format!(
        r#"server {{
        listen 127.0.0.1:{upstream};
        location / {{
            default_type text/plain;
            return 200 "key=$http_x_gatehouse_key_id scopes=$http_x_gatehouse_scopes uri=$uri";
        }}
    }}"#
    );
    Some(start_nginx(
        bin,
        dir,
        port,
        &format!("{snippet}\n    {service}"),
    ))
}

/// Runs nginx from `dir` with `http` as the body of its `http {}` block
/// (temporary paths under `dir`), and waits until it listens on `port`.
pub(crate) fn start_nginx(bin: PathBuf, dir: tempfile::TempDir, port: u16, http: &str) -> Proxy {
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
    {http}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut child = group_dies_with_the_test(&bin)
        .arg("-p")
        .arg(dir.path())
        .args(["-c", "nginx.conf", "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    wait_for_port(port, &mut child, "nginx", &dir.path().join("error.log"));
    Proxy {
        child,
        port,
        _dir: dir,
    }
}

pub(crate) fn caddy(gatehouse_port: u16) -> Option<Proxy> {
    let bin = find_program("caddy")?;
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = (free_port(), free_port());
    let documented =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile"))
            .unwrap()
            .replace("api.acme.test {", &format!("http://127.0.0.1:{port} {{"))
            .replace(
                "reverse_proxy 127.0.0.1:8080",
                &format!("reverse_proxy 127.0.0.1:{gatehouse_port}"),
            )
            .replace(
                "reverse_proxy 127.0.0.1:3000",
                &format!("reverse_proxy 127.0.0.1:{upstream}"),
            );
    assert!(
        documented.contains(&format!("reverse_proxy 127.0.0.1:{gatehouse_port}"))
            && documented.contains(&format!("reverse_proxy 127.0.0.1:{upstream}")),
        "the documented config has the expected shape"
    );
    let conf = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n{documented}\nhttp://127.0.0.1:{upstream} {{\n\trespond \"key={{http.request.header.X-Gatehouse-Key-Id}} scopes={{http.request.header.X-Gatehouse-Scopes}} uri={{http.request.uri.path}}\"\n}}\n"
    );
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, conf).unwrap();
    let log = dir.path().join("caddy.log");
    let mut child = group_dies_with_the_test(&bin)
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
    gatehouse_for_proxies_with(|_| {})
}

/// Gatehouse with the rule `/orders` -> `orders:write`, and `customize`.
pub(crate) fn gatehouse_for_proxies_with(
    customize: impl FnOnce(&mut gatehouse::config::Config),
) -> TestApp {
    spawn_app_with(|c| {
        c.scopes.push(gatehouse::config::ScopeConfig {
            name: "orders:write".into(),
            description: String::new(),
        });
        c.routes.push(gatehouse::config::RouteRule {
            path_prefix: "/orders".into(),
            scope: "orders:write".into(),
        });
        customize(c);
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
    assert!(
        res.body
            .starts_with(&format!("key={good_id} scopes=orders:write ")),
        "{}",
        res.body
    );
    // The key's rate-limit state reaches the client on an allowed request too.
    assert!(
        res.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"default\";r=")),
        "{:?}",
        res.headers
    );
    assert_eq!(
        res.header("ratelimit-policy"),
        Some("\"default\";q=100;w=60")
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
    assert_eq!(
        res.json()["error"]["code"],
        "missing_authorization",
        "{}",
        res.body
    );
    assert!(!res.body.contains("key_forged"));
    let mut bad = good.clone().into_bytes();
    bad[12] = if bad[12] == b'A' { b'B' } else { b'A' };
    let res = send(
        proxy
            .request("GET", "/orders/7")
            .set("X-API-Key", std::str::from_utf8(&bad).unwrap()),
    );
    assert_eq!(res.status, 401, "{}", res.body);
    assert_eq!(res.json()["error"]["code"], "malformed_key", "{}", res.body);

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
    let res = send(proxy.request("GET", "/orders").set("X-API-Key", &reader));
    assert_eq!(res.status, 403, "{}", res.body);
    assert_eq!(
        res.json()["error"]["code"],
        "insufficient_scope",
        "{}",
        res.body
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
    assert_eq!(res.json()["error"]["code"], "rate_limited", "{}", res.body);
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

/// One request written by hand, so the request target reaches the proxy
/// exactly as spelled (HTTP clients normalise dot segments and escapes).
/// Returns the status and the whole response text.
fn raw_request(port: u16, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {target:?}: {text:?}"));
    (status, text)
}

/// The error code in an answer, or `ok`.
fn outcome(status: u16, text: &str) -> String {
    if status == 200 {
        return "ok".into();
    }
    let code = text
        .split("\"code\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("");
    format!("{status} {code}")
}

/// How generously any upstream could read a path: every escape decoded,
/// path parameters (`;...` in a segment) stripped as Java servlet
/// containers strip them (so `..;` is `..`), dot segments resolved, slashes
/// merged, ASCII case folded. If this reading is under `/orders`, the path
/// must have needed `orders:write`.
fn could_be_orders(served: &str) -> bool {
    let bytes = served.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&served[i + 1..i + 3], 16) {
                decoded.push(v);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for s in decoded.split(['/', '\\']) {
        let s = s.split(';').next().unwrap_or("");
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.first().is_some_and(|s| *s == "orders")
}

/// Spellings of `/orders` (needs `orders:write`) and of other paths.
const SPELLINGS: &[&str] = &[
    "/orders",
    "/orders/",
    "/orders/7",
    "/Orders/7",
    "/ORDERS",
    "//orders",
    "///orders/7",
    "/./orders",
    "/x/../orders",
    "/public/../orders/7",
    "/%6Frders",
    "/%6frders/7",
    "/%2e/orders",
    "/x/%2e%2e/orders",
    "/x/%2E%2E/orders/7",
    "/orders%2F7",
    "/%2Forders",
    "/x/..%2Forders",
    "/x/..%5Corders",
    "/%2e%2e/orders",
    "/../orders",
    "/orders?x=/public",
    "/orders#public",
    "/orders;x",
    "/;x/orders",
    "/;/orders",
    "/.;/orders",
    "/..;/orders",
    "/x/..;/orders",
    "/public/..;/orders",
    "/public/..;jsessionid=1/orders/7",
    "/orders%3Bx",
    "/x/..%3B/orders",
    "/orders%00",
    "/orders%20",
    "/public",
    "/public/7",
];

/// No spelling of a protected path reaches the upstream under a weaker
/// rule: a key without `orders:write` is refused wherever the upstream
/// would serve something under `/orders`.
fn no_spelling_passes(app: &TestApp, proxy: &Proxy) {
    let t = app.login("spell@acme.test");
    let (_, reader) = create_key(
        app,
        &t,
        json!({ "name": "reader", "rate_limit": {"limit": 10000, "window_secs": 60} }),
    );
    let (_, writer) = create_key(
        app,
        &t,
        json!({ "name": "writer", "scopes": ["orders:write"], "rate_limit": {"limit": 10000, "window_secs": 60} }),
    );
    let mut served = Vec::new();
    for target in SPELLINGS {
        let (status, text) = raw_request(proxy.port, "GET", target, &[("X-API-Key", &reader)]);
        if status == 200 {
            let uri = text.rsplit("uri=").next().unwrap_or("").to_string();
            assert!(
                !could_be_orders(&uri),
                "{target:?} reached the upstream as {uri:?} without orders:write"
            );
            served.push(*target);
        } else {
            assert!(
                [400, 401, 403, 404].contains(&status),
                "{target:?}: {status} {text}"
            );
        }
        // The key with the scope is never refused for a path the proxy passes.
        let (status, text) = raw_request(proxy.port, "GET", target, &[("X-API-Key", &writer)]);
        assert!(
            status != 401 && status != 429,
            "{target:?}: {status} {text}"
        );
    }
    for target in [
        "/orders",
        "/ORDERS",
        "//orders",
        "/%6Frders",
        "/x/../orders",
        "/orders;x",
        "/;x/orders",
        "/;/orders",
        "/.;/orders",
        "/..;/orders",
        "/x/..;/orders",
    ] {
        assert!(!served.contains(&target), "{target} was served: {served:?}");
    }
    assert!(served.contains(&"/public"), "{served:?}");
}

/// A client's own forwarding headers change nothing: every request gets
/// what it would get without them.
fn spoofed_headers_change_nothing(app: &TestApp, proxy: &Proxy) {
    let t = app.login("spoof@acme.test");
    let limit = json!({"limit": 10000, "window_secs": 60});
    let (_, publishable) = create_key(
        app,
        &t,
        json!({ "name": "pk", "type": "publishable", "scopes": ["orders:write"], "rate_limit": limit }),
    );
    let (_, reader) = create_key(app, &t, json!({ "name": "reader", "rate_limit": limit }));
    let (_, writer) = create_key(
        app,
        &t,
        json!({ "name": "writer", "scopes": ["orders:write"], "rate_limit": limit }),
    );
    let spoofs: &[&[(&str, &str)]] = &[
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/public"),
        ],
        &[("X-Original-Method", "GET"), ("X-Original-URI", "/public")],
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/public"),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/public"),
        ],
        &[
            ("X-Forwarded-Method", "POST"),
            ("X-Forwarded-Uri", "/orders"),
            ("X-Original-Method", "DELETE"),
            ("X-Original-URI", "/elsewhere"),
        ],
        &[("X-Original-URI", "/%2e%2e/x")],
    ];
    let mut refused = 0;
    for key in [&publishable, &reader, &writer] {
        for (method, target) in [
            ("POST", "/orders"),
            ("GET", "/orders/7"),
            ("DELETE", "/public"),
        ] {
            let plain = raw_request(proxy.port, method, target, &[("X-API-Key", key)]);
            let plain = outcome(plain.0, &plain.1);
            if plain != "ok" {
                refused += 1;
            }
            for spoof in spoofs {
                let mut headers = vec![("X-API-Key", key.as_str())];
                headers.extend_from_slice(spoof);
                let (status, text) = raw_request(proxy.port, method, target, &headers);
                assert_eq!(
                    outcome(status, &text),
                    plain,
                    "{method} {target} with {spoof:?}: {text}"
                );
            }
        }
    }
    // The matrix holds refusals to defend: a publishable key's POST and
    // DELETE, the reader on /orders.
    assert!(refused >= 4, "{refused}");
}

#[test]
fn forward_auth_through_nginx_cannot_be_talked_round() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = nginx(port) else { return };
    spoofed_headers_change_nothing(&app, &proxy);
    no_spelling_passes(&app, &proxy);
}

#[test]
fn forward_auth_through_caddy_cannot_be_talked_round() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = caddy(port) else { return };
    spoofed_headers_change_nothing(&app, &proxy);
    no_spelling_passes(&app, &proxy);
}

#[test]
fn a_stopped_proxy_leaves_no_process_behind() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = nginx(port) else { return };
    let pgid = proxy.child.id();
    let listening = proxy.port;
    assert!(signal_group(pgid, "-0"), "nginx runs");
    drop(proxy);
    let left = group_members(pgid);
    assert!(
        left.is_empty(),
        "processes of nginx's group are left: {left:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listening)).is_err(),
        "still listening on {listening}"
    );
}

/// The live processes of process group `pgid` (from /proc; a zombie has
/// ended and only waits for its parent to read its status).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // After the command in parentheses: state, parent, group.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, after)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// Nothing of a proxy outlives the test, however it ends: when the thread
/// that started nginx ends without stopping it (a test that panics past
/// its cleanup, a test binary that is killed), and when nginx's master is
/// killed outright (its workers are its children, not the test's).
#[test]
fn a_proxy_dies_with_the_test_whatever_ends_it() {
    let app = gatehouse_for_proxies();
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let within = Duration::from_secs(10);

    // Started on a thread that ends without stopping it (its Drop never
    // runs, as when the test binary is killed).
    let started = std::thread::spawn(move || {
        let proxy = nginx(port)?;
        let started = (proxy.child.id(), proxy.port, proxy._dir.path().to_owned());
        std::mem::forget(proxy);
        Some(started)
    })
    .join()
    .unwrap();
    let Some((pgid, listening, dir)) = started else {
        return;
    };
    crate::helpers::wait_until("nginx's group to die with its thread", within, || {
        group_members(pgid).is_empty()
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listening)).is_err(),
        "still listening on {listening}"
    );
    // What the forgotten Proxy would have cleaned: the shell's exit status
    // (this process is its parent) and the directory.
    // SAFETY: waits for one child of this process, which nothing else waits for.
    unsafe {
        libc::waitpid(pgid as libc::pid_t, std::ptr::null_mut(), 0);
    }
    let _ = std::fs::remove_dir_all(dir);

    // The master killed with SIGKILL: the workers go with it.
    let Some(mut proxy) = nginx(port) else { return };
    let pgid = proxy.child.id();
    let master = std::fs::read_to_string(proxy._dir.path().join("nginx.pid")).unwrap();
    let master: u32 = master.trim().parse().unwrap();
    let members = group_members(pgid);
    assert!(
        members.len() >= 3 && members.contains(&master),
        "the shell, the master and a worker: {members:?}"
    );
    assert!(Command::new("kill")
        .args(["-KILL", &master.to_string()])
        .status()
        .unwrap()
        .success());
    crate::helpers::wait_until("nginx's workers to die with their master", within, || {
        matches!(proxy.child.try_wait(), Ok(Some(_))) && group_members(pgid).is_empty()
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err(),
        "still listening on {}",
        proxy.port
    );
}

/// Straight to Gatehouse: a proxy whose two header families disagree, or
/// that sends no path or one that cannot be normalised, gets 403.
#[test]
fn forward_auth_refuses_reports_it_cannot_trust() {
    let app = gatehouse_for_proxies();
    let t = app.login("direct@acme.test");
    let (_, writer) = create_key(&app, &t, json!({ "name": "w", "scopes": ["orders:write"] }));
    let check = |headers: &[(&str, &str)]| {
        let mut req = app
            .request("GET", "/api/v1/auth/check")
            .set("X-API-Key", &writer);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        send(req)
    };
    assert_eq!(check(&[("X-Forwarded-Uri", "/orders/7")]).status, 200);
    assert_eq!(
        check(&[
            ("X-Forwarded-Uri", "/orders/7"),
            ("X-Original-URI", "//orders/./7?q")
        ])
        .status,
        200
    );
    for headers in [
        &[
            ("X-Forwarded-Uri", "/public"),
            ("X-Original-URI", "/orders"),
        ][..],
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Original-Method", "POST"),
            ("X-Forwarded-Uri", "/"),
        ],
        &[("X-Forwarded-Method", "GET")],
        &[],
        &[("X-Forwarded-Uri", "/orders%2F7")],
        &[("X-Forwarded-Uri", "/../orders")],
        &[("X-Forwarded-Uri", "orders")],
        &[("X-Forwarded-Method", "G;T"), ("X-Forwarded-Uri", "/")],
    ] {
        let res = check(headers);
        let body = res.assert_error(403, "forbidden");
        assert_eq!(res.header("x-gatehouse-error"), Some("forbidden"));
        assert!(res.header("ratelimit").is_none(), "{headers:?}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        let names_no_path = !headers
            .iter()
            .any(|(k, _)| *k == "X-Forwarded-Uri" || *k == "X-Original-URI");
        if names_no_path {
            // SPEC: the refusal names the headers the proxy must send.
            assert!(
                message.contains("X-Forwarded-Uri") && message.contains("X-Original-URI"),
                "{headers:?}: {message}"
            );
        }
    }
    // Path parameters are refused by default, whatever the key, naming
    // the setting that strips them instead.
    for path in PATH_PARAMETER_SPELLINGS {
        let res = check(&[("X-Forwarded-Uri", path)]);
        let body = res.assert_error(403, "forbidden");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("path parameters")
                && message.contains("forward_auth.path_parameters = \"strip\""),
            "{path}: {message}"
        );
        assert!(res.header("ratelimit").is_none(), "{path}");
    }
    for path in ["/orders%3Bx", "/x/..%3b/orders"] {
        check(&[("X-Original-URI", path)]).assert_error(403, "forbidden");
    }
    // Nothing was counted against the key by the refusals.
    let v = crate::keys::verify(&app, json!({ "key": writer }));
    assert_eq!(v["ratelimit"]["remaining"], 97, "{v}");
}

/// The spellings of `/orders` with path parameters, which servlet
/// containers read as `/orders` (or, for `/..;/orders`, above the root).
const PATH_PARAMETER_SPELLINGS: [&str; 6] = [
    "/orders;x",
    "/;x/orders",
    "/;/orders",
    "/.;/orders",
    "/..;/orders",
    "/x/..;/orders",
];

/// `forward_auth.path_parameters = "strip"`: each spelling is judged as
/// the servlet container reads it, so it needs `orders:write`.
#[test]
fn stripped_path_parameters_are_judged_as_the_path_they_spell() {
    let app = gatehouse_for_proxies_with(|c| {
        c.forward_auth.path_parameters = gatehouse::config::PathParameters::Strip;
    });
    let t = app.login("strip@acme.test");
    let (_, reader) = create_key(
        &app,
        &t,
        json!({ "name": "reader", "scopes": ["keys:read"] }),
    );
    let (writer_id, writer) = create_key(
        &app,
        &t,
        json!({ "name": "writer", "scopes": ["orders:write"] }),
    );
    let check = |key: &str, path: &str| {
        send(
            app.request("GET", "/api/v1/auth/check")
                .set("X-API-Key", key)
                .set("X-Forwarded-Uri", path),
        )
    };
    for path in PATH_PARAMETER_SPELLINGS {
        let by_reader = check(&reader, path);
        let by_writer = check(&writer, path);
        if path == "/..;/orders" {
            // `..` above the root: refused before any key is looked at.
            for res in [&by_reader, &by_writer] {
                let body = res.assert_error(403, "forbidden");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("above the root"),
                    "{body}"
                );
            }
            continue;
        }
        by_reader.assert_error(403, "insufficient_scope");
        assert_eq!(by_writer.status, 200, "{path}: {}", by_writer.body);
        assert_eq!(
            by_writer.header("x-gatehouse-key-id"),
            Some(writer_id.as_str())
        );
    }
    // Paths the rule does not cover stay open to the reader.
    assert_eq!(check(&reader, "/public;jsessionid=1").status, 200);
    assert_eq!(check(&reader, "/orders/..;/public").status, 200);
    // An encoded `;` is refused in this mode too.
    check(&writer, "/orders%3Bx").assert_error(403, "forbidden");
}

/// A YAML file as JSON, read by Python's PyYAML (`python3`, else the
/// system's `/usr/bin/python3`); `None` when neither has PyYAML.
fn yaml_as_json(path: &Path) -> Option<serde_json::Value> {
    const SCRIPT: &str =
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    ["python3", "/usr/bin/python3"].iter().find_map(|python| {
        let out = Command::new(python)
            .args(["-c", SCRIPT])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
    })
}

/// The shipped Traefik configuration, parsed, sets what nginx's and
/// Caddy's set: the check goes to the same address, Traefik sets the
/// method and path itself (never from the client's X-Forwarded-*), only
/// the key headers of the client's request reach the check (so a client's
/// own X-Original-*, traceparent and tracestate never do), and the same
/// three identity headers reach the upstream. nginx and Caddy, read as
/// text, set both header families and clear the client's trace headers.
#[test]
fn the_shipped_traefik_configuration_sets_what_nginx_and_caddy_set() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let parsed = yaml_as_json(&deploy.join("traefik-gatehouse.yml"));
    if !e2e_available(parsed.is_some(), "python3 with PyYAML") {
        return;
    }
    let doc = parsed.unwrap();
    let auth = &doc["http"]["middlewares"]["gatehouse"]["forwardAuth"];
    assert_eq!(
        auth["address"], "http://127.0.0.1:8080/api/v1/auth/check",
        "{doc}"
    );
    assert_eq!(
        auth["trustForwardHeader"], false,
        "Traefik sets X-Forwarded-Method and X-Forwarded-Uri itself"
    );
    let request: Vec<String> = auth["authRequestHeaders"]
        .as_array()
        .expect("authRequestHeaders limits what of the client's request reaches the check")
        .iter()
        .map(|h| h.as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert_eq!(request, ["authorization", "x-api-key"]);
    let identity = [
        "X-Gatehouse-Key-Id",
        "X-Gatehouse-Project-Id",
        "X-Gatehouse-Scopes",
    ];
    assert_eq!(auth["authResponseHeaders"], json!(identity));
    let router = &doc["http"]["routers"]["api"];
    assert_eq!(router["middlewares"], json!(["gatehouse"]));
    assert_eq!(
        doc["http"]["services"][router["service"].as_str().unwrap()]["loadBalancer"]["servers"][0]
            ["url"],
        "http://127.0.0.1:3000"
    );

    // nginx and Caddy: the same check address, both header families set
    // from the proxy's own variables, the client's trace headers cleared,
    // the same identity headers for the upstream.
    let code_lines = |file: &str| -> Vec<String> {
        std::fs::read_to_string(deploy.join(file))
            .unwrap()
            .lines()
            .map(|l| l.split('#').next().unwrap().trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let nginx = code_lines("nginx-gatehouse.conf");
    let caddy = code_lines("Caddyfile");
    let has = |lines: &[String], words: &[&str]| {
        lines.iter().any(|l| {
            let got: Vec<&str> = l.split_whitespace().collect();
            got.len() >= words.len() && got[..words.len()] == *words
        })
    };
    assert!(has(&nginx, &["server", "127.0.0.1:8080;"]));
    assert!(has(
        &nginx,
        &["proxy_pass", "http://gatehouse/api/v1/auth/check;"]
    ));
    assert!(has(&caddy, &["reverse_proxy", "127.0.0.1:8080", "{"]));
    assert!(has(&caddy, &["rewrite", "/api/v1/auth/check"]));
    for (header, nginx_value, caddy_value) in [
        ("X-Forwarded-Method", "$request_method;", "{method}"),
        ("X-Forwarded-Uri", "$request_uri;", "{uri}"),
        ("X-Original-Method", "$request_method;", "{method}"),
        ("X-Original-URI", "$request_uri;", "{uri}"),
        ("traceparent", "\"\";", ""),
        ("tracestate", "\"\";", ""),
    ] {
        assert!(
            has(&nginx, &["proxy_set_header", header, nginx_value]),
            "nginx sets {header} to {nginx_value}"
        );
        let caddy_words = if caddy_value.is_empty() {
            vec!["header_up".to_string(), format!("-{header}")]
        } else {
            vec![
                "header_up".to_string(),
                header.to_string(),
                caddy_value.to_string(),
            ]
        };
        let caddy_words: Vec<&str> = caddy_words.iter().map(String::as_str).collect();
        assert!(has(&caddy, &caddy_words), "Caddy: {caddy_words:?}");
        assert!(
            !request.contains(&header.to_ascii_lowercase()),
            "Traefik passes no client {header} to the check"
        );
    }
    for header in identity {
        assert!(
            has(&nginx, &["proxy_set_header", header]),
            "nginx gives the upstream {header}"
        );
        assert!(
            has(&caddy, &["request_header", header]),
            "Caddy gives the upstream {header}"
        );
    }
}
