//! Storage: sea-orm entities, migrations, the queries the API runs and the batch write the
//! persistence actor runs.
//!
//! Backend-neutral by design: the same code runs on SQLite (`sqlite://PATH`,
//! `sqlite::memory:`) and PostgreSQL (`postgres://…`). No SQLite-only SQL is issued outside the
//! connection options, which PostgreSQL ignores.
//!
//! **Architecture invariant:** only the persistence actor writes (through [`write_batch`] and
//! [`probe_write`]); everything else reads.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

pub mod entity;
pub mod migration;
mod query;
mod write;

pub use query::{AlertPage, HistoryFilter, HistoryPage, agents, alerts, count_agents, history};
pub use write::{Batch, BatchSummary, PendingAlert, probe_write, write_batch};

/// Errors of [`connect`]. Messages never contain the database URL's password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
    #[error(
        "unsupported database URL {url}: expected sqlite://PATH, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl {
        /// The URL with any password replaced by `***`.
        url: String,
    },
    /// The SQLite file's directory could not be created.
    #[error("cannot create the directory of the SQLite database {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed (network, authentication, file permissions).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's message, password redacted.
        reason: String,
    },
    /// A migration failed; the schema may be partly applied.
    #[error("database migration failed: {reason}")]
    Migrate {
        /// The driver's message, password redacted.
        reason: String,
    },
}

/// Connection tuning; [`connect`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbOptions {
    /// How long a SQLite writer waits for the lock before failing with "database is locked"
    /// (default 5 s). Ignored by PostgreSQL.
    pub busy_timeout: Duration,
    /// Pool size (default 8; always 1 for `sqlite::memory:`, where each connection would be a
    /// separate database).
    pub max_connections: u32,
    /// How long to wait for a free pooled connection (default 5 s).
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects with [`DbOptions::default`] and applies every pending migration.
///
/// Accepts `sqlite://PATH` (the file and its directory are created; WAL journal, busy timeout
/// 5 s, `synchronous=NORMAL`), `sqlite::memory:` (one connection, gone at exit) and
/// `postgres://…` / `postgresql://…`.
///
/// Errors: [`DbError`]; none of them contains the password.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbError> {
    connect_with(url, DbOptions::default()).await
}

/// [`connect`] with explicit [`DbOptions`] (tests use a short busy timeout).
pub async fn connect_with(url: &str, options: DbOptions) -> Result<DatabaseConnection, DbError> {
    let redacted = redact_url(url);
    let mut connect_options = ConnectOptions::new(url.to_owned());
    connect_options
        .acquire_timeout(options.acquire_timeout)
        .sqlx_logging(false);

    if url.starts_with("sqlite:") {
        let parsed = SqliteConnectOptions::from_str(url).map_err(|_| DbError::UnsupportedUrl {
            url: redacted.clone(),
        })?;
        let in_memory = is_sqlite_memory(url);
        if !in_memory {
            create_parent_dir(parsed.get_filename())?;
            connect_options.max_connections(options.max_connections);
        } else {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            connect_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let busy_timeout = options.busy_timeout;
        connect_options.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .create_if_missing(true)
                .busy_timeout(busy_timeout)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true);
            if in_memory {
                o
            } else {
                o.journal_mode(SqliteJournalMode::Wal)
            }
        });
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        connect_options.max_connections(options.max_connections);
    } else {
        return Err(DbError::UnsupportedUrl { url: redacted });
    }

    let db = Database::connect(connect_options)
        .await
        .map_err(|e| DbError::Connect {
            url: redacted.clone(),
            reason: redact_message(&e.to_string(), url),
        })?;
    migration::Migrator::up(&db, None)
        .await
        .map_err(|e| DbError::Migrate {
            reason: redact_message(&e.to_string(), url),
        })?;
    Ok(db)
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn create_parent_dir(file: &std::path::Path) -> Result<(), DbError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
                path: dir.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// The URL with its password (if any) replaced by `***`, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Replaces the URL's password (raw and percent-decoded) in a driver message.
fn redact_message(message: &str, url: &str) -> String {
    let Some(password) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    else {
        return message.to_owned();
    };
    let mut out = message.replace(&password, "***");
    if let Ok(decoded) = url::form_urlencoded::parse(format!("p={password}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(())
    {
        if !decoded.is_empty() {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

/// Describes a database error for logs and `/readyz`: the driver's message only (sea-orm's
/// errors carry SQL and driver text, never the connection URL).
pub fn describe(err: &DbErr) -> String {
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_redaction() {
        let url = "postgres://monitor:s3cr%40t@db.example:5432/monitor";
        assert_eq!(
            redact_url(url),
            "postgres://monitor:***@db.example:5432/monitor"
        );
        assert_eq!(
            redact_message("auth failed for s3cr@t and s3cr%40t", url),
            "auth failed for *** and ***"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[tokio::test]
    async fn unsupported_urls_are_refused() {
        let err = connect("mysql://u:pw@h/db").await.unwrap_err();
        assert!(matches!(err, DbError::UnsupportedUrl { .. }));
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[tokio::test]
    async fn memory_and_file_databases_migrate() {
        let db = connect("sqlite::memory:").await.unwrap();
        assert_eq!(count_agents(&db).await.unwrap(), 0);

        let path = std::env::temp_dir().join(format!(
            "agent-monitor-db-{}-{}/nested/m.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let url = format!("sqlite://{}", path.display());
        let db = connect(&url).await.unwrap();
        assert!(path.exists());
        drop(db);
        // Migrations are idempotent on reconnect.
        let db = connect(&url).await.unwrap();
        assert_eq!(count_agents(&db).await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
