//! The floor for `scripts/bench.sh`: the least an HTTP server can do to check
//! an API key. A bare actix-web server (no middleware, no logging, no
//! metrics) that hashes the presented key with ring's SHA-256, looks the
//! hash up in a `HashMap` and answers 200 with the key's id in a header, or
//! 401. Gatehouse's key checks are measured against it: whatever Gatehouse
//! costs above this is its own overhead.
//!
//! ```sh
//! GATEHOUSE_BENCH_KEY=... cargo run --release --example floor -- --listen 127.0.0.1:0 --workers 1
//! curl -H "X-API-Key: $GATEHOUSE_BENCH_KEY" http://127.0.0.1:PORT/check
//! ```
//!
//! The key comes from the environment so it never appears on a command line.
//! It prints `Listening on ADDR:PORT` once the socket is bound.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// What the floor knows about a key: its id, sent back like Gatehouse's
/// `X-Gatehouse-Key-Id`.
struct KeyInfo {
    id: HeaderValue,
}

type Keys = HashMap<[u8; 32], KeyInfo>;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

async fn check(req: HttpRequest, keys: web::Data<Keys>) -> HttpResponse {
    let found = req
        .headers()
        .get("x-api-key")
        .and_then(|v| keys.get(&sha256(v.as_bytes())));
    match found {
        Some(key) => {
            let mut res = HttpResponse::Ok().finish();
            res.headers_mut()
                .insert(HeaderName::from_static("x-key-id"), key.id.clone());
            res
        }
        None => HttpResponse::Unauthorized().finish(),
    }
}

struct Args {
    listen: SocketAddr,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        workers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--workers" => {
                args.workers = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| format!("--workers {value}: expected 1 to 256"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("floor: {e}\nusage: floor [--listen ADDR] [--workers N]");
            return std::process::ExitCode::from(2);
        }
    };
    let Some(key) = std::env::var("GATEHOUSE_BENCH_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    else {
        eprintln!("floor: set GATEHOUSE_BENCH_KEY to the key to accept");
        return std::process::ExitCode::from(2);
    };
    let mut keys = Keys::new();
    keys.insert(
        sha256(key.as_bytes()),
        KeyInfo {
            id: HeaderValue::from_static("key_floor"),
        },
    );
    let keys = web::Data::new(keys);

    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(keys.clone())
                .service(web::resource("/check").to(check))
        })
        .workers(args.workers)
        .listen(listener)?
        .run();
        println!("Listening on {addr}");
        let _ = std::io::stdout().flush();
        server.await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
