//! Building and running the HTTP server: state, extractor settings,
//! middleware order and routes, in one place.

use std::net::TcpListener;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::config::local::ensure_data_dir;
use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}{hint}", hint = listen_hint(.1.kind()))]
    Listen(String, std::io::Error),
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::traces::SetupError),
}

/// What to do about an address that cannot be listened on.
fn listen_hint(kind: std::io::ErrorKind) -> &'static str {
    match kind {
        std::io::ErrorKind::AddrInUse => {
            "; another program is using that port: pick another address with --listen \
             (for example --listen 127.0.0.1:8081), or set `listen` in the configuration \
             (GATEHOUSE_LISTEN)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: listen on a higher port (--listen, or \
             `listen` in the configuration) behind a reverse proxy"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no network interface of this machine has that address: check --listen \
             (or `listen` in the configuration)"
        }
        _ => "",
    }
}

/// Binds the address to serve on. `serve` does this before it touches any
/// data, so a busy port costs nothing (no data directory, no database).
pub fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).map_err(|e| StartupError::Listen(addr.to_string(), e))
}

/// A prepared server: database open and migrated, socket bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: web::Data<AppState>,
}

impl Application {
    /// Blocking preparation; call it before the async runtime runs. With
    /// `listen` on port 0 the system picks a free port (see [`Self::port`]).
    pub fn build(config: Config) -> Result<Application, StartupError> {
        Self::build_with_clock(config, crate::clock::Clock::system())
    }

    /// [`Application::build`] reading time from `clock` (tests pass a
    /// manual one and move it instead of sleeping).
    pub fn build_with_clock(
        config: Config,
        clock: crate::clock::Clock,
    ) -> Result<Application, StartupError> {
        let listener = bind(config.listen)?;
        Self::build_on(config, listener, clock)
    }

    /// [`Application::build_with_clock`] serving on a socket already bound
    /// with [`bind`].
    pub fn build_on(
        config: Config,
        listener: TcpListener,
        clock: crate::clock::Clock,
    ) -> Result<Application, StartupError> {
        crate::keys::store::tune_allocator();
        // PostgreSQL keeps everything in the database: a node needs no data
        // directory (local mode's generated secrets aside, which `serve`
        // keeps there itself).
        if !config.uses_postgres() {
            ensure_data_dir(&config.data_dir)
                .map_err(|e| StartupError::DataDir(config.data_dir.display().to_string(), e))?;
        }
        let opened = crate::store::open::open_with_clock(&config, clock)?;
        let outcome = opened.migrated;
        if outcome.from != outcome.to {
            tracing::info!(
                backend = opened.backend.as_str(),
                from = outcome.from,
                to = outcome.to,
                "database migrated"
            );
        }
        let traces = crate::telemetry::init_traces(&config.telemetry)?;
        let openapi = crate::openapi::document_json(&crate::catalog::Catalog::from_config(&config));
        let mut state = AppState::new(config, opened.store, openapi);
        state.traces = traces;
        state
            .keys
            .set_imported(opened.imported.into_iter().map(|h| h.0));
        Ok(Application {
            listener,
            state: web::Data::new(state),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Starts serving. Must be called inside an actix system. The server
    /// does not watch for signals itself: `serve` passes [`StopSignals`] to
    /// [`Running::serve_until_stopped`].
    pub fn start(self) -> std::io::Result<Running> {
        let state = self.state.clone();
        let http = &state.config.http;
        let drain = state.http.clone();
        let mut server = HttpServer::new({
            let state = state.clone();
            move || build_app(state.clone())
        })
        // Counted while open, for the drain of a graceful stop.
        .on_connect(move |_, extensions| {
            extensions.insert(drain.opened());
        })
        .shutdown_timeout(http.shutdown_timeout_secs)
        .disable_signals()
        // Storage work runs on each worker's blocking threads, and holds a
        // pooled connection: threads beyond the pool's size would only wait
        // for one, each with its stack and its share of malloc's arenas.
        .worker_max_blocking_threads(state.config.database.pool_size.max(1) as usize);
        if http.workers > 0 {
            server = server.workers(http.workers);
        }
        let listener = raw_fd(&self.listener);
        let server = server.listen(self.listener)?.run();
        spawn_background_tasks(&state);
        Ok(Running {
            server,
            state,
            listener,
        })
    }
}

#[cfg(unix)]
fn raw_fd(listener: &TcpListener) -> Option<i32> {
    use std::os::fd::AsRawFd;
    Some(listener.as_raw_fd())
}

#[cfg(not(unix))]
fn raw_fd(_: &TcpListener) -> Option<i32> {
    None
}

/// A serving application.
pub struct Running {
    server: Server,
    state: web::Data<AppState>,
    /// The listening socket (the server owns it), to refuse new
    /// connections when a graceful stop begins.
    listener: Option<i32>,
}

impl Running {
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then finishes the shutdown work.
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.state.shutdown().await;
        if let Some(traces) = &self.state.traces {
            traces.shutdown();
        }
        result
    }

    /// Serves until the first SIGINT or SIGTERM, then stops gracefully: no
    /// new connections, the requests in flight get
    /// `http.shutdown_timeout_secs` to finish, then the shutdown work of
    /// [`Running::wait`]. A second signal meanwhile stops at once: requests
    /// still in flight are cut off, the usage counts are still written.
    pub async fn serve_until_stopped(self, mut signals: StopSignals) -> std::io::Result<Stopped> {
        let handle = self.server.handle();
        let state = self.state.clone();
        let listener = self.listener;
        let mut serving = std::pin::pin!(self.wait());
        let first = tokio::select! {
            result = &mut serving => return result.map(|()| Stopped::Graceful),
            signal = signals.next() => signal,
        };
        tracing::info!(
            "{} received; stopping gracefully (requests in flight may finish; {} again stops at once)",
            first.name(),
            first.name()
        );
        // First the connections: new ones are refused (a proxy sends them
        // to another node), open ones close after their next answer, idle
        // ones are left to the proxy for a while (`drain::HttpDrain`).
        let grace = Duration::from_secs(state.config.http.shutdown_timeout_secs);
        let drained = async {
            state.http.start();
            handle.pause().await;
            refuse_new_connections(listener);
            state.http.closed(grace.min(DRAIN_AT_MOST)).await
        };
        tokio::select! {
            result = &mut serving => return result.map(|()| Stopped::Graceful),
            _ = drained => {}
            second = signals.next() => {
                tracing::warn!(
                    "{} received again; stopping at once (requests in flight are cut off)",
                    second.name()
                );
                if let Err(e) = state.keys.usage.flush(&*state.store).await {
                    tracing::error!(error = %e, "usage could not be written at shutdown");
                }
                return Ok(Stopped::Forced(second));
            }
        }
        // The command is sent now; the server's own future (polled by
        // `serving`) carries it out.
        drop(handle.stop(true));
        tokio::select! {
            result = &mut serving => result.map(|()| Stopped::Graceful),
            second = signals.next() => {
                tracing::warn!(
                    "{} received again; stopping at once (requests in flight are cut off)",
                    second.name()
                );
                if let Err(e) = state.keys.usage.flush(&*state.store).await {
                    tracing::error!(error = %e, "usage could not be written at shutdown");
                }
                Ok(Stopped::Forced(second))
            }
        }
    }
}

/// How long a graceful stop waits for the proxy to close idle kept-alive
/// connections: past Gatehouse's own keep-alive (5 s), after which the
/// server closes them anyway.
const DRAIN_AT_MOST: Duration = Duration::from_secs(6);

/// Makes the listening socket refuse new connections at once (the server
/// stops accepting first: `ServerHandle::pause`). A refused connection is
/// one a proxy may send to another node whatever the method.
fn refuse_new_connections(listener: Option<i32>) {
    #[cfg(unix)]
    if let Some(fd) = listener {
        // SAFETY: `fd` is the server's listening socket, open until the
        // server stops (after this); shutdown only changes its state.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RD);
        }
    }
    #[cfg(not(unix))]
    let _ = listener;
}

/// How the server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight finished (or had its shutdown timeout).
    Graceful,
    /// A second signal cut the requests in flight off.
    Forced(StopSignal),
}

/// A signal that stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: what service managers send.
    Terminate,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit status of a process stopped at once by this signal (128 +
    /// its number, as a shell reports it).
    pub fn exit_status(self) -> u8 {
        128 + match self {
            StopSignal::Interrupt => libc::SIGINT as u8,
            StopSignal::Terminate => libc::SIGTERM as u8,
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment [`StopSignals::install`]
/// returns: from then on neither ends the process by itself. `serve`
/// installs them before it says "Listening on", so a supervisor that
/// stops the server as soon as it is up still gets a graceful stop.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Must be called inside a runtime (the actix system).
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

fn build_app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.config.http.max_body_bytes;
    let origins = state.config.cors.allowed_origins.clone();
    let conventions = crate::http::Conventions::new(
        state.config.clone(),
        state.https,
        state.metrics.clone(),
        state.http.clone(),
    );
    let traced = state.traces.is_some();
    let local_hosts = crate::http::host::LocalHosts::new(&state.public_url);
    let local = state.config.mode.is_local();
    App::new()
        .app_data(state)
        .app_data(crate::http::extract::json_config(limit))
        .app_data(crate::http::extract::payload_config(limit))
        .app_data(crate::http::extract::query_config())
        .app_data(crate::http::extract::path_config())
        .configure(crate::routes::configure)
        .default_service(web::to(not_found))
        // Innermost first: CORS, then (local mode) the Host check against DNS
        // rebinding, then the request id, envelope, headers, metrics and
        // access log around everything.
        .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
        .wrap(Condition::new(local, local_hosts))
        .wrap(conventions)
        // Outermost, and only when traces are exported: the request's span.
        .wrap(Condition::new(traced, from_fn(crate::http::trace::trace)))
}

/// The background tasks: mail and webhook delivery, the key change feed,
/// the Redis probe, usage flushes, heap trimming and the periodic cleanup. They stop with
/// the actix system; their work is all in the database, so none is lost,
/// and a graceful stop first lets the delivery batches in progress finish
/// (`AppState::shutdown`).
fn spawn_background_tasks(state: &web::Data<AppState>) {
    actix_web::rt::spawn(crate::mail::worker::run(crate::mail::worker::Worker {
        store: state.store.clone(),
        smtp: state.config.smtp.clone(),
        message_id_domain: crate::mail::compose::message_id_domain(&state.config),
        look: crate::mail::compose::Look::from_config(&state.config),
        wake: state.mailer.wake_handle(),
        traces: state.traces.clone(),
        work: state.work.clone(),
    }));
    actix_web::rt::spawn(crate::webhooks::worker::run(
        crate::webhooks::worker::Worker {
            store: state.store.clone(),
            config: state.config.webhooks.clone(),
            allow_private: state.config.mode.is_local()
                || state.config.webhooks.allow_private_targets,
            traces: state.traces.clone(),
            work: state.work.clone(),
        },
    ));
    actix_web::rt::spawn(crate::keys::feed::run(
        state.store.clone(),
        state.keys.clone(),
    ));
    if let Some(shared) = &state.shared_windows {
        actix_web::rt::spawn(shared.clone().run());
    }
    let usage_state = state.clone();
    actix_web::rt::spawn(async move {
        // Every interval, and at once when a batch has many keys (checks of
        // many distinct keys): it is written in chunks (`keys::usage`).
        let every = std::time::Duration::from_secs(usage_state.config.usage.flush_interval_secs);
        let mut tick = tokio::time::interval(every);
        let usage = &usage_state.keys.usage;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = usage.filled() => {}
            }
            if let Err(e) = usage.flush(&*usage_state.store).await {
                tracing::warn!(error = %e, "usage flush failed; will retry");
                // A failing store: wait for the interval before trying again.
                tick.tick().await;
            }
        }
    });
    let trim_state = state.clone();
    actix_web::rt::spawn(async move {
        // During and after a wave of cache fills (each read a whole record
        // and freed most of it), hand the freed heap back to the system:
        // every FILLS_PER_TRIM fills, and once the fills have stopped for
        // 3 s (by then the usage flush that follows them has freed its batch).
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let (mut trimmed_at, mut settled_at, mut seen, mut quiet) = (0, 0, 0, 0);
        loop {
            tick.tick().await;
            let fills = trim_state.keys.fills();
            quiet = if fills == seen { quiet + 1 } else { 0 };
            seen = fills;
            let wave = fills - trimmed_at >= crate::keys::store::FILLS_PER_TRIM;
            let settled = quiet == 3 && fills != settled_at;
            if wave || settled {
                trimmed_at = fills;
                if settled {
                    settled_at = fills;
                }
                let _ = tokio::task::spawn_blocking(crate::keys::store::return_freed_heap).await;
            }
        }
    });
    let state = state.clone();
    actix_web::rt::spawn(async move {
        // A minute after start, then every minute (not at once: a process
        // that restarts in a loop should not sweep the database each time).
        let every = std::time::Duration::from_secs(60);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let retention = crate::store::maintenance::Retention {
                session_idle_secs: state.session_limits().idle_secs,
            };
            match state.store.cleanup(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "expired codes, sessions and mail removed"),
                Err(e) => tracing::warn!(error = %e, "cleanup failed"),
            }
        }
    });
}

async fn not_found() -> Result<&'static str, ApiError> {
    Err(ApiError::not_found())
}

/// CORS for exactly the configured origins; none configured means no CORS headers.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "x-api-key",
            "x-project-id",
            "x-csrf-token",
            "x-request-id",
        ])
        .expose_headers([
            "x-request-id",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
        ])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_says_how_to_pick_another() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let message = bind(addr).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot listen on {addr}: ")),
            "{message}"
        );
        assert!(
            message.contains("--listen") && message.contains("`listen`"),
            "{message}"
        );
    }
}
