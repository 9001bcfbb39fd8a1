//! Logging: tracing to stdout through a non-blocking writer (a slow terminal
//! or pipe never stalls a request; under extreme load lines are dropped
//! rather than requests delayed), as text or JSON (`log.format`).

pub mod traces;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Keep the guard alive until exit: dropping
/// it flushes the buffered lines. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &LogConfig) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            // Colours only for a terminal, not for journald or a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("gatehouse: logging was already initialised: {e}");
    }
    guard
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
