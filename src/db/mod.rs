//! Storage: sea-orm entities, migrations, the queries the API runs and the batch write the
//! persistence actor runs.
//!
//! Backend-neutral by design: the same code runs on SQLite (`sqlite://PATH`,
//! `sqlite::memory:`) and PostgreSQL (`postgres://…`). No SQLite-only SQL is issued outside the
//! connection options, which PostgreSQL ignores.
//!
//! **Architecture invariant:** only the persistence actor writes (through [`write_batch`] and
//! [`probe_write`]), except that the retention actor deletes old rows (through
//! [`purge_history_batch`] and [`purge_alerts_batch`]); everything else reads.

#![warn(missing_docs)]

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

pub mod alerting;
pub mod entity;
mod file;
pub mod migration;
mod query;
mod report;
mod retention;
mod write;

pub use file::SqliteFile;
pub use query::{
    AlertPage, HistoryFilter, HistoryPage, Keyset, agents, alerts, count_agents, history,
    history_rows, history_select,
};
pub use report::{
    INTERVAL_PAGE_ROWS, UserIntervals, next_user, next_user_select, state_before,
    state_before_select, transitions_page, transitions_select,
};
pub use retention::{purge_alerts_batch, purge_history_batch};
pub use write::{AgentRow, Batch, BatchSummary, PendingAlert, probe_write, write_batch};

/// The `stream_state` row of the whole notification stream.
pub const STREAM_ALL: &str = "all";

/// Up to which Genesys instant (UTC) the notification stream was known to be complete when the
/// service last ran (`None` on a new database). A start backfills from there.
///
/// Errors: the database's.
pub async fn stream_complete_until(
    db: &impl sea_orm::ConnectionTrait,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbErr> {
    use sea_orm::EntityTrait;
    Ok(
        entity::stream_state::Entity::find_by_id(STREAM_ALL.to_owned())
            .one(db)
            .await?
            .map(|row| row.complete_until),
    )
}

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
        /// The directory.
        path: String,
        /// Why it failed.
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
    /// The SQLite file could not be opened or created (a missing or read-only directory, a
    /// path that is not a file, permissions): a configuration problem, not an outage.
    #[error("cannot open the SQLite database {path}: {reason}")]
    SqliteOpen {
        /// The file path (a SQLite path is not a secret).
        path: String,
        /// SQLite's own message, without the driver's wrapping.
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
    /// SQLite page cache of each pooled connection, KiB (`PRAGMA cache_size = -N`; default
    /// [`SQLITE_CACHE_KIB`]). Ignored by PostgreSQL.
    pub sqlite_cache_kib: u32,
    /// Bytes of a SQLite database file each connection reads through a memory map instead of
    /// `read(2)` into its page cache (`PRAGMA mmap_size`; default [`SQLITE_MMAP_BYTES`]; 0 turns
    /// it off; SQLite caps it at 2 GiB). Ignored by PostgreSQL and `sqlite::memory:`.
    pub sqlite_mmap_bytes: u64,
    /// Rows sqlx's SQLite worker thread may queue for the task reading them before it waits
    /// (default [`SQLITE_ROW_BUFFER`]). Ignored by PostgreSQL.
    pub sqlite_row_buffer: usize,
}

/// Default SQLite page cache per connection, KiB: 8 MiB instead of SQLite's 2 MB, so a pool of
/// 8 connections may hold at most 64 MiB of cached pages. Pages read through the memory map
/// ([`SQLITE_MMAP_BYTES`]) do not use it; it mostly keeps index interior pages and the pages of
/// files larger than the map.
pub const SQLITE_CACHE_KIB: u32 = 8 * 1024;

/// Default SQLite memory map per connection, bytes: 1 GiB. The map is address space, not memory:
/// the pages touched are the kernel's page cache of the file, shared by every connection and
/// reclaimable, where `read(2)` would copy each page again into each connection's own cache.
/// It spares a system call and a 4 KiB copy per page read (BENCHMARKS.md, figure 5).
pub const SQLITE_MMAP_BYTES: u64 = 1 << 30;

/// Default rows queued by sqlx's SQLite worker thread, 128 (sqlx's default is 50): more than
/// a page of the API's largest `limit` (100, plus the row that tells whether more follow), so
/// the worker never stalls halfway through a page waiting for the reading task.
pub const SQLITE_ROW_BUFFER: usize = 128;

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            sqlite_cache_kib: SQLITE_CACHE_KIB,
            sqlite_mmap_bytes: SQLITE_MMAP_BYTES,
            sqlite_row_buffer: SQLITE_ROW_BUFFER,
        }
    }
}

/// Connects with [`DbOptions::default`] and applies every pending migration.
///
/// Accepts `sqlite://PATH` (the file and its directory are created if missing, before the pool
/// opens its connections, which never create it; WAL journal, busy timeout
/// 5 s, `synchronous=NORMAL`, 8 MiB page cache and 1 GiB memory map per connection, temporary
/// files in memory), `sqlite::memory:` (one connection, gone at exit) and
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
            create_sqlite_file(&parsed).await?;
            // Connections are kept, never closed for idleness or age: each one opened later
            // opens the path anew, and a path whose file was replaced meanwhile would be
            // opened beside the old file's `-wal` (see the persistence actor's `file_lost`).
            connect_options
                .max_connections(options.max_connections)
                .idle_timeout(None)
                .max_lifetime(None)
                .map_sqlx_sqlite_before_acquire(|conn, _meta| {
                    Box::pin(async move { Ok(sqlite_connection_reusable(conn)) })
                });
        } else {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            connect_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let busy_timeout = options.busy_timeout;
        let cache_size = format!("-{}", options.sqlite_cache_kib);
        let mmap_size = options.sqlite_mmap_bytes.to_string();
        let row_buffer = options.sqlite_row_buffer.max(1);
        connect_options.map_sqlx_sqlite_opts(move |o| {
            // The file exists (created above): a pooled connection opened after it was deleted
            // must fail, not create an empty database in its place (the API would answer
            // "no such table" and the writer's file check would see a different file).
            let o = o
                .create_if_missing(in_memory)
                .busy_timeout(busy_timeout)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .pragma("cache_size", cache_size.clone())
                .row_buffer_size(row_buffer);
            if in_memory {
                o
            } else {
                // `temp_store`: a multi-row INSERT keeps a statement journal (it may abort
                // halfway); past 64 KiB SQLite spills it to a temporary file, which the
                // writer's batches of thousands of rows did on every statement
                // (`BENCHMARKS.md`, figure 1). Every API query is paged or streamed in index
                // order, so no query builds a large temporary table in memory instead.
                o.journal_mode(SqliteJournalMode::Wal)
                    .pragma("mmap_size", mmap_size.clone())
                    .pragma("temp_store", "memory")
            }
        });
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        connect_options.max_connections(options.max_connections);
    } else {
        return Err(DbError::UnsupportedUrl { url: redacted });
    }

    let db = match Database::connect(connect_options).await {
        Ok(db) => db,
        Err(e) if url.starts_with("sqlite:") && !is_sqlite_memory(url) => {
            let path = SqliteConnectOptions::from_str(url)
                .map(|o| o.get_filename().display().to_string())
                .unwrap_or_default();
            return Err(DbError::SqliteOpen {
                path,
                reason: sqlite_open_reason(&e),
            });
        }
        Err(e) => {
            return Err(DbError::Connect {
                url: redacted.clone(),
                reason: redact_message(&driver_message(&e), url),
            });
        }
    };
    migration::Migrator::up(&db, None)
        .await
        .map_err(|e| DbError::Migrate {
            reason: redact_message(&e.to_string(), url),
        })?;
    Ok(db)
}

/// Whether an idle pooled SQLite connection may be handed out again: not if sqlx still counts
/// it inside a transaction.
///
/// Why: when a `COMMIT` fails with `SQLITE_FULL` (a full disk, the WAL cannot grow), SQLite has
/// already rolled the transaction back, so the `ROLLBACK` that follows fails too ("no
/// transaction is active") and sqlx's transaction depth stays at 1 on a connection that is in
/// autocommit mode. Reused, its next `BEGIN` would become `SAVEPOINT _sqlx_savepoint_1`, which
/// opens a real transaction whose later "commits" are only `RELEASE`s of nested savepoints:
/// every batch after the first failure would look committed (metrics, logs, credits returned)
/// while it stayed in a transaction that never commits and holds the write lock, so other
/// writers get "database is locked" and the rows are lost at stop. Reproduced on a full tmpfs
/// (`tests/it/disk.rs`). A connection that is not reused is closed, which also rolls back
/// anything it still holds; the pool opens a fresh one.
fn sqlite_connection_reusable(conn: &mut sea_orm::sqlx::sqlite::SqliteConnection) -> bool {
    use sea_orm::sqlx::Connection;
    if conn.is_in_transaction() {
        // A root event: the pool runs this inside whichever span asks for a connection (an
        // agent's, say), which has nothing to do with the connection.
        tracing::warn!(
            parent: None,
            "discarding a pooled SQLite connection left inside a transaction (after a failed \
             COMMIT or ROLLBACK); the next write uses a fresh connection"
        );
        return false;
    }
    true
}

impl DbError {
    /// Whether the error is the configuration's (the SQLite path cannot be used), so the
    /// process exits with status 2 rather than 1.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            DbError::UnsupportedUrl { .. } | DbError::CreateDir { .. } | DbError::SqliteOpen { .. }
        )
    }
}

/// The database's own message when the driver has one (`unable to open database file`),
/// without sea-orm's and sqlx's wrapping (`Connection Error: error returned from database:`),
/// else the whole error.
fn driver_message(e: &DbErr) -> String {
    let sqlx = match e {
        DbErr::Conn(sea_orm::RuntimeErr::SqlxError(x))
        | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(x))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(x)) => Some(x),
        _ => None,
    };
    match sqlx.and_then(|x| x.as_database_error()) {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Why SQLite could not open its file, in words an operator can act on.
fn sqlite_open_reason(e: &DbErr) -> String {
    let message = driver_message(e);
    // SQLite appends its source position to some messages (`… at line 46904 of [hash]`).
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    if message.contains("unable to open database file") {
        format!("{message} (is the directory writable by this user, and the path a file?)")
    } else {
        message
    }
}

/// Creates the SQLite file (an empty database) if it does not exist yet, with one connection of
/// its own: the pool's connections never create it (see [`connect_with`]).
async fn create_sqlite_file(options: &SqliteConnectOptions) -> Result<(), DbError> {
    use sea_orm::sqlx::Connection;
    let path = options.get_filename();
    if path.exists() {
        return Ok(());
    }
    let create = options.clone().create_if_missing(true).read_only(false);
    let result = match sea_orm::sqlx::sqlite::SqliteConnection::connect_with(&create).await {
        Ok(conn) => conn.close().await,
        Err(e) => Err(e),
    };
    result.map_err(|e| DbError::SqliteOpen {
        path: path.display().to_string(),
        reason: sqlite_open_reason(&DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()))),
    })
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
    // `Url::password` is percent-encoded; drivers may print either form.
    let decoded: String = url::form_urlencoded::parse(format!("p={password}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut out = message.replace(&password, "***");
    if !decoded.is_empty() {
        out = out.replace(&decoded, "***");
    }
    out
}

/// Describes a database error for logs and `/readyz`: the driver's message only (sea-orm's
/// errors carry SQL and driver text, never the connection URL).
pub fn describe(err: &DbErr) -> String {
    err.to_string()
}

/// PostgreSQL tests share one throwaway database (they empty its tables and migrate it): they
/// take this lock so they never run at the same time.
#[cfg(test)]
pub(crate) static POSTGRES_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

    /// The same write and read checks on any backend: dedupe, upsert, outcome update,
    /// newest-first order with id tie-break, millisecond UTC instants, filters.
    async fn round_trip(db: &DatabaseConnection) {
        use crate::domain::{
            AgentCurrent, Alert, AlertOutcome, DeliveryStatus, Kind, Source, Transition, UserId,
            parse_timestamp,
        };
        use sea_orm::EntityTrait;
        let ts = |s: &str| parse_timestamp(s).unwrap();
        entity::agent_status::Entity::delete_many()
            .exec(db)
            .await
            .unwrap();
        entity::agent::Entity::delete_many().exec(db).await.unwrap();
        entity::alert::Entity::delete_many().exec(db).await.unwrap();
        // A shared PostgreSQL database keeps the previous run's completeness mark.
        entity::stream_state::Entity::delete_many()
            .exec(db)
            .await
            .unwrap();

        let t = |user: &str, kind: Kind, state: &str, at: &str| Transition {
            user_id: UserId::parse(user).unwrap(),
            user_name: None,
            kind,
            state: state.into(),
            previous_state: None,
            org_presence: None,
            presence_definition_id: None,
            event_timestamp: ts(at),
            ingested_at: ts(at),
            source: Source::Bootstrap,
        };
        let agent = AgentCurrent {
            user_id: UserId::parse("u1").unwrap(),
            user_name: Some("Ann".into()),
            presence: Some("AVAILABLE".into()),
            org_presence: None,
            presence_since: Some(ts("2024-05-01T10:00:00Z")),
            routing_status: Some("OFF_QUEUE".into()),
            routing_since: None,
            active_conversations: 0,
            idle_since: Some(ts("2024-05-01T10:00:00Z")),
            updated_at: ts("2024-05-01T10:00:00Z"),
        };
        let alert = Alert {
            alert_key: "idle:u1:1".into(),
            episode_key: String::new(),
            severity: "warning".into(),
            destination: None,
            kind: crate::domain::AlertKind::Firing { repeat: 0 },
            muted: None,
            rule: "idle".into(),
            user_id: UserId::parse("u1").unwrap(),
            user_name: None,
            state: "routing IDLE".into(),
            since: ts("2024-05-01T10:00:00Z"),
            threshold: std::time::Duration::from_secs(60),
            fired_at: ts("2024-05-01T10:01:00Z"),
        };
        let batch = Batch {
            transitions: vec![
                t("u1", Kind::Routing, "IDLE", "2024-05-01T10:00:00.5Z"),
                t("u1", Kind::Routing, "IDLE", "2024-05-01T10:00:00.5Z"),
                t("u2", Kind::Routing, "IDLE", "2024-05-01T10:00:00.5Z"),
                t(
                    "u1",
                    Kind::Presence,
                    "AVAILABLE",
                    "2024-05-01T10:00:00.123456Z",
                ),
                t("u1", Kind::Routing, "OFF_QUEUE", "2024-05-01T09:00:00Z"),
            ],
            agents: vec![AgentRow {
                user_id: agent.user_id.clone(),
                current: Some(agent.clone()),
                episodes: None,
            }],
            alerts: vec![PendingAlert {
                alert,
                outcome: None,
            }],
            dead_letters: vec![],
            outcomes: vec![],
            complete_until: Some(ts("2024-05-01T10:02:00.123Z")),
            ..Batch::default()
        };
        assert_eq!(stream_complete_until(db).await.unwrap(), None);
        let summary = write_batch(db, &batch).await.unwrap();
        assert_eq!(
            stream_complete_until(db).await.unwrap(),
            Some(ts("2024-05-01T10:02:00.123Z"))
        );
        assert_eq!(
            (summary.transitions_inserted, summary.transitions_duplicate),
            (4, 1)
        );
        let second = Batch {
            transitions: vec![t("u1", Kind::Routing, "IDLE", "2024-05-01T10:00:00.5Z")],
            agents: vec![AgentRow {
                user_id: agent.user_id.clone(),
                current: Some(AgentCurrent {
                    routing_status: Some("IDLE".into()),
                    ..agent
                }),
                episodes: None,
            }],
            alerts: vec![],
            dead_letters: vec![],
            complete_until: Some(ts("2024-05-01T10:03:00Z")),
            forget: vec![],
            keep_only: None,
            outcomes: vec![AlertOutcome {
                alert_key: "idle:u1:1".into(),
                status: DeliveryStatus::NotConfigured,
                error: None,
                attempts: 0,
                finished_at: ts("2024-05-01T10:01:00Z"),
            }],
        };
        let summary = write_batch(db, &second).await.unwrap();
        assert_eq!(summary.transitions_inserted, 0);
        assert_eq!(summary.outcomes_applied, 1);
        assert_eq!(
            stream_complete_until(db).await.unwrap(),
            Some(ts("2024-05-01T10:03:00Z")),
            "the latest completeness mark replaces the previous one"
        );

        let all = history(
            db,
            &HistoryFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.total, 4);
        let order: Vec<(String, String)> = all
            .rows
            .iter()
            .map(|r| {
                (
                    r.user_id.clone(),
                    crate::domain::format_timestamp(r.event_timestamp),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                ("u2".into(), "2024-05-01T10:00:00.500Z".into()),
                ("u1".into(), "2024-05-01T10:00:00.500Z".into()),
                ("u1".into(), "2024-05-01T10:00:00.123Z".into()),
                ("u1".into(), "2024-05-01T09:00:00.000Z".into()),
            ]
        );
        let filtered = history(
            db,
            &HistoryFilter {
                user_id: Some(UserId::parse("U1").unwrap()),
                state: Some("idle".into()),
                kind: Some(Kind::Routing),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(filtered.total, 1);
        same_storage_as_sea_orm(db).await;
        let agents = agents(db).await.unwrap();
        assert_eq!(agents[0].routing_status.as_deref(), Some("IDLE"));
        let alerts = alerts(db, 10, 0).await.unwrap();
        assert_eq!(alerts.rows[0].delivery_status, "not_configured");
        probe_write(db).await.unwrap();
        probe_write(db).await.unwrap();

        // Retention: batches of one, only rows strictly older than the cutoff.
        let cutoff = ts("2024-05-01T10:00:00.200Z");
        assert_eq!(purge_history_batch(db, cutoff, 1).await.unwrap(), 1);
        assert_eq!(purge_history_batch(db, cutoff, 1).await.unwrap(), 1);
        assert_eq!(purge_history_batch(db, cutoff, 1).await.unwrap(), 0);
        let left = history(
            db,
            &HistoryFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(left.total, 2);
        assert_eq!(purge_alerts_batch(db, cutoff, 10).await.unwrap(), 0);
        assert_eq!(
            purge_alerts_batch(db, ts("2024-05-01T10:02:00Z"), 10)
                .await
                .unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn sqlite_round_trip() {
        let path = std::env::temp_dir().join(format!(
            "agent-monitor-db-rt-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let db = connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        round_trip(&db).await;
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// On SQLite, the two rows `sql` selects (one text column each: the timestamps joined)
    /// hold the same stored text; instants are compared as text there. Nothing on PostgreSQL.
    async fn same_stored_text_on_sqlite(db: &DatabaseConnection, sql: &str) {
        use sea_orm::ConnectionTrait;
        if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return;
        }
        let stored = db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                sql,
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(stored.len(), 2, "{sql}");
        assert_eq!(stored[0], stored[1], "the same stored text");
    }

    /// `write_batch` binds `agent_status` rows itself (not through an `ActiveModel`): they must
    /// be stored exactly as sea-orm stores the same values (timestamps are compared as stored
    /// text on SQLite), and found by a filter on the same bound instant.
    async fn same_storage_as_sea_orm(db: &DatabaseConnection) {
        use crate::domain::{Kind, Source, Transition, UserId, parse_timestamp};
        use entity::agent_status;
        use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
        let at = parse_timestamp("2024-05-02T08:07:06.054Z").unwrap();
        agent_status::Entity::insert(agent_status::ActiveModel {
            user_id: Set("orm".into()),
            user_name: Set(Some("Ann".into())),
            kind: Set("routing".into()),
            state: Set("IDLE".into()),
            previous_state: Set(None),
            org_presence: Set(Some("Available".into())),
            presence_definition_id: Set(Some("def-1".into())),
            event_timestamp: Set(at),
            ingested_at: Set(at),
            source: Set("stream".into()),
            ..Default::default()
        })
        .exec_without_returning(db)
        .await
        .unwrap();
        let ours = Transition {
            user_id: UserId::parse("ours").unwrap(),
            user_name: Some("Ann".into()),
            kind: Kind::Routing,
            state: "IDLE".into(),
            previous_state: None,
            org_presence: Some("Available".into()),
            presence_definition_id: Some("def-1".into()),
            event_timestamp: at,
            ingested_at: at,
            source: Source::Stream,
        };
        let batch = Batch {
            transitions: vec![ours],
            ..Default::default()
        };
        assert_eq!(
            write_batch(db, &batch).await.unwrap().transitions_inserted,
            1
        );
        let rows = agent_status::Entity::find()
            .filter(agent_status::Column::EventTimestamp.eq(at))
            .order_by_asc(agent_status::Column::UserId)
            .all(db)
            .await
            .unwrap();
        let users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(users, ["orm", "ours"], "both found by the bound instant");
        let strip = |r: &agent_status::Model| agent_status::Model {
            id: 0,
            user_id: String::new(),
            ..r.clone()
        };
        assert_eq!(strip(&rows[0]), strip(&rows[1]));
        same_stored_text_on_sqlite(
            db,
            "SELECT event_timestamp || '|' || ingested_at FROM agent_status \
                     WHERE user_id IN ('orm', 'ours') ORDER BY user_id",
        )
        .await;
        agent_status::Entity::delete_many()
            .filter(agent_status::Column::UserId.is_in(["orm", "ours"]))
            .exec(db)
            .await
            .unwrap();
        same_state_storage_as_sea_orm(db).await;
    }

    /// The same for the `agents` upserts, which `write_batch` binds itself too: the stored row
    /// (timestamps as stored text on SQLite) equals sea-orm's; a second write of a user
    /// replaces every column of its state and keeps its episode log when none is bound; an
    /// episode log alone replaces only the log, or makes a row with no state for a new user.
    async fn same_state_storage_as_sea_orm(db: &DatabaseConnection) {
        use crate::domain::{AgentCurrent, UserId, parse_timestamp};
        use entity::agent;
        use sea_orm::{
            ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
        };
        let at = parse_timestamp("2024-05-02T08:07:06.054Z").unwrap();
        let later = parse_timestamp("2024-05-02T09:00:00.001Z").unwrap();
        let log = |v: u32| format!("{{\"v\":{v}}}");
        agent::Entity::insert(agent::ActiveModel {
            user_id: Set("orm".into()),
            user_name: Set(Some("Ann".into())),
            presence: Set(Some("AVAILABLE".into())),
            org_presence: Set(Some("Available".into())),
            presence_since: Set(Some(at)),
            routing_status: Set(Some("IDLE".into())),
            routing_since: Set(Some(at)),
            active_conversations: Set(2),
            idle_since: Set(None),
            updated_at: Set(at),
            episodes: Set(Some(log(1))),
        })
        .exec_without_returning(db)
        .await
        .unwrap();
        let ours = |status: &str, when| AgentCurrent {
            user_id: UserId::parse("ours").unwrap(),
            user_name: Some("Ann".into()),
            presence: Some("AVAILABLE".into()),
            org_presence: Some("Available".into()),
            presence_since: Some(when),
            routing_status: Some(status.into()),
            routing_since: Some(when),
            active_conversations: 2,
            idle_since: None,
            updated_at: when,
        };
        let row = |user: &str, current: Option<AgentCurrent>, episodes: Option<String>| AgentRow {
            user_id: UserId::parse(user).unwrap(),
            current,
            episodes,
        };
        // First a different state with the log, then the state to compare without one.
        let other = AgentCurrent {
            user_name: Some("Bob".into()),
            presence: None,
            org_presence: None,
            active_conversations: 0,
            idle_since: Some(later),
            ..ours("INTERACTING", later)
        };
        for agents in [
            vec![row("ours", Some(other), Some(log(1)))],
            vec![row("ours", Some(ours("IDLE", at)), None)],
        ] {
            let batch = Batch {
                agents,
                ..Default::default()
            };
            assert_eq!(write_batch(db, &batch).await.unwrap().agents_upserted, 1);
        }
        let read = || async {
            agent::Entity::find()
                .filter(agent::Column::UserId.is_in(["orm", "ours", "fresh"]))
                .order_by_asc(agent::Column::UserId)
                .all(db)
                .await
                .unwrap()
        };
        let rows = read().await;
        let strip = |r: &agent::Model| agent::Model {
            user_id: String::new(),
            ..r.clone()
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(strip(&rows[0]), strip(&rows[1]));
        let found = agent::Entity::find()
            .filter(agent::Column::RoutingSince.eq(at))
            .filter(agent::Column::UserId.is_in(["orm", "ours"]))
            .count(db)
            .await
            .unwrap();
        assert_eq!(found, 2, "both found by the bound instant");
        same_stored_text_on_sqlite(
            db,
            "SELECT presence_since || '|' || routing_since || '|' || updated_at \
                     FROM agents WHERE user_id IN ('orm', 'ours') ORDER BY user_id",
        )
        .await;

        // An episode log alone: the state stays; a new user gets a row with no state.
        let batch = Batch {
            agents: vec![
                row("ours", None, Some(log(2))),
                row("fresh", None, Some(log(3))),
            ],
            ..Default::default()
        };
        assert_eq!(write_batch(db, &batch).await.unwrap().agents_upserted, 2);
        let rows = read().await;
        let by = |user: &str| rows.iter().find(|r| r.user_id == user).unwrap().clone();
        assert_eq!(
            by("ours"),
            agent::Model {
                user_id: "ours".into(),
                episodes: Some(log(2)),
                ..by("orm")
            }
        );
        let fresh = by("fresh");
        assert_eq!(
            (
                fresh.routing_status,
                fresh.presence,
                fresh.active_conversations,
                fresh.episodes
            ),
            (None, None, 0, Some(log(3)))
        );
        let logs = alerting::load_episodes(db).await.unwrap();
        assert_eq!(logs[&UserId::parse("ours").unwrap()], log(2));
        assert_eq!(logs[&UserId::parse("fresh").unwrap()], log(3));
        agent::Entity::delete_many()
            .filter(agent::Column::UserId.is_in(["orm", "ours", "fresh"]))
            .exec(db)
            .await
            .unwrap();
    }

    /// Runs the same checks on PostgreSQL when `AGENT_MONITOR_TEST_POSTGRES_URL` names a
    /// throwaway database (its tables are emptied); without it there is nothing to check.
    #[tokio::test]
    async fn postgres_round_trip_when_configured() {
        let Ok(url) = std::env::var("AGENT_MONITOR_TEST_POSTGRES_URL") else {
            return;
        };
        let _one_at_a_time = POSTGRES_TESTS.lock().await;
        let db = connect(&url).await.unwrap();
        round_trip(&db).await;
    }

    /// Every pooled SQLite connection gets the page cache and memory map of [`DbOptions`], and
    /// keeps its temporary files (statement journals) in memory.
    #[tokio::test]
    async fn sqlite_connections_get_cache_and_mmap() {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let path = std::env::temp_dir().join(format!(
            "agent-monitor-db-pragma-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let db = connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let pragma = |name: &str| {
            let db = &db;
            let sql = format!("PRAGMA {name}");
            async move {
                db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get_by_index::<i64>(0)
                    .unwrap()
            }
        };
        assert_eq!(pragma("cache_size").await, -i64::from(SQLITE_CACHE_KIB));
        assert_eq!(pragma("mmap_size").await, SQLITE_MMAP_BYTES as i64);
        assert_eq!(pragma("temp_store").await, 2, "MEMORY");
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
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
