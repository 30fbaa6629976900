//! Logging set-up: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`, with the
//! database drivers' per-statement logs at `warn`), human-readable lines on stderr.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,sea_orm=warn,sqlx::postgres::notice=warn,poem=warn";

/// Installs the global subscriber once; later calls (tests) are no-ops. An invalid `RUST_LOG`
/// is reported on stderr and the default filter used.
pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(raw) if !raw.trim().is_empty() => EnvFilter::try_new(&raw).unwrap_or_else(|e| {
            eprintln!("RUST_LOG: invalid filter ({e}); using {DEFAULT_FILTER:?}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
