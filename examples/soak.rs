//! The load of `scripts/soak.sh`: traffic that looks like a day of use,
//! at a steady rate, against one or more running Gatehouse deployments,
//! with a table per deployment of what each minute saw.
//!
//! ```sh
//! cargo run --release --example soak -- --minutes 30 --rate 200 --keys 1000 \
//!     --target 'sqlite=http://127.0.0.1:8080=4242' \
//!     --target 'cluster=http://127.0.0.1:8443=4243,4244'
//! ```
//!
//! A target is `NAME=BASE_URL=PID[,PID...]`: where to send requests (a
//! node, or the proxy in front of several) and the processes whose
//! resident memory is sampled each minute. Each target must run in local
//! mode with `dev.expose_codes` (the load logs in through the API).
//!
//! Per target it logs in, subscribes a webhook receiver of its own (on
//! loopback) to key events, creates `--keys` keys (a twentieth of them with
//! credits), then sends `--rate` requests a second for `--minutes`:
//! mostly `POST /api/v1/keys/verify` and forward-auth over the keys, some
//! with revoked, unknown and malformed keys; usage, audit and key-list
//! reads; a few key creations, rotations and revocations (one in a
//! thousand requests each, so the set of keys the nodes cache stays about
//! the same size and RSS can be compared from minute to minute); a token
//! refresh every 30 s and a new login every 3 minutes. Each answer is checked against what it
//! must be (a live key is valid, a revoked one `invalid_key`, ...).
//!
//! Exits 1 if any answer was a 5xx or a transport error, or not what it
//! must be; if a node's RSS at the end is more than 5% above its RSS after
//! the first five minutes (the first third of shorter runs); or if a
//! minute's p99 latency is more than twice the median minute's p99.
//! Every loop is bounded: the run stops after `--minutes`, whatever the
//! servers do, and each request gives up after 10 s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight per target at most (the pacing's threads).
const THREADS: usize = 8;
/// A key revoked less than this long ago may still verify on another node
/// (SPEC section 14: within 1 s); the load checks revoked keys only after it.
const REVOCATION_SETTLES: Duration = Duration::from_secs(2);

struct Args {
    minutes: u64,
    rate: u64,
    keys: usize,
    targets: Vec<TargetArg>,
}

struct TargetArg {
    name: String,
    base: String,
    pids: Vec<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        minutes: 30,
        rate: 200,
        keys: 1000,
        targets: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{flag} {value}: expected 1 to {max}"))
        };
        match flag.as_str() {
            "--minutes" => args.minutes = number(24 * 60)?,
            "--rate" => args.rate = number(10_000)?,
            "--keys" => args.keys = number(100_000)? as usize,
            "--target" => {
                let mut parts = value.splitn(3, '=');
                let (Some(name), Some(base), Some(pids)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!(
                        "--target {value}: expected NAME=BASE_URL=PID[,PID...]"
                    ));
                };
                if !(base.starts_with("http://127.") || base.starts_with("http://[::1]")) {
                    return Err(format!("--target {value}: only loopback addresses"));
                }
                let pids = pids
                    .split(',')
                    .map(|p| {
                        p.parse::<u32>()
                            .map_err(|_| format!("--target {value}: bad pid {p}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                args.targets.push(TargetArg {
                    name: name.to_string(),
                    base: base.trim_end_matches('/').to_string(),
                    pids,
                });
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.targets.is_empty() {
        return Err("at least one --target is required".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------- HTTP

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `valid`, or the refusal's code (verify's `code`, or `error.code`).
    fn code(&self) -> String {
        let v = self.json();
        if v["valid"] == true {
            return "valid".into();
        }
        v["code"]
            .as_str()
            .or(v["error"]["code"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

fn send(req: ureq::Request, body: Option<&Value>) -> Answer {
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Answer {
            status: r.status(),
            body: r.into_string().unwrap_or_default(),
        },
        Err(e) => Answer {
            status: 0,
            body: format!("transport error: {e}"),
        },
    }
}

// ---------------------------------------------------------------- webhooks

/// A webhook receiver on loopback: answers 200 to every delivery and
/// counts them and their distinct `webhook-id`s.
struct Receiver {
    url: String,
    deliveries: Arc<AtomicU64>,
    ids: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let deliveries = Arc::new(AtomicU64::new(0));
        let ids: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let (d, i) = (deliveries.clone(), ids.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (d, i) = (d.clone(), i.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let (mut len, mut id) = (0usize, String::new());
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                } else if k.eq_ignore_ascii_case("webhook-id") {
                                    id = v.trim().to_string();
                                }
                            }
                        }
                        let mut body = vec![0; len.min(1 << 20)];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        d.fetch_add(1, Ordering::Relaxed);
                        i.lock().unwrap().insert(id);
                        if (&stream)
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Receiver {
            url,
            deliveries,
            ids,
        }
    }
}

// ---------------------------------------------------------------- the load

#[derive(Clone)]
struct LiveKey {
    id: String,
    key: String,
}

/// What the load knows of a target's keys and session.
struct World {
    live: Vec<LiveKey>,
    /// Revoked keys, with when their revocation returned.
    revoked: Vec<(String, Instant)>,
    /// Keys taken out of the live set to be rotated or revoked: a check of
    /// one that was already under way may rightly be refused.
    retired: std::collections::HashSet<String>,
    access: String,
    refresh: String,
    created: u64,
}

struct Target {
    name: String,
    base: String,
    pids: Vec<u32>,
    agent: ureq::Agent,
    world: Mutex<World>,
    receiver: Receiver,
    email: String,
    prefix: String,
    /// Well-formed keys nobody issued.
    unknown: Vec<String>,
}

#[derive(Default)]
struct Minute {
    latencies_us: Vec<u32>,
    requests: u64,
    server_errors: u64,
    unexpected: u64,
    rss_kib: Vec<u64>,
    deliveries: u64,
}

struct Record {
    minutes: Mutex<Vec<Minute>>,
    /// A few examples of what went wrong, for the report.
    examples: Mutex<Vec<String>>,
    by_op: Mutex<HashMap<&'static str, u64>>,
}

impl Record {
    fn new(minutes: u64) -> Record {
        Record {
            minutes: Mutex::new((0..minutes).map(|_| Minute::default()).collect()),
            examples: Mutex::new(vec![]),
            by_op: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, minute: usize, op: &'static str, took: Duration, answer: &Answer, ok: bool) {
        let mut minutes = self.minutes.lock().unwrap();
        let Some(m) = minutes.get_mut(minute) else {
            return;
        };
        m.requests += 1;
        m.latencies_us
            .push(took.as_micros().min(u32::MAX as u128) as u32);
        let server_error = answer.status == 0 || answer.status >= 500;
        if server_error {
            m.server_errors += 1;
        } else if !ok {
            m.unexpected += 1;
        }
        drop(minutes);
        *self.by_op.lock().unwrap().entry(op).or_default() += 1;
        if server_error || !ok {
            let mut ex = self.examples.lock().unwrap();
            if ex.len() < 20 {
                let body: String = answer.body.chars().take(300).collect();
                ex.push(format!(
                    "minute {}: {op}: {} {body}",
                    minute + 1,
                    answer.status
                ));
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

thread_local! {
    /// The pacing thread's own connection: it sends every few milliseconds,
    /// so the connection is never idle long enough for the server to close
    /// it (its keep-alive is 5 s) just as a request goes out on it.
    static POOLED: std::cell::RefCell<Option<ureq::Agent>> = const { std::cell::RefCell::new(None) };
}

fn pooled_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .redirects(0)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .build()
}

impl Target {
    /// The pacing thread's agent; elsewhere (set-up, the session thread,
    /// which sends every 30 s) a new connection per request.
    fn agent(&self) -> ureq::Agent {
        POOLED
            .with(|p| p.borrow().clone())
            .unwrap_or_else(|| self.agent.clone())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, method: &str, path: &str) -> ureq::Request {
        let access = self.world.lock().unwrap().access.clone();
        self.agent()
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {access}"))
    }

    fn login(&self) -> Result<(), String> {
        let sent = send(
            self.agent().post(&self.url("/api/v1/auth/send-code")),
            Some(&json!({ "email": self.email })),
        );
        let code = sent.json()["code"]
            .as_str()
            .ok_or_else(|| format!("send-code: {} {}", sent.status, sent.body))?
            .to_string();
        let res = send(
            self.agent().post(&self.url("/api/v1/auth/verify-code")),
            Some(&json!({ "email": self.email, "code": code })),
        );
        let v = res.json();
        let (Some(access), Some(refresh)) =
            (v["access_token"].as_str(), v["refresh_token"].as_str())
        else {
            return Err(format!("verify-code: {} {}", res.status, res.body));
        };
        let mut w = self.world.lock().unwrap();
        w.access = access.to_string();
        w.refresh = refresh.to_string();
        Ok(())
    }

    fn create_body(&self, n: u64) -> Value {
        let mut body = json!({
            "name": format!("{} {n}", self.prefix),
            "scopes": ["keys:read"],
            "metadata": { "customer": format!("cus_{}", n % 97), "plan": "team" },
        });
        if n % 20 == 0 {
            body["credits"] = json!({ "remaining": 1_000_000_000 });
        }
        body
    }

    fn setup(&self, keys: usize) -> Result<(), String> {
        self.login()?;
        let res = send(
            self.authed("POST", "/api/v1/webhooks"),
            Some(&json!({
                "url": self.receiver.url,
                "events": ["key.created", "key.updated", "key.revoked", "key.rotated"]
            })),
        );
        if res.status != 201 {
            return Err(format!("webhook endpoint: {} {}", res.status, res.body));
        }
        for _ in 0..keys {
            self.create()
                .map_err(|a| format!("creating keys: {} {}", a.status, a.body))?;
        }
        Ok(())
    }

    /// Creates a key; on success it joins the live keys.
    fn create(&self) -> Result<(), Answer> {
        let n = {
            let mut w = self.world.lock().unwrap();
            w.created += 1;
            w.created
        };
        let res = send(
            self.authed("POST", "/api/v1/api-keys"),
            Some(&self.create_body(n)),
        );
        let v = res.json();
        match (res.status, v["id"].as_str(), v["plaintext_key"].as_str()) {
            (201, Some(id), Some(key)) => {
                self.world.lock().unwrap().live.push(LiveKey {
                    id: id.to_string(),
                    key: key.to_string(),
                });
                Ok(())
            }
            _ => Err(res),
        }
    }

    fn random_live(&self) -> Option<LiveKey> {
        let w = self.world.lock().unwrap();
        (!w.live.is_empty()).then(|| w.live[fastrand::usize(..w.live.len())].clone())
    }

    /// Takes a live key out of the live set (to rotate or revoke it).
    fn take_live(&self) -> Option<LiveKey> {
        let mut w = self.world.lock().unwrap();
        // Keep a floor of live keys so the checks always have some.
        if w.live.len() <= 100 {
            return None;
        }
        let i = fastrand::usize(..w.live.len());
        let k = w.live.swap_remove(i);
        w.retired.insert(k.key.clone());
        Some(k)
    }

    /// Whether a refusal of `k` is right because it was retired while the
    /// check was under way.
    fn retired(&self, k: &LiveKey, a: &Answer) -> bool {
        a.code() == "invalid_key" && self.world.lock().unwrap().retired.contains(&k.key)
    }

    fn settled_revoked(&self) -> Option<String> {
        let w = self.world.lock().unwrap();
        let settled: Vec<&String> = w
            .revoked
            .iter()
            .filter(|(_, at)| at.elapsed() > REVOCATION_SETTLES)
            .map(|(k, _)| k)
            .collect();
        (!settled.is_empty()).then(|| settled[fastrand::usize(..settled.len())].clone())
    }

    /// One request of the mix: what it was, its answer, whether the answer
    /// is what it must be.
    fn one(&self, roll: u32) -> Option<(&'static str, Answer, bool)> {
        let verify = |key: &str| {
            send(
                self.agent().post(&self.url("/api/v1/keys/verify")),
                Some(&json!({ "key": key, "scopes": ["keys:read"] })),
            )
        };
        Some(match roll {
            0..=489 => {
                let k = self.random_live()?;
                let a = verify(&k.key);
                let ok = a.status == 200 && (a.code() == "valid" || self.retired(&k, &a));
                ("verify", a, ok)
            }
            490..=769 => {
                let k = self.random_live()?;
                let a = send(
                    self.agent()
                        .get(&self.url("/api/v1/auth/check"))
                        .set("X-API-Key", &k.key)
                        .set("X-Forwarded-Method", "GET")
                        .set("X-Forwarded-Uri", "/orders/42"),
                    None,
                );
                let ok = a.status == 200 || self.retired(&k, &a);
                ("forward-auth", a, ok)
            }
            770..=799 => {
                let key = self.settled_revoked()?;
                let a = verify(&key);
                let ok = a.status == 200 && a.code() == "invalid_key";
                ("verify revoked", a, ok)
            }
            800..=819 => {
                // A fixed set of invented keys: the node remembers them as
                // unknown, as it would a client's typo, without the set
                // growing for the whole run.
                let key = &self.unknown[fastrand::usize(..self.unknown.len())];
                let a = verify(key);
                let ok = a.status == 200 && a.code() == "invalid_key";
                ("verify unknown", a, ok)
            }
            820..=829 => {
                let a = verify("gate_sk_not-a-key");
                let ok = a.status == 200 && a.code() == "malformed_key";
                ("verify malformed", a, ok)
            }
            830..=879 => {
                let a = send(self.authed("GET", "/api/v1/usage?granularity=hour"), None);
                let ok = a.status == 200;
                ("usage", a, ok)
            }
            880..=919 => {
                let a = send(self.authed("GET", "/api/v1/audit-log?limit=20"), None);
                let ok = a.status == 200;
                ("audit", a, ok)
            }
            920..=996 => {
                let a = send(self.authed("GET", "/api/v1/api-keys?limit=20"), None);
                let ok = a.status == 200;
                ("list keys", a, ok)
            }
            997 => match self.create() {
                Ok(()) => (
                    "create",
                    Answer {
                        status: 201,
                        body: String::new(),
                    },
                    true,
                ),
                Err(a) => ("create", a, false),
            },
            998 => {
                let k = self.take_live()?;
                let a = send(
                    self.authed("POST", &format!("/api/v1/api-keys/{}/rotate", k.id)),
                    Some(&json!({ "expire_previous_in_secs": 0 })),
                );
                let v = a.json();
                let ok = match (a.status, v["id"].as_str(), v["plaintext_key"].as_str()) {
                    (201, Some(id), Some(key)) => {
                        let mut w = self.world.lock().unwrap();
                        w.live.push(LiveKey {
                            id: id.to_string(),
                            key: key.to_string(),
                        });
                        w.revoked.push((k.key, Instant::now()));
                        true
                    }
                    _ => false,
                };
                ("rotate", a, ok)
            }
            _ => {
                let k = self.take_live()?;
                let a = send(
                    self.authed("DELETE", &format!("/api/v1/api-keys/{}", k.id)),
                    None,
                );
                let ok = a.status == 200;
                if ok {
                    let mut w = self.world.lock().unwrap();
                    w.revoked.push((k.key, Instant::now()));
                    // Bounded: the oldest revoked keys are forgotten.
                    if w.revoked.len() > 5000 {
                        w.revoked.drain(..1000);
                    }
                }
                ("revoke", a, ok)
            }
        })
    }

    fn refresh(&self) -> Answer {
        let refresh = self.world.lock().unwrap().refresh.clone();
        let a = send(
            self.agent().post(&self.url("/api/v1/auth/refresh-token")),
            Some(&json!({ "refresh_token": refresh })),
        );
        let v = a.json();
        if let (200, Some(access), Some(refresh)) = (
            a.status,
            v["access_token"].as_str(),
            v["refresh_token"].as_str(),
        ) {
            let mut w = self.world.lock().unwrap();
            w.access = access.to_string();
            w.refresh = refresh.to_string();
        }
        a
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let targets: Vec<Arc<Target>> = args
        .targets
        .iter()
        .map(|t| {
            Arc::new(Target {
                name: t.name.clone(),
                base: t.base.clone(),
                pids: t.pids.clone(),
                agent: ureq::AgentBuilder::new()
                    .timeout(REQUEST_TIMEOUT)
                    .redirects(0)
                    .max_idle_connections(0)
                    .build(),
                world: Mutex::new(World {
                    live: vec![],
                    revoked: vec![],
                    retired: Default::default(),
                    access: String::new(),
                    refresh: String::new(),
                    created: 0,
                }),
                receiver: Receiver::start(),
                email: format!("soak-{}@acme.test", t.name),
                prefix: format!("soak {}", t.name),
                unknown: (0..200)
                    .map(|_| {
                        gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret)
                            .expose()
                            .to_string()
                    })
                    .collect(),
            })
        })
        .collect();
    for t in &targets {
        let started = Instant::now();
        if let Err(e) = t.setup(args.keys) {
            eprintln!("soak: setting up {}: {e}", t.name);
            return std::process::ExitCode::from(1);
        }
        println!(
            "soak: {}: logged in, webhook receiver at {}, {} keys created in {:.1} s",
            t.name,
            t.receiver.url,
            args.keys,
            started.elapsed().as_secs_f64()
        );
    }

    let total = Duration::from_secs(args.minutes * 60);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Record>> = targets
        .iter()
        .map(|_| Arc::new(Record::new(args.minutes)))
        .collect();
    println!(
        "soak: {} minute(s), {} requests/s per target, {} target(s)",
        args.minutes,
        args.rate,
        targets.len()
    );

    let mut handles = vec![];
    for (t, rec) in targets.iter().zip(&records) {
        // Open-loop pacing: request n is due at start + n / rate.
        let ticket = Arc::new(AtomicU64::new(0));
        for _ in 0..THREADS {
            let (t, rec, ticket, stop) = (t.clone(), rec.clone(), ticket.clone(), stop.clone());
            let rate = args.rate;
            handles.push(std::thread::spawn(move || loop {
                POOLED.with(|p| {
                    p.borrow_mut().get_or_insert_with(pooled_agent);
                });
                let n = ticket.fetch_add(1, Ordering::Relaxed);
                let due = start + Duration::from_nanos(n * 1_000_000_000 / rate);
                if due >= start + total || stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let sent = Instant::now();
                let minute = (sent - start).as_secs() / 60;
                if let Some((op, answer, ok)) = t.one(fastrand::u32(..1000)) {
                    rec.add(minute as usize, op, sent.elapsed(), &answer, ok);
                }
            }));
        }
        // Sessions: a refresh every 30 s, a new login every 3 minutes.
        let (t, rec, stop) = (t.clone(), rec.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while start.elapsed() + Duration::from_secs(30) < total && !stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_secs(30));
                n += 1;
                let sent = Instant::now();
                let minute = ((sent - start).as_secs() / 60) as usize;
                if n % 6 == 0 {
                    match t.login() {
                        Ok(()) => rec.add(
                            minute,
                            "login",
                            sent.elapsed(),
                            &Answer {
                                status: 200,
                                body: String::new(),
                            },
                            true,
                        ),
                        Err(e) => rec.add(
                            minute,
                            "login",
                            sent.elapsed(),
                            &Answer {
                                status: if e.contains(" 5") { 500 } else { 400 },
                                body: e,
                            },
                            false,
                        ),
                    }
                } else {
                    let a = t.refresh();
                    let ok = a.status == 200;
                    rec.add(minute, "refresh", sent.elapsed(), &a, ok);
                }
            }
        }));
    }

    // Each minute: RSS of every node and the webhook deliveries so far.
    let mut last_deliveries: Vec<u64> = vec![0; targets.len()];
    for minute in 0..args.minutes as usize {
        let end = start + Duration::from_secs((minute as u64 + 1) * 60);
        if let Some(wait) = end.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (i, (t, rec)) in targets.iter().zip(&records).enumerate() {
            let rss: Vec<u64> = t.pids.iter().map(|&p| rss_kib(p)).collect();
            let delivered = t.receiver.deliveries.load(Ordering::Relaxed);
            let mut minutes = rec.minutes.lock().unwrap();
            minutes[minute].rss_kib = rss.clone();
            minutes[minute].deliveries = delivered - last_deliveries[i];
            last_deliveries[i] = delivered;
            let m = &minutes[minute];
            eprintln!(
                "soak: {} minute {}: {} requests, {} 5xx, {} unexpected, RSS {:?} MiB",
                t.name,
                minute + 1,
                m.requests,
                m.server_errors,
                m.unexpected,
                rss.iter().map(|k| k / 1024).collect::<Vec<_>>()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }

    // ------------------------------------------------------------ report
    let mut failed = false;
    let baseline_minute = (args.minutes / 3).clamp(1, 5) as usize;
    for (t, rec) in targets.iter().zip(&records) {
        let mut minutes = rec.minutes.lock().unwrap();
        let node_names: Vec<String> = if t.pids.len() == 1 {
            vec!["RSS MiB".into()]
        } else {
            (0..t.pids.len())
                .map(|i| format!("RSS MiB node {}", i + 1))
                .collect()
        };
        println!();
        println!(
            "### {} ({} node{}, {} requests/s)",
            t.name,
            t.pids.len(),
            if t.pids.len() == 1 { "" } else { "s" },
            args.rate
        );
        println!();
        println!(
            "| minute | requests | 5xx | unexpected | p50 ms | p99 ms | webhooks | {} |",
            node_names.join(" | ")
        );
        println!(
            "|---:|---:|---:|---:|---:|---:|---:|{}",
            "---:|".repeat(node_names.len())
        );
        let mut p99s = vec![];
        let (mut requests, mut errors, mut unexpected) = (0, 0, 0);
        for (i, m) in minutes.iter_mut().enumerate() {
            m.latencies_us.sort_unstable();
            let (p50, p99) = (
                percentile(&m.latencies_us, 0.5),
                percentile(&m.latencies_us, 0.99),
            );
            p99s.push(p99);
            requests += m.requests;
            errors += m.server_errors;
            unexpected += m.unexpected;
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
                i + 1,
                m.requests,
                m.server_errors,
                m.unexpected,
                p50,
                p99,
                m.deliveries,
                m.rss_kib
                    .iter()
                    .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        println!();
        let mut ops: Vec<(&'static str, u64)> = rec
            .by_op
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        ops.sort();
        println!(
            "{}: {requests} requests ({}), {} webhook deliveries ({} distinct ids)",
            t.name,
            ops.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.receiver.deliveries.load(Ordering::Relaxed),
            t.receiver.ids.lock().unwrap().len()
        );
        let mut verdicts = vec![];
        if errors > 0 {
            verdicts.push(format!(
                "FAIL: {errors} answers were 5xx or transport errors"
            ));
        }
        if unexpected > 0 {
            verdicts.push(format!(
                "FAIL: {unexpected} answers were not what they must be"
            ));
        }
        for (n, _) in t.pids.iter().enumerate() {
            let base = minutes[baseline_minute - 1]
                .rss_kib
                .get(n)
                .copied()
                .unwrap_or(0);
            let end = minutes
                .last()
                .and_then(|m| m.rss_kib.get(n).copied())
                .unwrap_or(0);
            let growth = if base > 0 {
                (end as f64 / base as f64 - 1.0) * 100.0
            } else {
                0.0
            };
            let line = format!(
                "node {}: RSS {:.1} MiB after minute {baseline_minute}, {:.1} MiB at the end ({growth:+.1}%)",
                n + 1,
                base as f64 / 1024.0,
                end as f64 / 1024.0
            );
            if growth > 5.0 {
                verdicts.push(format!("FAIL: {line}, more than 5%"));
            } else {
                verdicts.push(format!("ok: {line}"));
            }
        }
        let median_p99 = median(&mut p99s.clone());
        let worst = p99s
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
            .map(|(i, p)| (i + 1, *p))
            .unwrap_or((0, 0.0));
        let line = format!(
            "worst minute's p99 {:.2} ms (minute {}), median minute's p99 {median_p99:.2} ms",
            worst.1, worst.0
        );
        if worst.1 > 2.0 * median_p99 {
            verdicts.push(format!("FAIL: {line}: more than twice"));
        } else {
            verdicts.push(format!("ok: {line}"));
        }
        for v in &verdicts {
            println!("{}: {v}", t.name);
            failed |= v.starts_with("FAIL");
        }
        for ex in rec.examples.lock().unwrap().iter() {
            println!("{}: example: {ex}", t.name);
        }
    }
    if failed {
        println!("\nsoak: FAILED");
        std::process::ExitCode::from(1)
    } else {
        println!("\nsoak: passed");
        std::process::ExitCode::SUCCESS
    }
}
