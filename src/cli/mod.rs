//! The command line: `gatehouse [serve|init|check-config|migrate|backup|copy-data|users|keys|billing]`.

mod billing;
mod docs;
mod keys;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::load::CliOverrides;
use crate::config::local::{
    ensure_data_dir, fill_local_secrets, read_local_secrets, LOCAL_SECRETS_FILE,
};
use crate::config::{self, ConfigSources, Finding, Mode, Report};
use crate::preflight::check;
use crate::startup::{Application, StopSignals, Stopped};
use crate::store::dir_lock::{DataDirLock, LockError};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "Self-hosted API keys and email-code login in one binary",
    long_about = "Self-hosted API keys and email-code login in one binary.\n\n\
        Without a subcommand, runs `serve`: with no configuration at all that is a \
        complete local demo on http://127.0.0.1:8080/.\n\n\
        Configuration layers, later wins: built-in defaults, the config file \
        (--config, else ./gatehouse.toml if present), GATEHOUSE_* environment \
        variables (`__` for nesting: GATEHOUSE_SMTP__HOST), command-line flags.\n\n\
        --config and --data-dir may come before or after the subcommand. Only \
        serve and migrate create a database; the commands that work on the data \
        refuse when there is none at the configured path, and check-config warns, \
        naming where serve will create it."
)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./gatehouse.toml when it exists.
    #[arg(long, global = true, value_name = "FILE", env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding gatehouse.db (overrides `data_dir`). A relative
    /// path resolves against the current directory.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `serve`'s flags, accepted without the subcommand too (and before
    /// `serve` or `check-config`).
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default). Refuses to start outside local mode when
    /// the startup checks find problems.
    ///
    /// On SQLite the server holds DATA_DIR/gatehouse.lock while it runs: a
    /// second server, `copy-data` and `migrate` on the same data directory
    /// are refused (exit status 2) until it stops; the lock goes with the
    /// process, however it ends. On PostgreSQL nothing is locked.
    Serve(ServeArgs),
    /// Write a complete configuration file with freshly generated secrets.
    Init(InitArgs),
    /// Run every startup check and print every problem; exit 0 when the
    /// configuration may serve. A database that does not exist yet is a
    /// warning naming where `serve` will create it.
    CheckConfig(CheckArgs),
    /// Apply pending database migrations and exit.
    ///
    /// On SQLite, refused (exit status 2) while a server runs on the data
    /// directory: stop it first (serve also migrates when it starts).
    Migrate,
    /// Write an online, consistent copy of the database (safe while serving).
    Backup(BackupArgs),
    /// Copy a stopped SQLite deployment (the data directory's gatehouse.db)
    /// into an empty PostgreSQL database, then compare row counts.
    CopyData(CopyDataArgs),
    /// Manage users (bootstrap for invite-only deployments).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API keys from the host (create, list, revoke, import).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Change which Stripe customer pays for a project (link).
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the manual page gatehouse(1), or write every page into a directory.
    Man(docs::ManArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Stop Gatehouse first: while a server runs on the data directory (it holds \
    DATA_DIR/gatehouse.lock) the copy is refused with exit status 2 and the target is not \
    touched, since what the server writes during or after the copy would not be in \
    PostgreSQL. The copy holds that lock itself while it runs, and SQLite's write lock, so \
    a database another process is writing is refused too. The target must be empty (a fresh database, or one \
    with only Gatehouse's schema); it is migrated to the current schema and filled in one \
    transaction, so a failed copy leaves it as it was. Keys, sessions, users, usage, audit \
    log, webhooks and plans keep their ids and hashes: every key still verifies and every \
    session still refreshes. Then set database.url to the same URL on every node."
)]
struct CopyDataArgs {
    /// The PostgreSQL database to fill: postgres://USER:PASSWORD@HOST:PORT/DBNAME
    /// (libpq URL parameters such as sslmode honoured).
    #[arg(long, value_name = "URL")]
    to: String,
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Create a user (if needed) and optionally add them to a project,
    /// creating the project when no project has that name.
    Add(UsersAddArgs),
}

#[derive(Args, Debug)]
struct UsersAddArgs {
    /// The user's email address.
    #[arg(long)]
    email: String,
    /// Project name; created (with this user as owner by default) if absent.
    #[arg(long, value_name = "NAME")]
    project: Option<String>,
    /// Role in the project. Default: owner for a new project, member for an existing one.
    #[arg(long, value_enum, requires = "project")]
    role: Option<crate::types::Role>,
}

#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// local (default), staging or production (overrides `mode`).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The https:// URL users reach (overrides `public_url`).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The file's data_dir is an absolute path: --data-dir made absolute \
    against the current directory, else ./gatehouse-data under the current directory."
)]
struct InitArgs {
    /// The mode the file is for.
    #[arg(long, value_enum, default_value = "local")]
    mode: Mode,
    /// The https:// URL users reach; required for staging and production.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Where to write (default: --config FILE, else gatehouse.toml); an
    /// existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl ServeArgs {
    /// These flags, with `other`'s filling the gaps (flags given before the
    /// subcommand).
    fn or(self, other: ServeArgs) -> ServeArgs {
        ServeArgs {
            mode: self.mode.or(other.mode),
            listen: self.listen.or(other.listen),
            public_url: self.public_url.or(other.public_url),
        }
    }
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Check as if running in this mode (overrides `mode`).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The file to write; must not exist.
    #[arg(value_name = "OUT_FILE")]
    out: PathBuf,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let top = cli.serve;
    if cli.command.is_some()
        && !matches!(
            cli.command,
            Some(Command::Serve(_) | Command::CheckConfig(_))
        )
        && (top.mode.is_some() || top.listen.is_some() || top.public_url.is_some())
    {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--mode, --listen and --public-url before the subcommand apply to serve \
                 and check-config only; give them after the subcommand",
            )
            .exit();
    }
    match cli.command {
        None => serve(&cli.config, &cli.data_dir, top),
        Some(Command::Serve(args)) => serve(&cli.config, &cli.data_dir, args.or(top)),
        Some(Command::Init(args)) => init(&cli.config, &cli.data_dir, args),
        Some(Command::CheckConfig(args)) => {
            let args = CheckArgs {
                mode: args.mode.or(top.mode),
            };
            check_config(&cli.config, &cli.data_dir, args)
        }
        Some(Command::Migrate) => migrate(&cli.config, &cli.data_dir),
        Some(Command::Backup(args)) => backup(&cli.config, &cli.data_dir, args),
        Some(Command::CopyData(args)) => copy_data(&cli.config, &cli.data_dir, args),
        Some(Command::Users(UsersCommand::Add(args))) => {
            users_add(&cli.config, &cli.data_dir, args)
        }
        Some(Command::Keys(command)) => keys_command(&cli.config, &cli.data_dir, command),
        Some(Command::Billing(command)) => billing_command(&cli.config, &cli.data_dir, command),
        Some(Command::Completions(args)) => docs::completions(args),
        Some(Command::Man(args)) => docs::man(args),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("gatehouse: {message}");
    ExitCode::FAILURE
}

fn load(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    mut overrides: CliOverrides,
) -> Result<config::load::Loaded, ExitCode> {
    overrides.data_dir = data_dir.clone();
    config::load(&ConfigSources {
        config_file: config_file.clone(),
        overrides,
    })
    .map_err(|e| fail(format!("configuration error:\n{e}")))
}

fn serve(config_file: &Option<PathBuf>, data_dir: &Option<PathBuf>, args: ServeArgs) -> ExitCode {
    let overrides = CliOverrides {
        mode: args.mode,
        listen: args.listen,
        public_url: args.public_url,
        data_dir: None,
    };
    let loaded = match load(config_file, data_dir, overrides) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut config = loaded.config;
    let mut findings = loaded.findings;
    // A data directory that exists is held first, so a second server on it
    // is told which process runs there rather than that the port is taken.
    let mut data_dir_lock = match hold_data_dir(&config, false) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let mut local_secrets = Vec::new();
    // Before any data is touched: a busy port creates nothing.
    let listener = match crate::startup::bind(config.listen) {
        Ok(listener) => listener,
        Err(e) => return fail(e),
    };
    if config.mode.is_local() {
        if let Err(e) = ensure_data_dir(&config.data_dir) {
            return fail(format!("cannot create {}: {e}", config.data_dir.display()));
        }
        // Generated secrets are how the demo works, not a problem: the
        // banner says where they are kept.
        local_secrets = match fill_local_secrets(&mut config) {
            Ok(names) => names,
            Err(e) => return fail(format!("local secrets: {e}")),
        };
    }
    findings.extend(check(&config));
    let report = Report::new(config.mode, findings);
    eprint!("{}", report.render());
    if report.refuses() {
        return ExitCode::FAILURE;
    }
    // Held until the process ends (the operating system releases it however
    // the process ends).
    if data_dir_lock.is_none() {
        data_dir_lock = match hold_data_dir(&config, true) {
            Ok(lock) => lock,
            Err(code) => return code,
        };
    }
    let _data_dir_lock = data_dir_lock;

    let _log_guard = crate::telemetry::init(&config.log);
    let app = match Application::build_on(config.clone(), listener, crate::clock::Clock::system()) {
        Ok(app) => app,
        Err(e) => return fail(e),
    };
    let port = app.port();
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        // Caught before the banner says the server is up.
        let signals = StopSignals::install()?;
        let running = app.start()?;
        print_banner(&config, port, &local_secrets);
        running.serve_until_stopped(signals).await
    });
    match result {
        Ok(Stopped::Graceful) => ExitCode::SUCCESS,
        Ok(Stopped::Forced(signal)) => ExitCode::from(signal.exit_status()),
        Err(e) => fail(format!("server error: {e}")),
    }
}

/// On SQLite, `serve`'s lock on the data directory; `None` on PostgreSQL,
/// and when the directory does not exist and may not be `created` yet.
fn hold_data_dir(config: &config::Config, create: bool) -> Result<Option<DataDirLock>, ExitCode> {
    if config.uses_postgres() || (!create && !config.data_dir.is_dir()) {
        return Ok(None);
    }
    if let Err(e) = ensure_data_dir(&config.data_dir) {
        return Err(fail(format!(
            "cannot create {}: {e}",
            config.data_dir.display()
        )));
    }
    lock_data_dir(
        &config.data_dir,
        "gatehouse serve",
        "one process serves a SQLite database: stop the other one first, or give this one \
         another --data-dir (several nodes share a PostgreSQL database, database.url)",
    )
    .map(Some)
}

/// The warning that a secret comes from local mode's generated secrets file.
fn local_secret_notice(config: &config::Config, name: &str) -> Finding {
    Finding::warning(
        name,
        format!(
            "not configured; using the value generated in {} (local mode only)",
            config.data_dir.join(LOCAL_SECRETS_FILE).display()
        ),
    )
}

fn print_banner(config: &config::Config, port: u16, local_secrets: &[&str]) {
    let base = match &config.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_string(),
        None => {
            let url = config.effective_public_url();
            format!(
                "{}://{}:{port}",
                url.scheme(),
                url.host_str().unwrap_or("127.0.0.1")
            )
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let storage = crate::store::open::location(config);
    println!("Listening on {}:{port}", config.listen.ip());
    if config.mode.is_local() {
        println!("Gatehouse {version} is serving a local demo (local mode: not for production).");
        println!("  Admin UI:       {base}/");
        println!("  Local mailbox:  {base}/dev/mailbox   (login codes arrive here)");
        println!("  Data directory: {}", config.data_dir.display());
        if !local_secrets.is_empty() {
            println!(
                "  Secrets:        {} from {} (generated on first start)",
                local_secrets.join(", "),
                config.data_dir.join(LOCAL_SECRETS_FILE).display()
            );
        }
    } else {
        println!(
            "Gatehouse {version} is serving in {} mode for {base}",
            config.mode.as_str()
        );
    }
    println!("  Storage:        {storage}");
}

fn init(config_file: &Option<PathBuf>, data_dir: &Option<PathBuf>, args: InitArgs) -> ExitCode {
    let out = args
        .out
        .or_else(|| config_file.clone())
        .unwrap_or_else(|| PathBuf::from(config::load::DEFAULT_CONFIG_FILE));
    let data_dir = match std::path::absolute(
        data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::init::DEFAULT_DATA_DIR)),
    ) {
        Ok(dir) => dir,
        Err(e) => return fail(format!("cannot resolve the data directory: {e}")),
    };
    let request = config::init::InitRequest {
        mode: args.mode,
        public_url: args.public_url.as_deref(),
        data_dir: &data_dir,
    };
    match config::init::write(&out, &request) {
        Ok(()) => {
            println!(
                "Wrote {} for {} mode with freshly generated secrets (file mode 0600); data in {}.",
                out.display(),
                args.mode.as_str(),
                data_dir.display()
            );
            if !args.mode.is_local() {
                println!(
                    "Next: fill in [smtp] host (and credentials) and run `gatehouse check-config --config {0}`; `gatehouse serve --config {0}` creates the database.",
                    out.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(config::init::InitError::Refused(report)) => {
            eprint!("{}", report.render_check());
            ExitCode::FAILURE
        }
        Err(e) => fail(e),
    }
}

fn check_config(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    args: CheckArgs,
) -> ExitCode {
    let overrides = CliOverrides {
        mode: args.mode,
        ..Default::default()
    };
    let loaded = match load(config_file, data_dir, overrides) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut config = loaded.config;
    let mut findings = loaded.findings;
    if config.mode.is_local() {
        match read_local_secrets(&mut config) {
            Ok(names) => {
                findings.extend(names.iter().map(|name| local_secret_notice(&config, name)))
            }
            Err(e) => findings.push(Finding::error("data_dir", format!("local secrets: {e}"))),
        }
    }
    findings.extend(check(&config));
    if config.mode.is_local() {
        for f in findings.iter_mut() {
            if f.key.starts_with("secrets.") && f.reason == "is missing" {
                f.reason = "is missing (local mode generates it on first start)".into();
            }
        }
    }
    findings.extend(database_findings(&config));
    let report = Report::new(config.mode, findings);
    eprint!("{}", report.render_check());
    if report.refuses() {
        ExitCode::FAILURE
    } else {
        println!(
            "The configuration may serve in {} mode{}.",
            config.mode.as_str(),
            match &loaded.file {
                Some(f) => format!(" (from {})", f.display()),
                None => String::new(),
            }
        );
        ExitCode::SUCCESS
    }
}

/// Whether the configured database holds a schema this build can use
/// (nothing is changed).
fn database_findings(config: &config::Config) -> Vec<Finding> {
    use crate::store::open::SchemaCheck;
    let key = if config.uses_postgres() {
        "database.url"
    } else {
        "data_dir"
    };
    match crate::store::open::check_schema(config) {
        SchemaCheck::Usable { .. } => Vec::new(),
        SchemaCheck::NotCreated(location) if config.uses_postgres() => vec![not_created_yet(
            key,
            &format!("there is no Gatehouse schema in {location} yet"),
            "the schema there",
        )],
        SchemaCheck::NotCreated(location) => vec![not_created_yet(
            key,
            &format!("there is no database at {location} yet"),
            "it there",
        )],
        SchemaCheck::TooNew { found, supported } => vec![Finding::error(
            key,
            format!(
                "the database is at schema version {found}, newer than this Gatehouse supports ({supported}); run the newer release"
            ),
        )],
        SchemaCheck::Unreadable(why) => vec![Finding::error(key, why)],
        // Whether the configuration is right does not depend on the server
        // being up, but serve would fail: say so without refusing.
        SchemaCheck::NoAnswer(why) => vec![Finding::warning(
            key,
            format!("the database does not answer now: {why}"),
        )],
    }
}

/// A database that does not exist yet is no configuration error: `serve`
/// creates it. Saying where lets a mistyped location be caught before then.
fn not_created_yet(key: &str, what: &str, created: &str) -> Finding {
    Finding::warning(
        key,
        format!("{what}: `gatehouse serve` (or `gatehouse migrate`) will create {created}"),
    )
    .with_hint(if key == "data_dir" {
        "if the data belongs elsewhere, check --data-dir (or data_dir)"
    } else {
        "if the data belongs elsewhere, check database.url"
    })
}

fn migrate(config_file: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> ExitCode {
    let config = match load(config_file, data_dir, CliOverrides::default()) {
        Ok(l) => l.config,
        Err(code) => return code,
    };
    let _data_dir_lock = if config.uses_postgres() {
        None
    } else {
        if let Err(e) = ensure_data_dir(&config.data_dir) {
            return fail(format!("cannot create {}: {e}", config.data_dir.display()));
        }
        match lock_data_dir(
            &config.data_dir,
            "gatehouse migrate",
            "stop the server first: it keeps running on the schema it started with \
             (serve applies pending migrations itself when it starts)",
        ) {
            Ok(lock) => Some(lock),
            Err(code) => return code,
        }
    };
    match crate::store::open::open(&config) {
        Ok(opened) if opened.migrated.from == opened.migrated.to => {
            println!(
                "{} is up to date (schema version {}).",
                opened.location, opened.migrated.to
            );
            ExitCode::SUCCESS
        }
        Ok(opened) => {
            println!(
                "{} migrated from schema version {} to {}.",
                opened.location, opened.migrated.from, opened.migrated.to
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Exit status of `backup` on PostgreSQL: the command does not apply.
const NOT_APPLICABLE: u8 = 2;

/// Exit status when another Gatehouse process holds the data directory.
const IN_USE: u8 = 2;

/// Takes the SQLite data directory's lock for `command`, or refuses with
/// exit status 2, naming the holder and `why` this command cannot run
/// beside it (see `store::dir_lock`).
fn lock_data_dir(dir: &Path, command: &str, why: &str) -> Result<DataDirLock, ExitCode> {
    match DataDirLock::acquire(dir, command) {
        Ok(lock) => Ok(lock),
        Err(held @ LockError::Held { .. }) => {
            eprintln!("gatehouse: {held}; {why}");
            Err(ExitCode::from(IN_USE))
        }
        Err(e) => Err(fail(e)),
    }
}

fn backup(config_file: &Option<PathBuf>, data_dir: &Option<PathBuf>, args: BackupArgs) -> ExitCode {
    let config = match load(config_file, data_dir, CliOverrides::default()) {
        Ok(l) => l.config,
        Err(code) => return code,
    };
    if config.uses_postgres() {
        eprintln!(
            "error: `gatehouse backup` copies the SQLite database; this configuration uses PostgreSQL \
             (database.url). Back it up with PostgreSQL's own tools, for example \
             `pg_dump --format=custom --file=gatehouse.dump DBNAME` (restore with `pg_restore`), \
             or your provider's snapshots."
        );
        return ExitCode::from(NOT_APPLICABLE);
    }
    if let Err(code) = existing_database(&config) {
        return code;
    }
    match crate::store::open::backup(&config, &args.out)
        .unwrap_or_else(|| Err("this configuration's backend has no backup of its own".into()))
    {
        Ok(o) => {
            println!(
                "Backup of {} written to {} ({} pages, {} bytes, integrity ok).",
                config.database_path().display(),
                args.out.display(),
                o.pages,
                o.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("backup failed: {e}")),
    }
}

fn copy_data(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    args: CopyDataArgs,
) -> ExitCode {
    let config = match load(config_file, data_dir, CliOverrides::default()) {
        Ok(l) => l.config,
        Err(code) => return code,
    };
    if !crate::store::open::is_postgres_url(&args.to) {
        return fail("--to must be a postgres:// or postgresql:// URL");
    }
    let path = match existing_database(&config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Held until the copy is over, so no server starts on the data meanwhile.
    let _data_dir_lock = match lock_data_dir(
        &config.data_dir,
        "gatehouse copy-data",
        "stop the server first: what it writes during or after the copy (a key revoked, \
         a session ended) would not be in PostgreSQL",
    ) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let target = crate::store::open::redact_url(&args.to);
    match crate::store::copy::copy_file_to_postgres(&path, &config.database, &args.to) {
        Ok(report) => {
            println!("Copied {} into {target}:", path.display());
            for (table, rows) in &report.tables {
                println!("{}", copied_table_line(table, *rows));
            }
            println!(
                "Set database.url to this database on every node, then start them. \
                 Keep {} until the new setup has served for a while.",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("copy-data to {target}: {e}")),
    }
}

/// One table of `copy-data`'s report: `  users      1 row  (counts match)`.
fn copied_table_line(table: &str, rows: u64) -> String {
    let unit = if rows == 1 { "row " } else { "rows" };
    format!("  {table:<24} {rows:>10} {unit} (counts match)")
}

fn no_database(path: &Path) -> String {
    format!(
        "there is no database at {}: check --data-dir (or data_dir); `gatehouse migrate` or `gatehouse serve` creates one",
        path.display()
    )
}

/// The configured database's path, when a database is there. Only serve,
/// migrate and init may create one: any other command pointed at a mistyped
/// data directory must say so rather than start an empty database.
fn existing_database(config: &config::Config) -> Result<PathBuf, ExitCode> {
    let path = config.database_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(fail(no_database(&path)))
    }
}

/// Loads the configuration and opens (and migrates) the existing database,
/// for subcommands that work on the data directly. A SQLite database must
/// exist already (a mistyped data directory is an error, not a new file).
fn open_database(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
) -> Result<(config::Config, crate::store::open::Opened), ExitCode> {
    let config = load(config_file, data_dir, CliOverrides::default())?.config;
    if !config.uses_postgres() {
        existing_database(&config)?;
    }
    let opened = crate::store::open::open(&config).map_err(fail)?;
    Ok((config, opened))
}

fn keys_command(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    command: keys::KeysCommand,
) -> ExitCode {
    let (config, opened) = match open_database(config_file, data_dir) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match actix_web::rt::System::new().block_on(keys::run(&config, &*opened.store, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn billing_command(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    command: billing::BillingCommand,
) -> ExitCode {
    let (config, opened) = match open_database(config_file, data_dir) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let default_plan = config.billing.default_plan.clone();
    match actix_web::rt::System::new().block_on(billing::run(&*opened.store, command, default_plan))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn users_add(
    config_file: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    args: UsersAddArgs,
) -> ExitCode {
    let email = match crate::types::Email::parse(&args.email) {
        Ok(e) => e,
        Err(why) => return fail(format!("--email {why}")),
    };
    let project = match args.project.as_deref().map(crate::types::Name::parse) {
        Some(Ok(name)) => Some((name.as_str().to_string(), args.role)),
        Some(Err(why)) => return fail(format!("--project {why}")),
        None => None,
    };
    let (config, opened) = match open_database(config_file, data_dir) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let plan = config.billing.default_plan.clone();
    let result =
        actix_web::rt::System::new().block_on(opened.store.bootstrap_user(email, project, plan));
    match result {
        Ok(Ok(o)) => {
            println!(
                "{} user {} ({})",
                if o.user_created { "Created" } else { "Found" },
                o.user.email,
                o.user.id
            );
            if let (Some(p), Some(role)) = (&o.project, o.role) {
                println!(
                    "{} project {:?} ({}); {} is {}",
                    if o.project_created {
                        "Created"
                    } else {
                        "Using"
                    },
                    p.name,
                    p.id,
                    o.user.email,
                    role.as_str()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Err(why)) => fail(why),
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_data_counts_one_row_as_a_row() {
        assert_eq!(
            copied_table_line("users", 1),
            format!("  {:<24} {:>10} row  (counts match)", "users", 1)
        );
        assert!(copied_table_line("api_keys", 0).contains(" 0 rows (counts match)"));
        assert!(copied_table_line("api_keys", 12).contains(" 12 rows (counts match)"));
    }
}
