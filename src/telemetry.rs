//! Logging: tracing to stdout as text or JSON (`log.format`), and the access
//! log, one line per request.
//!
//! Both write into one [`LogSink`]: a buffer in memory that a background
//! thread writes to stdout in batches (when 32 KiB have gathered or 50 ms
//! after the first line, whichever is sooner). A request never waits for
//! stdout and never makes a system call to log; a slow terminal or pipe
//! cannot stall the server: once 8 MiB wait behind the batch being written,
//! lines are dropped (and the count of dropped lines is reported once the
//! output catches up) rather than requests delayed.
//!
//! The access line is written directly, not through tracing's formatter: it
//! is the one event of every request, and building it by hand into a reused
//! buffer costs a fraction of the generic event machinery. It keeps tracing's
//! shape (the same timestamp, level, message and `key=value` fields in text;
//! the same flat object in JSON) and obeys the same filter: it is target
//! `gatehouse::access` at level `INFO`, so `log.level = "warn"` or
//! `RUST_LOG=gatehouse::access=off` turns it off.
//!
//! Events logged while a request is handled carry its id as tracing's text
//! and JSON formats show a span (`request{request_id=...}:` in text,
//! `"span":{"request_id":...,"name":"request"}` in JSON). The id is not a
//! real tracing span: creating, entering and closing one per request cost
//! about a tenth of a cached key check. The request's future instead sets
//! the id as this thread's logging context while it is polled
//! ([`in_request`]), and the event formats ([`TextEvents`], [`JsonEvents`])
//! write it the way the span was written.

pub mod traces;

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{self, Format, FormatEvent, FormatFields, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The access log's tracing target.
pub const ACCESS_TARGET: &str = "gatehouse::access";

/// Buffered output is written once this much has gathered...
const FLUSH_BYTES: usize = 32 * 1024;
/// ...or this long after the first unwritten line.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Output waiting behind the batch being written beyond this is dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

struct Pending {
    buf: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// Where log lines go: an in-memory buffer drained to an output by a
/// background thread. Cloning shares the buffer.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl LogSink {
    /// A sink writing to `out` from a new thread; the guard flushes and
    /// stops it when dropped.
    pub fn spawn(out: impl Write + Send + 'static) -> (LogSink, LogGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(FLUSH_BYTES * 2),
                dropped: 0,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("gatehouse-log".into())
            .spawn({
                let shared = shared.clone();
                move || drain(&shared, out)
            })
            .expect("the log writer thread starts");
        let sink = LogSink { shared };
        let guard = LogGuard {
            sink: sink.clone(),
            thread: Some(thread),
        };
        (sink, guard)
    }

    /// Appends whole lines. Never blocks on the output.
    pub fn write_lines(&self, lines: &[u8]) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.buf.len() + lines.len() > MAX_PENDING {
            p.dropped += lines.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
            return;
        }
        let was_empty = p.buf.is_empty();
        let before = p.buf.len();
        p.buf.extend_from_slice(lines);
        // Wake the writer only when it has something new to do: the first
        // line of a batch starts its timer, a full batch is written at once.
        if was_empty || (before < FLUSH_BYTES && p.buf.len() >= FLUSH_BYTES) {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: waits for a batch, writes it outside the lock.
fn drain(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(FLUSH_BYTES * 2);
    loop {
        let (dropped, closed) = {
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            while p.buf.is_empty() && p.dropped == 0 && !p.closed {
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.buf.len() < FLUSH_BYTES && !p.closed {
                p = shared
                    .wake
                    .wait_timeout_while(p, FLUSH_AFTER, |p| p.buf.len() < FLUSH_BYTES && !p.closed)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut p.buf, &mut batch);
            (std::mem::take(&mut p.dropped), p.closed)
        };
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "gatehouse: {dropped} log lines were dropped because the output could not keep up"
            );
        }
        // An output that fails (a closed pipe) loses lines, never a request.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > FLUSH_BYTES * 8 {
            batch.shrink_to(FLUSH_BYTES * 2);
        }
        if closed && shared.pending.lock().map_or(true, |p| p.buf.is_empty()) {
            return;
        }
    }
}

/// Keep it alive until exit: dropping it writes what is buffered and stops
/// the writer thread.
pub struct LogGuard {
    sink: LogSink,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.sink.shared.pending.lock() {
            p.closed = true;
        }
        self.sink.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Each tracing event is formatted whole and then written with one call.
pub struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_lines(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// The access log's output and format, set once by [`init`]. The access log
/// is process-wide like the tracing subscriber whose filter it follows.
struct AccessLog {
    sink: LogSink,
    format: LogFormat,
    ansi: bool,
}

static ACCESS: OnceLock<AccessLog> = OnceLock::new();

/// Installs the global subscriber and the access log. Keep the guard alive
/// until exit. `RUST_LOG`, when set, overrides `log.level`; neither lets
/// a library log below INFO ([`library_cap`]).
pub fn init(log: &LogConfig) -> LogGuard {
    let (writer, guard) = LogSink::spawn(std::io::stdout());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal, not for journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let result = subscriber(filter, log.format, ansi, writer.clone()).try_init();
    match result {
        Ok(()) => {
            let _ = ACCESS.set(AccessLog {
                sink: writer,
                format: log.format,
                ansi,
            });
        }
        Err(e) => eprintln!("gatehouse: logging was already initialised: {e}"),
    }
    guard
}

/// The most a library's own events may say: INFO. Only Gatehouse's own
/// targets go below it. Libraries' debug and trace output prints secrets:
/// the PostgreSQL driver logs every statement with its parameters (a login
/// mail's text with the code, a webhook's `whsec_` signing secret, key and
/// token hashes), HTTP stacks and the Redis client log requests, headers
/// and commands. Logs never carry a secret at any level (SPEC section 11),
/// so this holds whatever `log.level` or `RUST_LOG` asks for, and it is a
/// filter of its own: no directive, however specific, can lift it.
pub fn library_cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("gatehouse", LevelFilter::TRACE)
}

/// The subscriber [`init`] installs: `filter` (from `log.level` or
/// `RUST_LOG`) and [`library_cap`] both decide, the format writes.
fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .event_format(JsonEvents::default())
                .finish()
                .with(library_cap()),
        ),
        LogFormat::Text => Box::new(
            builder
                .with_ansi(ansi)
                .event_format(TextEvents::default())
                .finish()
                .with(library_cap()),
        ),
    }
}

thread_local! {
    /// The id of the request being polled on this thread, if any.
    static REQUEST_ID: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Runs `f` (one poll of a request's future) with `request_id` as the
/// logging context of this thread: events logged meanwhile carry it.
pub fn in_request<T>(request_id: &Arc<str>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            let _ = REQUEST_ID.try_with(|id| *id.borrow_mut() = previous);
        }
    }
    let _restore = Restore(REQUEST_ID.with(|id| id.replace(Some(request_id.clone()))));
    f()
}

fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(|id| id.borrow().clone()).ok().flatten()
}

/// tracing's text format (`Format<Full>`: timestamp, level, the request as
/// a span, the fields), with the request id from [`in_request`].
pub struct TextEvents {
    rest: Format<format::Full, ()>,
}

impl Default for TextEvents {
    fn default() -> Self {
        TextEvents {
            rest: tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextEvents
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut head = Vec::with_capacity(96);
        let ansi = writer.has_ansi_escapes();
        write_head(&mut head, now, *event.metadata().level(), ansi);
        if let Some(id) = current_request_id() {
            if ansi {
                head.extend_from_slice(
                    b"\x1b[1mrequest\x1b[0m\x1b[1m{\x1b[0m\x1b[3mrequest_id\x1b[0m\x1b[2m=\x1b[0m",
                );
                head.extend_from_slice(id.as_bytes());
                head.extend_from_slice(b"\x1b[1m}\x1b[0m\x1b[2m:\x1b[0m ");
            } else {
                head.extend_from_slice(b"request{request_id=");
                head.extend_from_slice(id.as_bytes());
                head.extend_from_slice(b"}: ");
            }
        }
        writer.write_str(std::str::from_utf8(&head).map_err(|_| std::fmt::Error)?)?;
        self.rest.format_event(ctx, writer, event)
    }
}

/// tracing's JSON format, with the request id from [`in_request`] as the
/// current span (`"span":{"request_id":...,"name":"request"}`, the last
/// member, where tracing writes the current span).
pub struct JsonEvents {
    inner: Format<Json>,
}

impl Default for JsonEvents {
    fn default() -> Self {
        JsonEvents {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonEvents
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let object_end = line.trim_end().len();
        match line[..object_end].strip_suffix('}') {
            Some(members) => {
                let mut span = Vec::with_capacity(id.len() + 48);
                span.extend_from_slice(b",\"span\":{\"request_id\":");
                json_string(&mut span, &id);
                span.extend_from_slice(b",\"name\":\"request\"}}");
                writer.write_str(members)?;
                writer.write_str(std::str::from_utf8(&span).map_err(|_| std::fmt::Error)?)?;
                writer.write_str(&line[object_end..])
            }
            None => writer.write_str(&line),
        }
    }
}

/// The timestamp and level that start a text line, as tracing writes them
/// (the level right-aligned in five columns, coloured for a terminal).
fn write_head(out: &mut Vec<u8>, now: Duration, level: Level, ansi: bool) {
    let (name, colour): (&[u8], &[u8]) = match level {
        Level::TRACE => (b"TRACE", b"\x1b[35m"),
        Level::DEBUG => (b"DEBUG", b"\x1b[34m"),
        Level::INFO => (b" INFO", b"\x1b[32m"),
        Level::WARN => (b" WARN", b"\x1b[33m"),
        _ => (b"ERROR", b"\x1b[31m"),
    };
    if ansi {
        out.extend_from_slice(b"\x1b[2m");
        write_timestamp(out, now);
        out.extend_from_slice(b"\x1b[0m ");
        out.extend_from_slice(colour);
        out.extend_from_slice(name);
        out.extend_from_slice(b"\x1b[0m ");
    } else {
        write_timestamp(out, now);
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(b' ');
    }
}

/// Whether `level` is a valid filter directive.
pub fn is_valid_level(level: &str) -> bool {
    EnvFilter::try_new(level).is_ok()
}

/// Trace export over OTLP/HTTP, separate from logging: `None` unless
/// `telemetry.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_*`
/// variables name a collector (see [`traces::plan`]).
pub fn init_traces(
    config: &crate::config::TelemetryConfig,
) -> Result<Option<traces::Tracing>, traces::SetupError> {
    traces::Tracing::from_config(config)
}

/// One request, as the access log records it.
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub client_ip: IpAddr,
}

/// Writes the access line of a finished request, when the filter lets
/// `gatehouse::access` at `INFO` through.
pub fn access(record: &AccessRecord<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(log) = ACCESS.get() else {
        return;
    };
    thread_local! {
        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    }
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        match log.format {
            LogFormat::Text => write_text(&mut line, now, record, log.ansi),
            LogFormat::Json => write_json(&mut line, now, record),
        }
        log.sink.write_lines(&line);
    });
}

/// `2026-11-29T14:31:51.576619Z  INFO request request_id=... method=GET ...`,
/// as tracing's text format writes an event.
fn write_text(out: &mut Vec<u8>, now: Duration, r: &AccessRecord<'_>, ansi: bool) {
    write_head(out, now, Level::INFO, ansi);
    out.extend_from_slice(b"request request_id=");
    out.extend_from_slice(r.request_id.as_bytes());
    out.extend_from_slice(b" method=");
    out.extend_from_slice(r.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(r.path.as_bytes());
    out.extend_from_slice(b" status=");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b" latency_us=");
    out.extend_from_slice(itoa::Buffer::new().format(r.latency_us).as_bytes());
    out.extend_from_slice(b" client_ip=");
    write_ip(out, r.client_ip);
    out.push(b'\n');
}

/// An address as `Display` writes it; IPv4 (every loopback and most
/// clients) without the formatting machinery.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// `{"timestamp":"...","level":"INFO","message":"request","request_id":...,
/// "target":"gatehouse::access"}`, as tracing's JSON format writes an event.
fn write_json(out: &mut Vec<u8>, now: Duration, r: &AccessRecord<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":");
    json_string(out, r.request_id);
    out.extend_from_slice(b",\"method\":");
    json_string(out, r.method);
    out.extend_from_slice(b",\"path\":");
    json_string(out, r.path);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b",\"latency_us\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.latency_us).as_bytes());
    out.extend_from_slice(b",\"client_ip\":\"");
    write_ip(out, r.client_ip);
    out.extend_from_slice(b"\",\"target\":\"");
    out.extend_from_slice(ACCESS_TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 in UTC with microseconds, like tracing's default timer. The
/// date and time of day are worked out once per second and thread.
fn write_timestamp(out: &mut Vec<u8>, now: Duration) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut text = [0u8; 19];
            let _ = write!(
                &mut text[..],
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            *cached = (secs, text);
        }
        out.extend_from_slice(&cached.1);
    });
    let micros = now.subsec_micros();
    let mut frac = *b".000000Z";
    let mut n = micros;
    for slot in frac[1..7].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&frac);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            request_id: "req_abc",
            method: "GET",
            path: "/api/v1/\"quoted\"",
            status: 404,
            latency_us: 1234,
            client_ip: "10.1.2.3".parse().unwrap(),
        }
    }

    const NOW: Duration = Duration::from_micros(1_764_426_711_000_042);

    #[test]
    fn text_lines_have_tracing_shape() {
        let mut out = Vec::new();
        write_text(&mut out, NOW, &record(), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-11-29T14:31:51.000042Z  INFO request request_id=req_abc method=GET \
             path=/api/v1/\"quoted\" status=404 latency_us=1234 client_ip=10.1.2.3\n"
        );
    }

    #[test]
    fn json_lines_are_one_valid_object() {
        let mut out = Vec::new();
        write_json(&mut out, NOW, &record());
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2025-11-29T14:31:51.000042Z",
                "level": "INFO",
                "message": "request",
                "request_id": "req_abc",
                "method": "GET",
                "path": "/api/v1/\"quoted\"",
                "status": 404,
                "latency_us": 1234,
                "client_ip": "10.1.2.3",
                "target": "gatehouse::access",
            })
        );
    }

    #[test]
    fn timestamps_follow_the_clock_across_seconds() {
        let mut out = Vec::new();
        write_timestamp(&mut out, Duration::from_micros(999_999));
        out.push(b' ');
        write_timestamp(&mut out, Duration::from_micros(1_000_000));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.999999Z 1970-01-01T00:00:01.000000Z"
        );
    }

    /// The lines two subscribers write for the same events: one configured
    /// as before, with a real `request` span, and one as [`init`] does, with
    /// the request id set by [`in_request`].
    fn with_and_without_span(json: bool, ansi: bool) -> (Vec<String>, Vec<String>) {
        let emit = || {
            tracing::warn!(key_id = "key_1", "in a request");
            tracing::error!(code = "internal", cause = "disk \"gone\"", "request failed");
        };
        let span_out = Recorder::default();
        let ours_out = Recorder::default();
        let writer = |r: &Recorder| {
            let r = r.clone();
            move || r.clone()
        };
        let builder = tracing_subscriber::fmt().with_writer(writer(&span_out));
        let with_span: Box<dyn Subscriber + Send + Sync> = if json {
            Box::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .finish(),
            )
        } else {
            Box::new(builder.with_target(false).with_ansi(ansi).finish())
        };
        let builder = tracing_subscriber::fmt().with_writer(writer(&ours_out));
        let ours: Box<dyn Subscriber + Send + Sync> = if json {
            Box::new(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .event_format(JsonEvents::default())
                    .finish(),
            )
        } else {
            Box::new(
                builder
                    .with_ansi(ansi)
                    .event_format(TextEvents::default())
                    .finish(),
            )
        };
        tracing::subscriber::with_default(with_span, || {
            tracing::warn!(key_id = "key_1", "outside any request");
            let span = tracing::info_span!("request", request_id = %"req_abc");
            span.in_scope(emit);
        });
        tracing::subscriber::with_default(ours, || {
            tracing::warn!(key_id = "key_1", "outside any request");
            in_request(&Arc::from("req_abc"), emit);
            assert!(
                current_request_id().is_none(),
                "the context ends with the poll"
            );
        });
        let lines = |r: &Recorder| {
            let text = String::from_utf8(r.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        };
        (lines(&span_out), lines(&ours_out))
    }

    /// The timestamp aside, which differs between the two runs.
    fn without_time(line: &str, json: bool) -> String {
        if json {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
            v.as_object_mut().unwrap().remove("timestamp");
            // Member order too: the request's span comes last.
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            format!("{keys:?} {v}")
        } else {
            let ts_end = line.find('Z').unwrap() + 1;
            line.replacen(line[..ts_end].trim_start_matches("\x1b[2m"), "TS", 1)
        }
    }

    /// What the installed subscriber writes for events of these targets,
    /// under the filter `directives` (as `log.level` or `RUST_LOG`).
    fn logged_under(directives: &str, format: LogFormat) -> String {
        let out = Recorder::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let filter = EnvFilter::try_new(directives).unwrap();
        tracing::subscriber::with_default(subscriber(filter, format, false, writer), || {
            // Targets as the `log` records of these libraries carry them.
            tracing::debug!(target: "tokio_postgres::query", "executing statement s1 with parameters: [\"whsec_leak\"]");
            tracing::trace!(target: "tokio_postgres::prepare", "preparing query s2: code_leak");
            tracing::debug!(target: "redis::cmd", "redis_leak");
            tracing::trace!(target: "actix_http::h1::decoder", "authorization: gate_sk_leak");
            tracing::debug!(target: "lettre::transport::smtp", "smtp_leak");
            tracing::debug!(target: "rustls::client", "rustls_leak");
            tracing::info!(target: "tokio_postgres::connection", "NOTICE: kept");
            tracing::warn!(target: "deadpool_postgres", "pool warning kept");
            tracing::debug!(target: "gatehouse::keys::feed", "own debug kept");
            tracing::trace!(target: "gatehouse::store", "own trace kept");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn libraries_never_log_below_info_whatever_the_filter_says() {
        for directives in [
            "trace",
            "debug",
            "tokio_postgres=trace,redis=trace,actix_http=trace,lettre=trace,rustls=trace,trace",
            "tokio_postgres::query=trace,tokio_postgres::prepare=trace,redis::cmd=trace,info",
            "[{statement}]=trace,trace",
        ] {
            for format in [LogFormat::Text, LogFormat::Json] {
                let text = logged_under(directives, format);
                assert!(!text.contains("leak"), "{directives} ({format:?}):\n{text}");
                for kept in ["NOTICE: kept", "pool warning kept"] {
                    assert!(text.contains(kept), "{directives} ({format:?}):\n{text}");
                }
                if directives.ends_with("trace") {
                    for kept in ["own debug kept", "own trace kept"] {
                        assert!(text.contains(kept), "{directives} ({format:?}):\n{text}");
                    }
                }
            }
        }
        // Lowering stays possible: warn shows no library INFO.
        let text = logged_under("warn", LogFormat::Text);
        assert!(
            !text.contains("NOTICE") && text.contains("pool warning kept"),
            "{text}"
        );
        assert!(!library_cap().would_enable("tokio_postgres::query", &Level::DEBUG));
        assert!(library_cap().would_enable("gatehouse::access", &Level::TRACE));
    }

    #[test]
    fn events_in_a_request_read_as_they_did_with_a_span() {
        for (json, ansi) in [(false, false), (false, true), (true, false)] {
            let (with_span, ours) = with_and_without_span(json, ansi);
            assert_eq!(with_span.len(), 3, "{with_span:?}");
            assert_eq!(ours.len(), 3, "{ours:?}");
            for (a, b) in with_span.iter().zip(&ours) {
                assert_eq!(without_time(a, json), without_time(b, json));
            }
            assert!(!ours[0].contains("req_abc"), "{ours:?}");
            assert!(ours[1].contains("req_abc") && ours[2].contains("req_abc"));
        }
    }

    /// An output that records what it is given, shared with the test.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_sink_writes_every_line_in_order_and_flushes_on_drop() {
        let out = Recorder::default();
        let (sink, guard) = LogSink::spawn(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        sink.write_lines(format!("t{t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_sink_writes_a_lone_line_soon() {
        let out = Recorder::default();
        let (sink, _guard) = LogSink::spawn(out.clone());
        sink.write_lines(b"only line\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"only line\n");
    }

    /// An output that blocks until released, like a stalled pipe.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Recorder);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let _open = cv.wait_while(lock.lock().unwrap(), |open| !*open).unwrap();
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Recorder::default();
        let (sink, guard) = LogSink::spawn(Stalled(gate.clone(), out.clone()));
        let line = [b'x'; 1023];
        // 20 MiB offered to a stalled output: the writes return (a blocked
        // writer would never get past them, so the test would hang here).
        let (done, returned) = std::sync::mpsc::channel();
        let writer = sink.clone();
        std::thread::spawn(move || {
            for _ in 0..20_000 {
                let mut l = line.to_vec();
                l.push(b'\n');
                writer.write_lines(&l);
            }
            let _ = done.send(());
        });
        returned
            .recv_timeout(Duration::from_secs(120))
            .expect("writes to a stalled output return");
        drop(sink);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let kept = text.lines().filter(|l| l.starts_with('x')).count();
        // At most one batch being written plus MAX_PENDING waiting.
        assert!(kept < 20_000 && kept * 1024 <= 2 * MAX_PENDING, "{kept}");
        // Drops are noted once per batch that follows them.
        let dropped: usize = text
            .lines()
            .filter(|l| l.contains("were dropped"))
            .map(|note| {
                note.trim_start_matches("gatehouse: ")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert_eq!(kept + dropped, 20_000);
    }
}
