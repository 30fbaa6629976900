//! Logging set-up: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`, with the
//! database drivers' per-statement logs at `warn`) on stderr, as human-readable lines
//! (`LOG_FORMAT=text`, the default) or one JSON object per line (`LOG_FORMAT=json`: `timestamp`,
//! `level`, `target`, `fields.message` and the other fields, and the enclosing `spans` with
//! their fields, e.g. `user_id` and `channel_id`).

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,sea_orm=warn,sqlx::postgres::notice=warn,poem=warn";

/// Installs the global subscriber once with text lines; later calls (tests) are no-ops.
pub fn init() {
    init_with(LogFormat::Text);
}

/// Installs the global subscriber once in `format`; later calls are no-ops. An invalid
/// `RUST_LOG` is reported on stderr and the default filter used.
pub fn init_with(format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(raw) if !raw.trim().is_empty() => EnvFilter::try_new(&raw).unwrap_or_else(|e| {
            eprintln!("RUST_LOG: invalid filter ({e}); using {DEFAULT_FILTER:?}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: files, pipes and journald get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LossyStderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// stderr that drops what it cannot write: a closed pipe (`agent-monitor run 2>&1 | head`) must
/// not turn a log line into a crash.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
