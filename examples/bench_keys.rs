//! Real API keys in bulk for `scripts/bench.sh`'s memory run: it needs many
//! distinct keys whose plaintext is known (to verify them) and whose rows
//! are in the database (as `POST /api/v1/api-keys` would have stored them).
//!
//! ```sh
//! cargo run --release --example bench_keys -- --count 100000 --prefix gate \
//!     --project prj_... --sql keys.sql --keys keys.txt
//! ```
//!
//! Writes `--sql`, one transaction of `INSERT`s into `api_keys` for
//! `sqlite3`, and `--keys`, the plaintext keys one per line (for the wrk
//! script `scripts/bench-verify-many.lua`). Keys are generated and hashed
//! exactly as Gatehouse does it (`gatehouse::keys::ApiKey`).

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use gatehouse::keys::{ApiKey, KeyType};

struct Args {
    count: usize,
    prefix: String,
    project: String,
    sql: PathBuf,
    keys: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let (mut count, mut prefix, mut project, mut sql, mut keys) = (None, None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--count" => {
                count = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000_000).contains(n))
                        .ok_or_else(|| format!("--count {value}: expected 1 to 10000000"))?,
                )
            }
            "--prefix" => prefix = Some(value),
            "--project" => {
                if !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("--project {value}: not a project id"));
                }
                project = Some(value)
            }
            "--sql" => sql = Some(PathBuf::from(value)),
            "--keys" => keys = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        count: count.ok_or("--count is required")?,
        prefix: prefix.ok_or("--prefix is required")?,
        project: project.ok_or("--project is required")?,
        sql: sql.ok_or("--sql is required")?,
        keys: keys.ok_or("--keys is required")?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn write_files(args: &Args) -> std::io::Result<()> {
    let mut sql = BufWriter::new(std::fs::File::create(&args.sql)?);
    let mut keys = BufWriter::new(std::fs::File::create(&args.keys)?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    writeln!(sql, "BEGIN;")?;
    for n in 1..=args.count {
        let key = ApiKey::generate(&args.prefix, KeyType::Secret);
        writeln!(
            sql,
            "INSERT INTO api_keys (id, project_id, key_hash, prefix, name, type, environment, \
             scopes, metadata, created_at, updated_at) VALUES ('key_bench_{n}', '{project}', \
             X'{hash}', '{display}', 'bench key {n}', 'secret', 'production', '[\"keys:read\"]', \
             '{{\"team\":\"bench\"}}', {now}, {now});",
            project = args.project,
            hash = hex(&key.hash()),
            display = key.display_prefix(),
        )?;
        writeln!(keys, "{}", key.expose())?;
    }
    writeln!(sql, "COMMIT;")?;
    sql.flush()?;
    keys.flush()
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "bench_keys: {e}\nusage: bench_keys --count N --prefix P --project ID --sql FILE --keys FILE"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match write_files(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_keys: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
